"""Test signals of the front-end tests (a module with a unique name: every conftest.py is `conftest`)."""
import numpy as np


def tone(seconds: float, sr: int, freq: float = 220.0, amp: float = 0.3, channels: int = 1) -> np.ndarray:
    """A speech-band test signal: a tone with a few harmonics, slowly amplitude-modulated; (n,) or (n, ch)."""
    t = np.arange(int(round(seconds * sr))) / sr
    x = sum(np.sin(2 * np.pi * freq * k * t) / k for k in (1, 2, 3, 5))
    x = amp * x / 2.0 * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t))
    if channels == 1:
        return x.astype(np.float32)
    # channels differ in level and content (an extra tone per channel) so that a wrong downmix shows
    return np.stack([x * (0.5 + 0.5 * c) + 0.05 * np.sin(2 * np.pi * (440.0 + 110.0 * c) * t)
                     for c in range(channels)], axis=1).astype(np.float32)

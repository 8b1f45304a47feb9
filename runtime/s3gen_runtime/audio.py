"""Waveform post-processing shared by the runtime and the eager reference."""
from __future__ import annotations

import numpy as np

from .constants import SAMPLE_RATE


def trim_fade_curve(sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Upstream's fade-in: 20 ms of zeros, then a 20 ms raised cosine (float32, 960 samples at 24 kHz).

    It hides the spill-over of the reference clip at the start of every generated waveform."""
    n_trim = sample_rate // 50
    fade = np.zeros(2 * n_trim, dtype=np.float64)
    fade[n_trim:] = (np.cos(np.linspace(np.pi, 0.0, n_trim)) + 1.0) / 2.0
    return fade.astype(np.float32)


def apply_trim_fade(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(B, S) or (S,) -> a faded copy; shorter waveforms take the start of the curve."""
    fade = trim_fade_curve(sample_rate)
    out = np.array(wav, dtype=np.float32, copy=True)
    n = min(out.shape[-1], fade.shape[0])
    out[..., :n] *= fade[:n]
    return out

"""24 kHz -> 16 kHz exactly as upstream's `torchaudio.transforms.Resample(24000, 16000)` with its defaults.

Windowed-sinc polyphase resampler: Hann window ("sinc_interp_hann"), lowpass filter width 6, rolloff 0.99.
The rates reduce by their gcd to 3 -> 2; the kernel (2 phases x 23 taps) is computed in float64 and stored
as float32, the input is zero-padded by `width` samples on the left and `width + 3` on the right and
correlated with stride 3; the output is cut to ceil(2 L / 3) samples. It must be this algorithm, not just
a good resampler: the tokenizer's tokens and the speaker embedding move visibly with any other one.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..errors import InputError

LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99


@lru_cache(maxsize=8)
def sinc_resample_kernel(orig_sr: int = 24000, new_sr: int = 16000,
                         lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
                         rolloff: float = ROLLOFF) -> tuple[np.ndarray, int]:
    """-> (kernel (new, 2 width + orig) float32, width) for the gcd-reduced rates: torchaudio's Hann sinc kernel."""
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    # the cutoff sits below the lower Nyquist frequency (rolloff) so that the transition band aliases little
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    # tap positions in units of input samples (idx / orig), shifted by each output phase (-k / new)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None, :] / orig
    t = np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx
    t = np.clip(t * base_freq, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    scale = base_freq / orig
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = np.where(t == 0, 1.0, np.sin(t) / t)
    kernel = kernel * (window * scale)
    return kernel.astype(np.float32), width   # torchaudio stores the float64 kernel as float32


def resample_length(n: int, orig_sr: int = 24000, new_sr: int = 16000) -> int:
    """torchaudio's output length: ceil(new * n / orig) with the gcd-reduced rates."""
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    return -(-new * n // orig)


def sinc_resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """(L,) float32 at orig_sr -> float32 at new_sr, torchaudio's Resample(orig_sr, new_sr) with its defaults."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise InputError(f"resampling takes a mono waveform (1-D), got shape {x.shape}")
    if orig_sr == new_sr:
        return x.copy()
    kernel, width = sinc_resample_kernel(int(orig_sr), int(new_sr))
    g = math.gcd(int(orig_sr), int(new_sr))
    orig = int(orig_sr) // g
    n_taps = kernel.shape[1]
    padded = np.concatenate([np.zeros(width, np.float32), x, np.zeros(width + orig, np.float32)])
    n_pos = (padded.shape[0] - n_taps) // orig + 1          # conv1d positions with stride `orig`
    # frames[i] = padded[i * orig : i * orig + n_taps]; each output phase is one dot product per frame
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_pos, n_taps), strides=(orig * padded.strides[0], padded.strides[0]))
    # float32 accumulation like torch's conv1d: on the golden files this matches torch bit for bit, where
    # float64 accumulation lands up to 1.8e-7 away (torch's own float32 rounding); both are far inside 1e-6
    out = frames @ kernel.T                                  # (n_pos, new) float32
    return np.ascontiguousarray(out.reshape(-1)[:resample_length(x.shape[0], orig_sr, new_sr)])


def resample_24k_to_16k(wav24: np.ndarray) -> np.ndarray:
    """24 kHz float32 waveform -> 16 kHz float32, ceil(2 L / 3) samples, as upstream's embed_ref resampler."""
    x = np.asarray(wav24, dtype=np.float32)
    if x.ndim != 1 or x.shape[0] == 0:
        raise InputError(f"resample_24k_to_16k takes a non-empty mono waveform, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("audio has NaN/Inf samples; audio must be finite")
    return sinc_resample(x, 24000, 16000)

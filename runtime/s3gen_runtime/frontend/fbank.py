"""The speaker encoder's input: Kaldi fbank as `torchaudio.compliance.kaldi.fbank(wav16, num_mel_bins=80)`
with every other option at its default, minus its mean over frames (upstream CAMPPlus `extract_feature`).

Defaults that matter: 16 kHz, 25 ms frames (400 samples) every 10 ms (160), snip_edges (only whole frames:
1 + (L - 400) // 160), dither 0, per-frame DC removal, pre-emphasis 0.97 (the first sample against
itself), Povey window (symmetric Hann ** 0.85), zero-padded to a 512-point FFT, power spectrum, 80
triangular bins on Kaldi's mel scale (1127 ln(1 + f / 700)) from 20 Hz to Nyquist, log(max(x, float32 eps)).
torchaudio does NOT scale the waveform by 32768 (Kaldi's own tools read int16 values); the log energies
are therefore offset by a constant, which the mean subtraction removes anyway.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..errors import InputError

SAMPLE_RATE = 16000
FRAME_LENGTH = 400        # 25 ms
FRAME_SHIFT = 160         # 10 ms
FFT_SIZE = 512            # next power of two above 400
NUM_MEL_BINS = 80
LOW_FREQ = 20.0
PREEMPHASIS = 0.97
POVEY_POWER = 0.85
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def kaldi_mel(freq):
    """Kaldi's mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log(1.0 + freq / 700.0)


@lru_cache(maxsize=4)
def kaldi_mel_banks(num_bins: int = NUM_MEL_BINS, fft_size: int = FFT_SIZE, sample_rate: float = SAMPLE_RATE,
                    low_freq: float = LOW_FREQ, high_freq: float = 0.0) -> np.ndarray:
    """(num_bins, fft_size // 2 + 1) float32: torchaudio's get_mel_banks (no VTLN) with the Nyquist column 0."""
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist      # Kaldi: a non-positive high_freq is an offset from Nyquist
    # band edges in mel: Python floats (double), like torchaudio's mel_scale_scalar
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high_freq / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    # torchaudio builds the triangles from float32 tensors; rounding at the same points keeps the bins
    # identical to its table (the differences would be ~1e-7 relative, but they cost nothing to avoid)
    b = np.arange(num_bins, dtype=np.float32)[:, None]
    left = b * np.float32(delta) + np.float32(mel_low)
    center = (b + np.float32(1.0)) * np.float32(delta) + np.float32(mel_low)
    right = (b + np.float32(2.0)) * np.float32(delta) + np.float32(mel_low)
    freqs = np.float32(sample_rate / fft_size) * np.arange(fft_size // 2, dtype=np.float32)
    mel = (np.float32(1127.0) * np.log(np.float32(1.0) + freqs / np.float32(700.0)))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.maximum(np.float32(0.0), np.minimum(up, down))
    # the Nyquist bin gets no weight (torchaudio pads a zero column)
    banks = np.concatenate([banks, np.zeros((num_bins, 1), np.float32)], axis=1)
    banks.setflags(write=False)
    return banks


@lru_cache(maxsize=2)
def povey_window(n: int = FRAME_LENGTH) -> np.ndarray:
    """Kaldi's Povey window: the symmetric Hann window to the power 0.85 (zero at both ends)."""
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / (n - 1))
    return hann ** POVEY_POWER


def num_fbank_frames(n_samples: int) -> int:
    """snip_edges framing: only whole 400-sample frames, one every 160 samples (0 if shorter than a frame)."""
    return 0 if n_samples < FRAME_LENGTH else 1 + (n_samples - FRAME_LENGTH) // FRAME_SHIFT


def kaldi_fbank(wav16: np.ndarray, num_mel_bins: int = NUM_MEL_BINS) -> np.ndarray:
    """16 kHz mono waveform -> (frames, num_mel_bins) float32 log-mel fbank, torchaudio kaldi.fbank defaults."""
    return _log_fbank64(wav16, num_mel_bins).astype(np.float32)


def _log_fbank64(wav16: np.ndarray, num_mel_bins: int = NUM_MEL_BINS) -> np.ndarray:
    x = np.asarray(wav16)
    if x.ndim != 1:
        raise InputError(f"fbank takes a mono waveform (1-D), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("fbank: audio has NaN/Inf samples; audio must be finite")
    m = num_fbank_frames(x.shape[0])
    if m == 0:
        raise InputError(f"fbank needs at least {FRAME_LENGTH} samples at 16 kHz (one 25 ms frame), "
                         f"got {x.shape[0]}")
    # float64 from the float32 samples on: closer to the exact values than torch's float32 arithmetic,
    # which only matters in near-silent frames (see the tests' measurements)
    x = x.astype(np.float32).astype(np.float64)
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(m, FRAME_LENGTH), strides=(FRAME_SHIFT * x.strides[0], x.strides[0]))
    frames = frames - frames.mean(axis=1, keepdims=True)                 # remove each frame's DC offset
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)   # x[max(0, j - 1)]
    frames = (frames - PREEMPHASIS * previous) * povey_window(FRAME_LENGTH)
    spec = np.fft.rfft(frames, n=FFT_SIZE, axis=-1)                     # zero-padded to 512
    power = spec.real ** 2 + spec.imag ** 2
    energies = power @ kaldi_mel_banks(num_mel_bins).astype(np.float64).T
    return np.log(np.maximum(energies, FLOAT32_EPS))


def speaker_fbank(wav16: np.ndarray) -> np.ndarray:
    """16 kHz waveform -> (frames, 80) float32 mean-subtracted Kaldi fbank: CAMPPlus's input."""
    feats = _log_fbank64(wav16)     # float64 up to the mean subtraction, one rounding at the end
    return (feats - feats.mean(axis=0, keepdims=True)).astype(np.float32)

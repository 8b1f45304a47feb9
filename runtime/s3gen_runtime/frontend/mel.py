"""The two log-mel front ends of voice preparation, numpy ports of upstream's torch code.

(a) S3Gen's prompt mel at 24 kHz (`s3gen.utils.mel.mel_spectrogram`, Matcha-TTS/CosyVoice settings):
    the voice's `prompt_feat`, frames first, F = L24 // 480.
(b) S3TokenizerV2's 128-bin log-mel at 16 kHz (`S3Tokenizer.log_mel_spectrogram`): (128, T), T = L16 // 160.
Both use librosa's Slaney mel basis, ported below. The spectra are computed in float64 and rounded once:
the golden arrays come from torch's float32 FFTs, and float64 is the closer stand-in for the exact values
(measured errors are in the tests).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import InputError

# (a) prompt mel
PROMPT_N_FFT = 1920
PROMPT_HOP = 480
PROMPT_PAD = (PROMPT_N_FFT - PROMPT_HOP) // 2   # 720 each side, reflect; no centring
PROMPT_MELS = 80
PROMPT_FMAX = 8000.0
# (b) tokenizer log-mel
TOKENIZER_N_FFT = 400
TOKENIZER_HOP = 160
TOKENIZER_MELS = 128


# Slaney's mel scale (librosa htk=False): linear below 1 kHz (200/3 Hz per mel), logarithmic above
SLANEY_HZ_PER_MEL = 200.0 / 3
SLANEY_MIN_LOG_HZ = 1000.0
SLANEY_MIN_LOG_MEL = SLANEY_MIN_LOG_HZ / SLANEY_HZ_PER_MEL
SLANEY_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    """Hz -> Slaney mels."""
    hz = np.asarray(hz, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_part = SLANEY_MIN_LOG_MEL + np.log(hz / SLANEY_MIN_LOG_HZ) / SLANEY_LOGSTEP
    return np.where(hz >= SLANEY_MIN_LOG_HZ, log_part, hz / SLANEY_HZ_PER_MEL)


def mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    """Inverse of hz_to_mel_slaney."""
    mels = np.asarray(mels, dtype=np.float64)
    return np.where(mels >= SLANEY_MIN_LOG_MEL,
                    SLANEY_MIN_LOG_HZ * np.exp(SLANEY_LOGSTEP * (mels - SLANEY_MIN_LOG_MEL)), SLANEY_HZ_PER_MEL * mels)


@lru_cache(maxsize=8)
def slaney_mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32: librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax) with Slaney norm."""
    fmax = float(sr) / 2 if fmax is None else float(fmax)
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    # n_mels + 2 band edges equally spaced on the mel scale; triangle i spans edges i .. i + 2
    mel_f = mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    # librosa stores the triangles in float32 before scaling them; round at the same point
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    # Slaney norm: each triangle has unit area in Hz (2 / bandwidth)
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    weights = (weights * enorm[:, None]).astype(np.float32)
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=8)
def hann_periodic(n: int) -> np.ndarray:
    """torch.hann_window(n) (periodic) in float64."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _frames(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """(n_frames, n_fft) strided view of x: the frames torch.stft(center=False) transforms."""
    n = 1 + (x.shape[0] - n_fft) // hop
    return np.lib.stride_tricks.as_strided(x, shape=(n, n_fft), strides=(hop * x.strides[0], x.strides[0]))


def _mono(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise InputError(f"{what} takes a mono waveform (1-D), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{what}: audio has NaN/Inf samples; audio must be finite")
    # upstream casts to float32 first; float64 from there on
    return x.astype(np.float32).astype(np.float64)


def prompt_mel(wav24: np.ndarray) -> np.ndarray:
    """24 kHz waveform -> (L24 // 480, 80) float32 log-mel: the voice's prompt_feat, as upstream's embed_ref."""
    x = _mono(wav24, "prompt_mel")
    if x.shape[0] <= PROMPT_PAD or x.shape[0] < PROMPT_HOP:
        raise InputError(f"prompt_mel needs more than {PROMPT_PAD} samples at 24 kHz (reflect padding), "
                         f"got {x.shape[0]}")
    padded = np.pad(x, (PROMPT_PAD, PROMPT_PAD), mode="reflect")
    spec = np.fft.rfft(_frames(padded, PROMPT_N_FFT, PROMPT_HOP) * hann_periodic(PROMPT_N_FFT), axis=-1)
    # upstream's magnitude keeps a 1e-9 inside the square root (so silence gives 3.2e-5, not 0)
    mag = np.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)
    basis = slaney_mel_basis(24000, PROMPT_N_FFT, PROMPT_MELS, 0.0, PROMPT_FMAX).astype(np.float64)
    mel = mag @ basis.T                                   # (F, 80)
    return np.log(np.maximum(mel, 1e-5)).astype(np.float32)


def tokenizer_log_mel(wav16: np.ndarray) -> np.ndarray:
    """16 kHz waveform -> (128, L16 // 160) float32: S3TokenizerV2's normalised log10-mel input."""
    x = _mono(wav16, "tokenizer_log_mel")
    half = TOKENIZER_N_FFT // 2
    if x.shape[0] <= half or x.shape[0] < TOKENIZER_HOP:
        raise InputError(f"tokenizer_log_mel needs more than {half} samples at 16 kHz (reflect padding), "
                         f"got {x.shape[0]}")
    padded = np.pad(x, (half, half), mode="reflect")       # torch.stft(center=True, pad_mode='reflect')
    frames = _frames(padded, TOKENIZER_N_FFT, TOKENIZER_HOP)[:-1]   # upstream drops the last frame
    spec = np.fft.rfft(frames * hann_periodic(TOKENIZER_N_FFT), axis=-1)
    power = spec.real ** 2 + spec.imag ** 2
    basis = slaney_mel_basis(16000, TOKENIZER_N_FFT, TOKENIZER_MELS).astype(np.float64)
    log_spec = np.log10(np.maximum(basis @ power.T, 1e-10))   # (128, T)
    # dynamic range: at most 8 decades below the clip's loudest bin, then scaled to about [-1, 1]
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)

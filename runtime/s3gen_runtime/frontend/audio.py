"""Reading a reference audio file and bringing it to 24 kHz exactly as upstream's `librosa.load(path, sr=24000)`.

librosa 0.11 reads with soundfile as float32 (16-bit PCM is int / 32768, float WAV is taken as stored),
averages the channels (a float32 mean), and unless the file is at 24 kHz resamples with python-soxr at
quality 'HQ' and then zero-pads or cuts the result to ceil(n * 24000 / sr) samples. We call the same two
libraries the same way, so the samples are bit-identical. No stdlib `wave` fallback: soundfile is in the
`voice` extra, reads more formats than `wave`, and a second reader could disagree with librosa.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ._deps import require
from .loudness import apply_gain, loudness_gain

SR_24K = 24000                     # S3Gen's rate: the prompt mel and the loudness normalisation work here
SR_16K = 16000                     # the tokenizer's and the speaker encoder's rate
DEC_COND_LEN = 10 * SR_24K         # upstream crops the 24 kHz reference to 10 s before embed_ref
# Shortest 24 kHz clip every front end can turn into a voice, and why (L24 samples, L16 = ceil(2 L24 / 3)):
#  - prompt mel: reflect padding of 720 needs L24 > 720; F = L24 // 480 >= 2 so that the alignment cut
#    floor(F / 2) keeps at least one token;
#  - tokenizer: T = L16 // 160 >= 4 mel frames gives ceil(T / 4) >= 1 token;
#  - fbank: >= 400 samples at 16 kHz for one frame, and CAMPPlus needs >= 3 frames: its stride-2 TDNN
#    (kernel 5, padding 2) must leave >= 2 positions, else the unbiased std of its statistics pooling is NaN.
#    3 frames = 400 + 2 * 160 = 720 samples at 16 kHz, i.e. L24 >= 1079 (ceil(2 * 1079 / 3) = 720).
# The last one is the binding limit: 1079 samples, 0.045 s. (Such a clip still makes a poor voice.)
MIN_CLIP_SAMPLES_24K = 1079
MIN_CLIP_SECONDS = MIN_CLIP_SAMPLES_24K / SR_24K
TURBO_MIN_SECONDS = 5.0            # upstream's Turbo asserts len / sr > 5 s on the full 24 kHz clip
# A clip whose peak is below -80 dBFS (about 3 LSB of 16-bit PCM) holds no speech: every front end would
# see only quantisation noise and the voice would be garbage, so it is refused. A clip that is merely quiet
# (RMS below -60 dBFS) is used, with a warning, unless loudness normalisation will bring it up anyway.
SILENCE_PEAK = 1e-4
QUIET_RMS_DBFS = -60.0


class QuietAudioWarning(UserWarning):
    """The reference clip is very quiet: the voice may be poor."""


@dataclass(frozen=True)
class AudioInfo:
    """What the input file is: for reports and for checks against upstream's recorded input."""
    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str = ""
    subtype: str = ""

    @property
    def seconds(self) -> float:
        """Duration of the file in seconds."""
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class ReferenceInfo:
    """How a reference clip was turned into the 24 kHz waveform the voice is made from."""
    audio: AudioInfo
    full_len_24k: int              # length of librosa.load(path, sr=24000) before the crop
    used_len_24k: int              # after the 10 s crop: what embed_ref gets
    resampled: bool
    cropped: bool
    loudness_lufs: float | None = None   # measured before normalisation (None: not normalised)
    gain_db: float | None = None         # applied gain (None: none applied)

    @property
    def seconds_used(self) -> float:
        """Seconds of audio the voice is made from (at most 10)."""
        return self.used_len_24k / SR_24K


def _soundfile():
    return require("soundfile", "reading audio files")


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int, AudioInfo]:
    """Decode an audio file -> (float32 mono samples, sample rate, AudioInfo), as librosa.load(sr=None) does."""
    sf = _soundfile()
    p = Path(path)
    if not p.is_file():
        raise InputError(f"audio file {str(p)!r} not found (or not a file)")
    if p.stat().st_size == 0:
        raise InputError(f"audio file {str(p)!r} is empty (0 bytes)")
    try:
        with sf.SoundFile(str(p)) as f:
            info = AudioInfo(str(p), int(f.samplerate), int(f.channels), int(f.frames), f.format, f.subtype)
            # float32 like librosa (its default dtype): libsndfile scales integer PCM by 1 / 2^(bits-1)
            data = f.read(frames=-1, dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError) as e:   # LibsndfileError is a RuntimeError
        raise InputError(f"cannot decode {str(p)!r} as audio (unsupported or corrupt: "
                         f"{' '.join(str(e).split())})") from e
    if data.shape[0] == 0:
        raise InputError(f"audio file {str(p)!r} holds no samples")
    if info.sample_rate <= 0:
        raise InputError(f"audio file {str(p)!r} has an invalid sample rate {info.sample_rate}")
    return to_mono(data), info.sample_rate, info


def to_mono(frames_by_channel: np.ndarray) -> np.ndarray:
    """(n, channels) float32 -> (n,) float32: the channel mean computed as librosa.to_mono computes it."""
    x = np.asarray(frames_by_channel, dtype=np.float32)
    if x.ndim == 1:
        return x
    if x.shape[1] == 1:
        return np.ascontiguousarray(x[:, 0])
    # librosa holds the transposed view (channels, n) and takes np.mean over axis 0; doing the same
    # reduction on the same memory layout gives the same float32 rounding.
    return np.ascontiguousarray(np.mean(x.T, axis=0))


def check_finite(x: np.ndarray, what: str) -> None:
    """Refuse NaN/Inf samples (librosa's resampler refuses them too)."""
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise InputError(f"{what} has {bad} NaN/Inf sample(s); audio must be finite")


def resampled_length(n: int, orig_sr: int, target_sr: int = SR_24K) -> int:
    """librosa's output length: ceil(n * ratio) with the ratio as a float (as librosa computes it, not exact)."""
    ratio = float(target_sr) / orig_sr
    return int(np.ceil(n * ratio))


def load_24k(samples: np.ndarray, sr: int) -> np.ndarray:
    """Mono float32 samples at `sr` -> float32 at 24 kHz, full length, as librosa.resample(res_type='soxr_hq')."""
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise InputError(f"load_24k takes mono samples (1-D), got shape {x.shape}")
    if x.size == 0:
        raise InputError("audio has no samples")
    check_finite(x, "audio")
    if int(sr) != sr or sr <= 0:
        raise InputError(f"sample rate must be a positive integer, got {sr}")
    if sr == SR_24K:
        return x
    soxr = require("soxr", "resampling audio to 24 kHz")
    y = np.asarray(soxr.resample(x, int(sr), SR_24K, quality="soxr_hq"), dtype=np.float32)
    n_out = resampled_length(x.shape[0], int(sr))
    # librosa.util.fix_length: zero-pad at the end or cut to exactly n_out samples
    if y.shape[0] >= n_out:
        return np.ascontiguousarray(y[:n_out])
    return np.concatenate([y, np.zeros(n_out - y.shape[0], dtype=np.float32)])


def crop_24k(wav24: np.ndarray) -> np.ndarray:
    """Keep the first 10 s (240000 samples) of a 24 kHz waveform, as upstream's DEC_COND_LEN crop."""
    return np.ascontiguousarray(np.asarray(wav24, dtype=np.float32)[:DEC_COND_LEN])


def check_length_24k(wav24: np.ndarray, min_samples: int = MIN_CLIP_SAMPLES_24K) -> None:
    """Refuse a 24 kHz clip too short for the front ends (or for the caller's stricter limit)."""
    n = int(np.asarray(wav24).shape[-1])
    if n < min_samples:
        raise InputError(f"reference audio is too short: {n / SR_24K:.3f} s ({n} samples at 24 kHz); "
                         f"the minimum is {min_samples / SR_24K:.3f} s ({min_samples} samples)")


def check_not_silent(wav: np.ndarray, *, warn_if_quiet: bool = True) -> None:
    """Refuse a silent clip (peak < -80 dBFS); warn about a quiet one (RMS < -60 dBFS)."""
    x = np.asarray(wav, dtype=np.float64)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak < SILENCE_PEAK:
        raise InputError(f"reference audio is silent: peak {peak:.2e} is below {SILENCE_PEAK:.0e} (-80 dBFS); "
                         "a voice needs audible speech")
    rms_db = 10.0 * math.log10(max(float(np.mean(x * x)), 1e-30))
    if warn_if_quiet and rms_db < QUIET_RMS_DBFS:
        warnings.warn(f"reference audio is very quiet (RMS {rms_db:.1f} dBFS < {QUIET_RMS_DBFS:.0f} dBFS); "
                      "the voice may be poor", QuietAudioWarning, stacklevel=2)


def load_reference(path: str | os.PathLike, *, target_lufs: float | None = None,
                   min_seconds: float | None = None) -> tuple[np.ndarray, ReferenceInfo]:
    """Audio file -> (24 kHz float32 clip, at most 10 s, ReferenceInfo): upstream's load, [normalise,] crop.

    target_lufs: Turbo normalises the full 24 kHz clip to -27 LUFS before the crop; None (the standard
    model) leaves the level alone. min_seconds: Turbo refuses clips of 5 s or less (its assertion)."""
    samples, sr, audio = read_audio(path)
    return reference_from_samples(samples, sr, audio, target_lufs=target_lufs, min_seconds=min_seconds)


def reference_from_samples(samples, sr: int, audio: AudioInfo | None = None, *, target_lufs: float | None = None,
                           min_seconds: float | None = None) -> tuple[np.ndarray, ReferenceInfo]:
    """Samples (n,) or (n, channels) at `sr` -> what load_reference gives for a file holding them."""
    x = np.asarray(samples)
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"audio samples must be floating point in [-1, 1], got dtype {x.dtype}")
    if x.ndim not in (1, 2):
        raise InputError(f"audio samples must have shape (frames,) or (frames, channels), got {x.shape}")
    if audio is None:
        channels = 1 if x.ndim == 1 else int(x.shape[1])
        audio = AudioInfo("<array>", int(sr) if int(sr) == sr else 0, channels, int(x.shape[0]))
    wav24 = load_24k(to_mono(x), sr)
    full_len = int(wav24.shape[0])
    if min_seconds is not None and not full_len / SR_24K > min_seconds:
        raise InputError(f"reference audio is too short: {full_len / SR_24K:.3f} s; "
                         f"this model needs more than {min_seconds:g} s")
    check_length_24k(wav24)
    check_not_silent(crop_24k(wav24), warn_if_quiet=target_lufs is None)
    loudness = gain_db = None
    if target_lufs is not None:
        loudness, gain = loudness_gain(wav24, SR_24K, target_lufs)
        if gain is not None:
            wav24 = apply_gain(wav24, gain)
            gain_db = 20.0 * math.log10(gain)
    used = crop_24k(wav24)
    info = ReferenceInfo(audio, full_len, int(used.shape[0]), resampled=int(sr) != SR_24K,
                         cropped=full_len > DEC_COND_LEN, loudness_lufs=loudness, gain_db=gain_db)
    return used, info

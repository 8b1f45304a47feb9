"""Turbo's loudness normalisation of the reference clip (upstream `ChatterboxTurboTTS.norm_loudness`).

Upstream: gain = 10 ** ((target - pyloudnorm.Meter(sr).integrated_loudness(wav)) / 20), applied to the full
24 kHz clip (before the 10 s crop) only when finite and > 0; any pyloudnorm error skips the step.

We call pyloudnorm itself (it is in the `voice` extra) rather than port BS.1770: the K-weighting needs an
IIR filter (scipy.signal.lfilter; numpy has none, and a per-sample Python loop is slow on long clips), and
calling the library upstream calls makes the measured loudness identical by construction, including its
block count rounding and gating quirks, where a port could only approximate them.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ._deps import require

TURBO_TARGET_LUFS = -27.0   # upstream's default target


def integrated_loudness(wav: np.ndarray, sr: int) -> float:
    """BS.1770 integrated loudness in LUFS (pyloudnorm, K-weighting, 400 ms blocks); -inf for silence."""
    pyln = require("pyloudnorm", "loudness normalisation")
    x = np.asarray(wav)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):   # silence: log10(0) -> -inf, by design
        return float(pyln.Meter(int(sr)).integrated_loudness(x))


def loudness_gain(wav: np.ndarray, sr: int, target_lufs: float = TURBO_TARGET_LUFS
                  ) -> tuple[float | None, float | None]:
    """-> (measured LUFS or None, linear gain or None): None where upstream would leave the clip alone."""
    if not np.all(np.isfinite(wav)):
        raise InputError("audio has NaN/Inf samples; audio must be finite")
    try:
        loudness = integrated_loudness(wav, sr)
    except ValueError:
        # pyloudnorm refuses clips shorter than one 400 ms block; upstream catches that and skips the step
        return None, None
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    # silence measures -inf LUFS -> an infinite gain: upstream skips it, and so do we (no NaN/Inf output)
    if not (math.isfinite(gain) and gain > 0.0):
        return (loudness if math.isfinite(loudness) else None), None
    return loudness, gain


def normalize_loudness(wav24: np.ndarray, sr: int = 24000, target_lufs: float = TURBO_TARGET_LUFS) -> np.ndarray:
    """Scale a clip to `target_lufs` (upstream Turbo's norm_loudness); unchanged when the gain is not finite."""
    x = np.asarray(wav24, dtype=np.float32)
    _, gain = loudness_gain(x, sr, target_lufs)
    return x.copy() if gain is None else apply_gain(x, gain)


def apply_gain(wav: np.ndarray, gain: float) -> np.ndarray:
    """wav * gain as float32, the product taken in float64 and rounded once."""
    # upstream multiplies the float32 clip by a numpy float64 gain: float32 arithmetic under numpy < 2 (the
    # gain rounded to float32 first), float64 under numpy >= 2 (then embed_ref casts to float32). The two
    # agree to 1 ulp; one rounding of the float64 product is the nearer to the exact value.
    return (np.asarray(wav, dtype=np.float32).astype(np.float64) * float(gain)).astype(np.float32)

"""Error metrics: one definition for every side.

In the runtime (numpy only): the int8 self-test, export validation and the benchmarks share it.
"""
from __future__ import annotations

import math

import numpy as np

MAX_SNR_DB = 200.0   # identical outputs: a finite cap keeps manifests and reports valid JSON


def snr_db(got, ref) -> float:
    """10 log10(|ref|^2 / |got - ref|^2) in float64, clipped to +-MAX_SNR_DB (identical -> MAX_SNR_DB)."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    noise = float(np.sum((got - ref) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return MAX_SNR_DB
    if signal == 0.0:
        return -MAX_SNR_DB
    return float(np.clip(10.0 * np.log10(signal / noise), -MAX_SNR_DB, MAX_SNR_DB))


def rel_rms(got, ref) -> float:
    """|got - ref| / |ref| (Frobenius), float64."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    denom = float(np.sqrt(np.sum(ref ** 2)))
    return float(np.sqrt(np.sum((got - ref) ** 2)) / denom) if denom > 0 else float("inf")


def max_abs(got, ref) -> float:
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - np.asarray(ref, dtype=np.float64))))


def db_from_rel(rel: float) -> float:
    """The SNR that a relative RMS error corresponds to (capped like snr_db)."""
    if rel <= 0.0:
        return MAX_SNR_DB
    return float(min(MAX_SNR_DB, -20.0 * math.log10(rel)))

"""The sine source's phase: float32 only (TensorRT has no float64), yet closer to exact than upstream."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from s3gen_export.model.vocoder import SineGen

SPF, SR, HARMONICS = 480, 24000, 9


def exact_cycles(f0: np.ndarray) -> np.ndarray:
    """Upstream's phase in float64 throughout: cumsum over samples of the float32 per-sample step."""
    step = (f0[None, :].astype(np.float32) * np.arange(1, HARMONICS + 1, dtype=np.float32)[:, None]) / np.float32(SR)
    cycles = np.cumsum(np.repeat(step.astype(np.float64), SPF, axis=1), axis=1)
    return cycles - np.floor(cycles)


@pytest.mark.parametrize("kind", ["steady", "random"])
def test_sine_phase_matches_float64_over_long_inputs(kind):
    frames = 2000   # 40 s: upstream's own float32 rounding of the phase is ~2e-3 cycles here
    rng = np.random.default_rng(1)
    f0 = np.full(frames, 220.0) if kind == "steady" else rng.uniform(80.0, 400.0, frames)
    gen = SineGen(SR, HARMONICS - 1, sine_amp=1.0, noise_std=0.0, voiced_threshold=10.0, samples_per_frame=SPF)
    with torch.no_grad():
        sine = gen(torch.from_numpy(f0.astype(np.float32)).view(1, 1, -1), torch.zeros(1, HARMONICS, 1),
                   torch.zeros(1, HARMONICS, frames * SPF))[0].double().numpy()
    want = np.sin(2 * math.pi * exact_cycles(f0))
    # |d sin| <= 2 pi |d cycles|: 2e-4 allows 3e-5 cycles (measured: < 1e-5)
    assert float(np.abs(sine - want).max()) < 2e-4


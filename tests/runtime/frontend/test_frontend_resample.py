"""24 kHz -> 16 kHz: torchaudio's Hann-windowed sinc resampler, against the golden files and the formula."""
import math

import numpy as np
import pytest

from s3gen_runtime.errors import InputError
from s3gen_runtime.frontend import resample_24k_to_16k
from s3gen_runtime.frontend.resample import resample_length, sinc_resample_kernel


def test_golden_stage_wav16(voice_golden):
    g, _ = voice_golden
    wav16 = resample_24k_to_16k(g["wav24"][0])
    assert wav16.dtype == np.float32 and wav16.shape == g["wav16"][0].shape
    assert wav16.shape[0] == math.ceil(2 * g["wav24"].shape[1] / 3)
    assert np.abs(wav16 - g["wav16"][0]).max() <= 1e-6


def test_kernel_shape_and_dc_gain():
    kernel, width = sinc_resample_kernel(24000, 16000)
    # gcd-reduced 3 -> 2: width ceil(6 * 3 / (2 * 0.99)) = 10, 2 phases of 2 * 10 + 3 taps
    assert width == 10 and kernel.shape == (2, 23) and kernel.dtype == np.float32
    # each phase passes DC with a gain near 1 (rolloff and windowing make it not exactly 1)
    assert np.allclose(kernel.sum(axis=1), 1.0, atol=2e-2)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 100, 101, 102, 240000])
def test_output_length_is_ceil_two_thirds(n):
    assert resample_length(n) == math.ceil(2 * n / 3)
    assert resample_24k_to_16k(np.ones(n, np.float32)).shape == (math.ceil(2 * n / 3),)


def direct_windowed_sinc(x: np.ndarray) -> np.ndarray:
    """The interpolation formula evaluated point by point in float64, not through the kernel table:
    y[j] = sum_i x[i] * (b / 3) * sinc(pi b (i / 3 - j / 2)) * cos^2(pi b (i / 3 - j / 2) / 12), b = 1.98,
    with the argument b (i / 3 - j / 2) clamped to [-6, 6] (the window is zero there)."""
    b, lpw = 2 * 0.99, 6
    n_out = math.ceil(2 * len(x) / 3)
    y = np.zeros(n_out)
    for j in range(n_out):
        for i in range(len(x)):
            t = min(max(b * (i / 3 - j / 2), -lpw), lpw)
            s = 1.0 if t == 0 else math.sin(math.pi * t) / (math.pi * t)
            y[j] += x[i] * b / 3 * s * math.cos(math.pi * t / lpw / 2) ** 2
    return y


def test_matches_the_interpolation_formula():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 97).astype(np.float32)
    ours = resample_24k_to_16k(x)
    assert np.abs(ours - direct_windowed_sinc(x.astype(np.float64))).max() <= 1e-6


def test_passes_a_band_limited_tone():
    t = np.arange(24000) / 24000
    y = resample_24k_to_16k(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    ref = np.sin(2 * np.pi * 1000 * np.arange(len(y)) / 16000)
    # away from the zero-padded edges, a 1 kHz tone comes through with the passband ripple only
    assert np.abs(y[200:-200] - ref[200:-200]).max() < 5e-3


@pytest.mark.parametrize("bad", [np.array([0.0, np.nan, 0.0], np.float32), np.zeros((2, 10), np.float32),
                                 np.zeros(0, np.float32)])
def test_refuses_bad_input(bad):
    with pytest.raises(InputError):
        resample_24k_to_16k(bad)

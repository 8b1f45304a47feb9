"""Turbo's loudness normalisation to -27 LUFS (pyloudnorm, as upstream's norm_loudness)."""
import math
import warnings

import numpy as np
import pytest

from s3gen_runtime.errors import InputError
from s3gen_runtime.frontend import integrated_loudness, loudness_gain, normalize_loudness

from frontend_signals import tone

import pyloudnorm as pyln  # noqa: E402  (the voice extra: make setup installs it)


def upstream_norm_loudness(wav, sr, target_lufs=-27):
    """upstream ChatterboxTurboTTS.norm_loudness, restated (pyloudnorm is the measuring instrument)."""
    try:
        loudness = pyln.Meter(sr).integrated_loudness(wav)
        gain_linear = 10.0 ** ((target_lufs - loudness) / 20.0)
        if math.isfinite(gain_linear) and gain_linear > 0.0:
            wav = wav * gain_linear
    except Exception:
        pass
    return wav


def test_full_scale_1khz_sine_reads_minus_3_lufs():
    """BS.1770's calibration point: a 0 dBFS 997 Hz sine in one channel measures -3.01 LKFS."""
    t = np.arange(5 * 48000) / 48000
    assert abs(integrated_loudness(np.sin(2 * np.pi * 997 * t), 48000) - (-3.01)) < 0.05


@pytest.mark.parametrize("amp,seconds", [(0.5, 6.0), (0.02, 7.5), (0.9, 12.0)])
def test_reaches_the_target_and_matches_upstream(amp, seconds):
    x = tone(seconds, 24000, amp=amp)
    y = normalize_loudness(x, 24000, -27.0)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert abs(integrated_loudness(y, 24000) - (-27.0)) < 1e-3
    ref = np.asarray(upstream_norm_loudness(x, 24000), dtype=np.float32)
    assert np.abs(y - ref).max() <= 1e-6 * max(1.0, float(np.abs(ref).max()))


def test_gain_is_the_level_difference():
    x = tone(6.0, 24000, amp=0.1)
    loudness, gain = loudness_gain(x, 24000, -27.0)
    assert math.isclose(gain, 10 ** ((-27.0 - loudness) / 20), rel_tol=1e-12)
    # loudness is exactly scale-covariant: 6.02 dB up for twice the amplitude
    assert abs(integrated_loudness(2 * x, 24000) - loudness - 20 * math.log10(2)) < 1e-6


def test_silence_gives_no_gain_and_no_nan():
    x = np.zeros(6 * 24000, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no divide-by-zero RuntimeWarning leaks out either
        assert loudness_gain(x, 24000) == (None, None)
        y = normalize_loudness(x, 24000)
    assert np.all(y == 0) and np.all(np.isfinite(y))


def test_clip_shorter_than_one_block_is_left_alone():
    # pyloudnorm refuses < 400 ms; upstream catches that and skips the step
    x = tone(0.3, 24000, amp=0.1)
    assert loudness_gain(x, 24000) == (None, None)
    assert np.array_equal(normalize_loudness(x, 24000), x)


def test_refuses_nan():
    x = tone(1.0, 24000)
    x[10] = np.nan
    with pytest.raises(InputError, match="NaN/Inf"):
        normalize_loudness(x, 24000)

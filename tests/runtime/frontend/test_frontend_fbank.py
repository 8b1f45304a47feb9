"""Kaldi fbank (torchaudio.compliance.kaldi.fbank defaults) minus its mean: the speaker encoder's input."""
import math

import numpy as np
import pytest

from s3gen_runtime.errors import InputError
from s3gen_runtime.frontend import kaldi_fbank, speaker_fbank
from s3gen_runtime.frontend.fbank import kaldi_mel_banks, num_fbank_frames, povey_window

FBANK_TOL = 5e-3   # near-silent frames sit on the float32-eps floor, where float32 FFT rounding shows


def test_golden_stage_fbank(voice_golden):
    g, _ = voice_golden
    feats = speaker_fbank(g["wav16"][0])
    n16 = g["wav16"].shape[1]
    assert feats.dtype == np.float32 and feats.shape == (1 + (n16 - 400) // 160, 80) == g["fbank"][0].shape
    err = np.abs(feats - g["fbank"][0])
    assert err.max() <= FBANK_TOL
    assert np.quantile(err, 0.999) <= 5e-4   # the bulk is far tighter than the tolerance


def test_kaldi_native_fbank_agrees(voice_golden):
    """Measurement only: the C++ kaldi-native-fbank (not a dependency) lands as close to the golden."""
    knf = pytest.importorskip("kaldi_native_fbank")
    g, _ = voice_golden
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 80
    online = knf.OnlineFbank(opts)
    online.accept_waveform(16000, g["wav16"][0].tolist())
    online.input_finished()
    theirs = np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])
    theirs -= theirs.mean(axis=0, keepdims=True)
    assert theirs.shape == g["fbank"][0].shape
    assert np.abs(theirs - g["fbank"][0]).max() <= FBANK_TOL
    assert np.abs(speaker_fbank(g["wav16"][0]) - theirs).max() <= FBANK_TOL


def test_mel_banks():
    banks = kaldi_mel_banks()
    assert banks.shape == (80, 257) and banks.dtype == np.float32
    assert np.all(banks >= 0) and np.all(banks[:, -1] == 0)       # the Nyquist bin carries no weight
    assert np.all(banks.max(axis=1) > 0)                            # no empty band at 512 points
    # Kaldi's triangles, restated in float64: 82 edges equally spaced in 1127 ln(1 + f / 700), 20..8000 Hz
    mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)     # noqa: E731
    edges = np.linspace(mel(20.0), mel(8000.0), 82)
    m = mel(np.arange(256) * 16000 / 512)
    up = (m[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    down = (edges[2:, None] - m[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    assert np.allclose(banks[:, :256], np.maximum(0.0, np.minimum(up, down)), atol=2e-5)
    first_bins = (banks > 0).argmax(axis=1)
    assert first_bins[0] * 16000 / 512 > 20.0                       # the lowest band starts above 20 Hz
    assert np.all(np.diff(first_bins) >= 0)


def test_povey_window_is_hann_to_the_085():
    w = povey_window(400)
    assert w[0] == 0 and w[-1] == 0 and np.isclose(w.max(), 1.0, atol=1e-4)
    n = np.arange(400)
    assert np.allclose(w, (0.5 - 0.5 * np.cos(2 * np.pi * n / 399)) ** 0.85)


@pytest.mark.parametrize("n,frames", [(400, 1), (559, 1), (560, 2), (720, 3), (16000, 98)])
def test_snip_edges_frame_count(n, frames):
    assert num_fbank_frames(n) == frames
    rng = np.random.default_rng(n)
    assert kaldi_fbank(rng.standard_normal(n).astype(np.float32) * 0.1).shape == (frames, 80)


def test_no_int16_scaling_and_gain_invariance():
    """torchaudio does not multiply by 32768: doubling the input adds exactly log(4) to the log energies,
    and the speaker encoder's mean-subtracted input does not change at all."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(8000) * 0.05).astype(np.float32)
    a, b = kaldi_fbank(x), kaldi_fbank(2 * x)
    assert np.allclose(b - a, math.log(4.0), atol=1e-4)
    assert np.allclose(speaker_fbank(x), speaker_fbank(2 * x), atol=1e-4)
    # a scale of 32768 would put typical speech energies near +20; unscaled they are near or below 0
    assert a.mean() < 5.0


def test_dc_offset_is_removed():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(8000) * 0.05).astype(np.float32)
    assert np.allclose(kaldi_fbank(x), kaldi_fbank(x + np.float32(0.3)), atol=1e-3)


def test_silence_sits_on_the_epsilon_floor():
    feats = kaldi_fbank(np.zeros(1600, np.float32))
    assert np.all(feats == np.float32(math.log(np.finfo(np.float32).eps)))
    assert np.all(speaker_fbank(np.zeros(1600, np.float32)) == 0)


def test_refuses_short_or_bad_input():
    with pytest.raises(InputError, match="at least 400 samples"):
        speaker_fbank(np.ones(399, np.float32))
    with pytest.raises(InputError, match="NaN/Inf"):
        speaker_fbank(np.full(800, np.nan, np.float32))
    with pytest.raises(InputError, match="mono"):
        speaker_fbank(np.zeros((2, 800), np.float32))

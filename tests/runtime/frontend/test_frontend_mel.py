"""The prompt mel (24 kHz, 80 bins) and the tokenizer's log-mel (16 kHz, 128 bins)."""
import numpy as np
import pytest

from s3gen_runtime.errors import InputError
from s3gen_runtime.frontend import prompt_mel, slaney_mel_basis, tokenizer_log_mel
from s3gen_runtime.frontend.mel import hz_to_mel_slaney, mel_to_hz_slaney


def test_golden_stage_prompt_feat(voice_golden):
    g, _ = voice_golden
    feat = prompt_mel(g["wav24"][0])
    assert feat.dtype == np.float32 and feat.shape == (g["wav24"].shape[1] // 480, 80)
    assert feat.shape == g["prompt_feat"][0].shape
    assert np.abs(feat - g["prompt_feat"][0]).max() <= 1e-3


def test_golden_stage_mel128(voice_golden):
    g, _ = voice_golden
    mel = tokenizer_log_mel(g["wav16"][0])
    assert mel.dtype == np.float32 and mel.shape == (128, g["wav16"].shape[1] // 160)
    assert mel.shape[1] == int(g["mel128_len"][0])
    assert np.abs(mel - g["mel128"][0]).max() <= 1e-4


def test_slaney_scale_round_trip_and_anchor_points():
    hz = np.array([0.0, 200.0, 1000.0, 4000.0, 8000.0])
    assert np.allclose(mel_to_hz_slaney(hz_to_mel_slaney(hz)), hz)
    # linear part: 3 mels per 200 Hz; 1 kHz is mel 15; log part: 27 mels per factor 6.4
    assert np.allclose(hz_to_mel_slaney([200.0, 1000.0, 6400.0]), [3.0, 15.0, 42.0])


@pytest.mark.parametrize("sr,n_fft,n_mels,fmax", [(24000, 1920, 80, 8000.0), (16000, 400, 128, None)])
def test_mel_basis_triangles(sr, n_fft, n_mels, fmax):
    basis = slaney_mel_basis(sr, n_fft, n_mels, 0.0, fmax)
    assert basis.shape == (n_mels, n_fft // 2 + 1) and basis.dtype == np.float32
    assert np.all(basis >= 0)
    # the peaks move up in frequency and no band reaches above fmax
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    assert np.all(np.diff(freqs[basis.argmax(axis=1)]) >= 0)
    assert np.all(basis[:, freqs > (fmax or sr / 2)] == 0)
    # Slaney norm: each triangle has area about 1 in Hz (sampled on the FFT grid)
    area = basis.sum(axis=1) * (sr / n_fft)
    wide = (basis > 0).sum(axis=1) >= 6    # narrower bands are too coarsely sampled to integrate
    assert wide.sum() >= 10 and np.allclose(area[wide], 1.0, atol=0.05)


def test_silence_gives_the_closed_form_floors():
    # prompt mel of zeros: magnitude sqrt(1e-9) in every bin, so log(max(sqrt(1e-9) * row sum, 1e-5))
    basis = slaney_mel_basis(24000, 1920, 80, 0.0, 8000.0).astype(np.float64)
    expected = np.log(np.maximum(np.sqrt(1e-9) * basis.sum(axis=1), 1e-5))
    feat = prompt_mel(np.zeros(4800, np.float32))
    assert feat.shape == (10, 80) and np.allclose(feat, expected[None, :], atol=1e-6)
    # tokenizer mel of zeros: log10(1e-10) = -10 everywhere, (x + 4) / 4 = -1.5
    assert np.all(tokenizer_log_mel(np.zeros(1600, np.float32)) == -1.5)


def test_tokenizer_mel_dynamic_range_floor():
    rng = np.random.default_rng(0)
    x = np.zeros(16000, np.float32)
    x[:8000] = rng.standard_normal(8000).astype(np.float32) * 0.1
    mel = tokenizer_log_mel(x)
    # nothing lies more than 8 decades (2.0 after the / 4) below the loudest value
    assert mel.min() >= mel.max() - 2.0 - 1e-6
    assert np.isclose(mel.min(), mel.max() - 2.0, atol=1e-6)   # the silent half hits the floor


def test_tone_lands_in_its_mel_band():
    t = np.arange(16000) / 16000
    mel = tokenizer_log_mel((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    basis = slaney_mel_basis(16000, 400, 128)
    centre = np.fft.rfftfreq(400, 1 / 16000)[basis.argmax(axis=1)]
    assert abs(centre[int(np.median(mel.argmax(axis=0)))] - 1000) <= 80


@pytest.mark.parametrize("fn,n_ok,n_bad", [(prompt_mel, 721, 720), (tokenizer_log_mel, 201, 200)])
def test_minimum_lengths(fn, n_ok, n_bad):
    fn(np.ones(n_ok, np.float32) * 0.1)
    with pytest.raises(InputError, match="needs more than"):
        fn(np.ones(n_bad, np.float32) * 0.1)


@pytest.mark.parametrize("fn", [prompt_mel, tokenizer_log_mel])
def test_refuses_nan(fn):
    x = np.zeros(4800, np.float32)
    x[5] = np.inf
    with pytest.raises(InputError, match="NaN/Inf"):
        fn(x)

"""The drop-in installed over upstream's own S3Gen gives upstream's mel and wav for the same request under the
same torch seed (nothing injected: both draw their noise from torch's generator), and upstream's
generate(text) runs end to end on it. Tolerances: mel 1e-3, wav 2e-3 (the golden files')."""
import numpy as np
import pytest
import torch

from s3gen_chatterbox import S3GenDropIn, install

MEL_TOL, WAV_TOL = 1e-3, 2e-3
SEED = 7
TEXT = "hello there, world."
STEPS = {"standard": 5, "meanflow": 2}   # 5 Euler steps: the same code path as 10, half the eager time


def request(variant, seed=3):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 6561, (1, 20)))


def both_outputs(s3gen, variant, ref_dict):
    torch.manual_seed(SEED)
    mel = s3gen.flow_inference(request(variant), ref_dict=dict(ref_dict), n_cfm_timesteps=STEPS[variant],
                               finalize=True)
    torch.manual_seed(SEED)
    wav, _ = s3gen.inference(request(variant), ref_dict=dict(ref_dict), n_cfm_timesteps=STEPS[variant])
    return mel, wav


@pytest.fixture(scope="module", params=["standard", "meanflow"])
def scenario(request, make_tts, exported):
    """(variant, tts with the drop-in installed, upstream's model, upstream's (mel, wav), the drop-in's, what
    install must leave alone)."""
    variant = request.param
    tts = make_tts(variant)
    eager = tts.s3gen
    upstream_out = both_outputs(eager, variant, tts.conds.gen)
    kept = {name: getattr(tts, name) for name in ("t3", "ve", "tokenizer", "watermarker", "conds")}
    drop_in = install(tts, exported(variant))
    return variant, tts, eager, upstream_out, both_outputs(drop_in, variant, tts.conds.gen), kept


def test_mel_and_wav_equal_upstreams_under_the_same_seed(scenario):
    variant, tts, _, (mel_up, wav_up), (mel, wav), _ = scenario
    assert mel.shape == mel_up.shape and wav.shape == wav_up.shape
    assert mel.dtype == mel_up.dtype and mel.device == mel_up.device
    assert float((mel - mel_up).abs().max()) <= MEL_TOL
    assert float((wav - wav_up).abs().max()) <= WAV_TOL


def test_install_replaces_s3gen_only(scenario):
    variant, tts, eager, *_, kept = scenario
    assert isinstance(tts.s3gen, S3GenDropIn) and tts.s3gen.meanflow == (variant == "meanflow")
    assert tts.s3gen.device == eager.device and tts.s3gen.dtype == eager.dtype
    for name, obj in kept.items():
        assert getattr(tts, name) is obj, name


def test_another_seed_gives_other_audio(scenario):
    variant, tts, *_ = scenario
    torch.manual_seed(SEED + 1)
    wav, _ = tts.s3gen.inference(request(variant), ref_dict=dict(tts.conds.gen), n_cfm_timesteps=STEPS[variant])
    assert float((wav - scenario[4][1]).abs().max()) > 10 * WAV_TOL


def test_generate_runs_end_to_end(scenario):
    variant, tts, *_ = scenario
    torch.manual_seed(3)
    wav = tts.generate(TEXT)
    timings = tts.s3gen.last_timings
    assert wav.ndim == 2 and wav.shape[0] == 1 and wav.shape[1] > 0 and wav.shape[1] % 480 == 0
    assert torch.isfinite(wav).all()
    assert timings["total"] > 0 and set(timings) >= {"encoder", "estimator", "vocoder"}


def generate_both_ways(tts, eager):
    drop_in = tts.s3gen
    try:
        tts.s3gen = eager
        torch.manual_seed(3)
        wav_up = tts.generate(TEXT)
    finally:
        tts.s3gen = drop_in
    torch.manual_seed(3)
    return wav_up, tts.generate(TEXT)


@pytest.mark.parametrize("scenario", ["meanflow"], indirect=True)
def test_turbo_generate_equals_upstream_generate(scenario):
    """Upstream's generate with its eager S3Gen vs with the drop-in, same torch seed: T3 draws the same tokens
    and S3Gen the same noise, so the wavs agree within the wav tolerance."""
    wav_up, wav = generate_both_ways(scenario[1], scenario[2])
    assert wav.shape == wav_up.shape
    assert float((wav - wav_up).abs().max()) <= WAV_TOL


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["standard"], indirect=True)
def test_standard_generate_equals_upstream_generate(scenario):
    """As for Turbo; slow: upstream's eager standard S3Gen takes most of a minute here."""
    wav_up, wav = generate_both_ways(scenario[1], scenario[2])
    assert wav.shape == wav_up.shape
    assert float((wav - wav_up).abs().max()) <= WAV_TOL

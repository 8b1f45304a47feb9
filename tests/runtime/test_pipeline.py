"""S3GenRuntime end to end on the exported synthetic checkpoint: parity with upstream, batching,
buckets, validation before any graph runs, tampered artifacts, seeds, solvers, precision.

Measured on this project's CPU (ORT 1.32, fp32) against the golden files: standard mel 3.6e-6 and
wav 3.3e-5 max abs; meanflow mel 5.7e-6 and wav 3.6e-5. Upstream-prepared voices (standard): odd
F = 2P + 1 (espeak) mel 3.9e-6, wav 4.8e-5; even (aishell) mel 3.9e-6, wav 5.1e-5. A row in a padded batch against the same
request alone: mel <= 6.3e-6, wav <= 4.2e-5 (with or without pad_to_bucket).
"""
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from pipeline_helpers import (GOLDEN, TINY, VOICE_GOLDEN, add_int8_standin, count_calls, golden_case, linked_copy, max_diff,
                              random_voice, tiny)

from s3gen_runtime.batching import Batch, Request, encoder_feeds, plan_layout, validate_requests
from s3gen_runtime.buckets import make_buckets
from s3gen_runtime.errors import ArtifactError, BucketError, InputError, ManifestError
from s3gen_runtime.manifest import SCHEMA_VERSION, Tuning
from s3gen_runtime.noise import draw_noise
from s3gen_runtime.pipeline import S3GenRuntime, resolve_settings
from s3gen_runtime.voice import Voice
BATCH_MEL_ATOL, BATCH_WAV_ATOL = 5e-5, 5e-4   # ~8x the measured 6.3e-6 / 4.2e-5


@pytest.fixture(scope="module")
def small_buckets(exported, tmp_path_factory):
    """The standard export with buckets 48 and 96 mel frames, padding every batch to its bucket."""
    def edit(data):
        data["buckets"] = [{"name": "mel48", "mel_frames": 48}, {"name": "mel96", "mel_frames": 96}]
        return data
    folder = linked_copy(exported("standard"), tmp_path_factory.mktemp("buckets"), edit)
    return S3GenRuntime(folder, pad_to_bucket=True)


BATCH_ROWS = [(3, 7, False), (8, 4, True), (5, 12, True)]   # (P, N, F = 2P + 1): odd and even prompts mixed


@pytest.fixture(scope="module")
def batch_requests():
    """Three requests of different prompt and token lengths, each with its own voice and seed."""
    rng = np.random.default_rng(5)
    return [Request(rng.integers(0, 6561, n), random_voice(rng, p, odd), seed=s)
            for s, (p, n, odd) in enumerate(BATCH_ROWS)]


@pytest.fixture(scope="module")
def alone(std, batch_requests):
    return [std.synthesize_batch([r], steps=2)[0] for r in batch_requests]


# ---------------------------------------------------------------- parity with upstream

@pytest.mark.parametrize("variant", ["standard", "meanflow"])
def test_golden_parity(variant, std, mf, golden):
    tokens, voice, noise, g = golden_case(golden(GOLDEN[variant]))
    runtime = std if variant == "standard" else mf
    result = runtime.synthesize(tokens, voice, noise=noise)   # the manifest's defaults: upstream's setting
    assert result.nfe == int(g["n_timesteps"]) == (10 if variant == "standard" else 2)
    assert result.sample_rate == 24000 and result.seed is None
    assert set(result.timings) == {"encoder", "estimator", "vocoder", "total"}
    assert max_diff(result.mel, g["mel"][0]) < 1e-3
    assert max_diff(result.wav, g["wav"][0]) < 2e-3


@pytest.mark.parametrize("parity", ["odd", "even"])
def test_prepared_voice_golden_parity(std, golden, parity):
    """Voices from upstream's embed_ref: with F = 2P + 1 upstream vocodes 2N - 1 frames, and so must we."""
    tokens, voice, noise, g = golden_case(golden(VOICE_GOLDEN[parity]))
    assert voice.prompt_frames == 2 * voice.prompt_tokens + (parity == "odd")
    result = std.synthesize(tokens, voice, noise=noise)
    assert result.mel.shape == (80, 2 * np.size(tokens) - (parity == "odd")) and result.wav.shape == g["wav"][0].shape
    assert max_diff(result.mel, g["mel"][0]) < 1e-3
    assert max_diff(result.wav, g["wav"][0]) < 2e-3


def test_prepared_voice_golden_conditioning(std, golden):
    """The odd voice's encoder outputs: mu over T = 2 (P + N) frames, cond = its 405 prompt frames."""
    tokens, voice, noise, g = golden_case(golden(VOICE_GOLDEN["odd"]))
    c = std.encode(std.prepare([Request(tokens, voice, noise=noise)]))
    assert c.spans == ((405, 450),)
    assert max_diff(c.mu, g["mu"]) < 1e-4 and max_diff(c.spks, g["spks"]) < 1e-4
    assert np.array_equal(c.cond, g["cond"]) and np.array_equal(c.mask, g["mask"])


# ---------------------------------------------------------------- batching and buckets

def test_batch_rows_match_alone(std, batch_requests, alone):
    batch = std.synthesize_batch(batch_requests, steps=2)
    for request, one, row in zip(batch_requests, alone, batch):
        frames = 2 * (request.voice.prompt_tokens + len(request.tokens)) - request.voice.prompt_frames
        assert row.mel.shape == (80, frames) and row.wav.shape == (480 * frames,)
        assert row.seed == request.seed and row.nfe == 2
        assert max_diff(row.mel, one.mel) < BATCH_MEL_ATOL
        assert max_diff(row.wav, one.wav) < BATCH_WAV_ATOL


def test_pad_to_bucket_matches_alone(small_buckets, batch_requests, alone, monkeypatch):
    frames = []
    runner = small_buckets.runners["estimator_cfg"]
    monkeypatch.setattr(runner, "run", lambda feeds, outputs=None, _run=runner.run:
                        frames.append(feeds["x"].shape) or _run(feeds, outputs))
    batch = small_buckets.synthesize_batch(batch_requests, steps=2)
    assert frames == [(3, 80, 48)] * 2   # longest prompt 8 + longest tokens 12 -> 40 frames -> bucket mel48
    for one, row in zip(alone, batch):
        assert max_diff(row.mel, one.mel) < BATCH_MEL_ATOL
        assert max_diff(row.wav, one.wav) < BATCH_WAV_ATOL


def test_int8_batch_runs_each_request_alone(exported, mf, tmp_path, monkeypatch):
    """int8 graphs quantize activations over the whole batch, so a batch of them runs request by request:
    every row is then exactly what it is alone, seeds and given noise included; bad requests still fail
    before any graph runs."""
    pytest.importorskip("onnx")
    int8 = S3GenRuntime(add_int8_standin(linked_copy(exported("meanflow"), tmp_path / "a")), precision="int8")
    assert not int8.rows_independent and mf.rows_independent
    tokens, voice = tiny(new=8)
    given = draw_noise(9, voice.prompt_tokens, 5, voice.prompt_frames)
    calls = count_calls(monkeypatch, int8)
    batch = int8.synthesize_batch([Request(tokens, voice, 3), Request(tokens[:5], voice, noise=given),
                                   Request(tokens, voice)])
    assert calls["vocoder"] == 3 and calls["encoder"] == 3
    assert np.array_equal(batch[0].wav, int8.synthesize(tokens, voice, seed=3).wav)
    assert np.array_equal(batch[1].wav, int8.synthesize(tokens[:5], voice, noise=given).wav) and batch[1].seed is None
    assert np.array_equal(batch[2].wav, int8.synthesize(tokens, voice, seed=batch[2].seed).wav)
    calls.clear()
    with pytest.raises(InputError, match="^request 1: tokens"):
        int8.synthesize_batch([Request(tokens, voice, 0), Request(np.array([6561]), voice, 0)])
    assert sum(calls.values()) == 0


def test_too_long_request_is_a_bucket_error_before_any_graph(std, golden, monkeypatch):
    tokens, voice, _, _ = golden_case(golden(GOLDEN["standard"]))
    calls = count_calls(monkeypatch, std)
    long_tokens = np.zeros(2101, dtype=np.int64)   # 2 * (25 + 2101) = 4252 frames
    with pytest.raises(BucketError) as e:
        std.synthesize(long_tokens, voice, seed=0)
    assert "4252 mel frames" in str(e.value) and "'mel4096' holds 4096" in str(e.value)
    with pytest.raises(BucketError, match="^request 1: request needs 4252 mel frames"):
        std.synthesize_batch([Request(tokens, voice, 0), Request(long_tokens, voice, 0)])
    assert sum(calls.values()) == 0


def test_batch_padding_past_the_largest_bucket(small_buckets, monkeypatch):
    rng = np.random.default_rng(2)
    # each row alone needs 2 * 45 = 90 <= 96 frames, but padded together 2 * (40 + 40) = 160
    requests = [Request(rng.integers(0, 6561, 5), random_voice(rng, 40), 0),
                Request(rng.integers(0, 6561, 40), random_voice(rng, 5), 0)]
    calls = count_calls(monkeypatch, small_buckets)
    with pytest.raises(BucketError, match="the batch pads to 160 mel frames .* holds 96 .*split the batch"):
        small_buckets.synthesize_batch(requests)
    with pytest.raises(BucketError, match="request needs 98 mel frames .* holds 96"):
        small_buckets.synthesize(rng.integers(0, 6561, 9), random_voice(rng, 40), seed=0)
    assert sum(calls.values()) == 0


def test_layout_solves_only_needed_frames():
    rng = np.random.default_rng(3)
    rows = validate_requests([Request(rng.integers(0, 6561, 20), random_voice(rng, 2), 0),
                              Request(rng.integers(0, 6561, 3), random_voice(rng, 10), 0)], make_buckets())
    layout = plan_layout(rows, make_buckets(), pad_to_bucket=False)
    assert (layout.prompt_width, layout.token_width) == (10, 20)          # encoder sees 60 frames
    assert (layout.frames, layout.vocoder_frames) == (44, 40)             # longest row, longest new part
    padded = plan_layout(rows, make_buckets(), pad_to_bucket=True)
    assert (padded.prompt_width, padded.token_width, padded.frames, padded.vocoder_frames) == (10, 118, 256, 256)


def test_layout_with_odd_prompts():
    """Prompt mels pad to the widest F; an odd prompt still solves T = 2 (P + N) frames and vocodes T - F."""
    rng = np.random.default_rng(3)
    rows = validate_requests([Request(rng.integers(0, 6561, 20), random_voice(rng, 2, odd=True), 0),
                              Request(rng.integers(0, 6561, 3), random_voice(rng, 10, odd=True), 0),
                              Request(rng.integers(0, 6561, 5), random_voice(rng, 4), 0)], make_buckets())
    assert [r.span for r in rows] == [(5, 44), (21, 26), (8, 18)]
    layout = plan_layout(rows, make_buckets(), pad_to_bucket=False)
    assert (layout.prompt_width, layout.token_width, layout.prompt_feat_width) == (10, 20, 21)
    assert (layout.frames, layout.vocoder_frames) == (44, 39)             # longest row, longest T - F
    feeds = encoder_feeds(Batch(tuple(rows), layout))
    assert feeds["prompt_feat"].shape == (3, 21, 80) and feeds["prompt_feat_lengths"].tolist() == [5, 21, 8]
    assert not feeds["prompt_feat"][2, 8:].any()                         # zero padding past the even row's F


def test_odd_prompt_bucket_counts_t_not_f(small_buckets):
    """A bucket holds T = 2 (P + N) frames: F = 2P + 1 neither adds a frame nor moves the limit."""
    rng = np.random.default_rng(6)
    voice = random_voice(rng, 40, odd=True)                      # F = 81
    (row,) = small_buckets.synthesize_batch([Request(rng.integers(0, 6561, 8), voice, 0)], steps=2)
    assert row.mel.shape == (80, 96 - 81)                        # 2 (40 + 8) = 96: the largest bucket exactly
    with pytest.raises(BucketError, match="request needs 98 mel frames .* holds 96"):
        small_buckets.prepare([Request(rng.integers(0, 6561, 9), voice, 0)])


# ---------------------------------------------------------------- validation before any graph runs

def _bad_voice(prompt_feat=None, embedding=None, prompt=3):
    rng = np.random.default_rng(4)
    v = random_voice(rng, prompt)
    return Voice(v.prompt_token, v.prompt_feat if prompt_feat is None else prompt_feat,
                 v.embedding if embedding is None else embedding)


def _nan_feat():
    feat = np.full((1, 6, 80), -5.0, dtype=np.float32)
    feat[0, 2, 7] = np.nan
    return feat


BAD_INPUTS = {
    "id 6561": (dict(tokens=[1, 6561]), "outside the vocabulary range [0, 6561): 6561 at index 1"),
    "id -1": (dict(tokens=[-1, 2]), "outside the vocabulary range [0, 6561): -1 at index 0"),
    "empty tokens": (dict(tokens=np.zeros(0, np.int64)), "tokens are empty"),
    "fractional tokens": (dict(tokens=np.array([1.5, 2.0])), "must be whole numbers, got 1.5 at index 0"),
    "batched tokens": (dict(tokens=np.zeros((2, 4), np.int64)), "tokens have batch 2"),
    "NaN prompt_feat": (dict(voice=_bad_voice(prompt_feat=_nan_feat())), "prompt_feat contains NaN or Inf"),
    "prompt frames 2P-1": (dict(voice=_bad_voice(prompt_feat=np.zeros((1, 5, 80), np.float32))),
                           "prompt_feat must have 2P or 2P+1 frames for P prompt tokens; it has 5 frames for 3 "
                           "tokens (needs 6 or 7)"),
    "prompt frames 2P+2": (dict(voice=_bad_voice(prompt_feat=np.zeros((1, 8, 80), np.float32))),
                           "prompt_feat must have 2P or 2P+1 frames for P prompt tokens; it has 8 frames for 3 "
                           "tokens"),
    "embedding size": (dict(voice=_bad_voice(embedding=np.zeros((1, 191), np.float32))),
                       "embedding must be 192-d"),
    "not a voice": (dict(voice={"prompt_token": [1]}), "voice must be a s3gen_runtime.voice.Voice"),
    "unknown solver": (dict(solver="rk4"), "unknown solver 'rk4'; valid solvers: euler, heun"),
    "meanflow solver": (dict(solver="meanflow"), "solver 'meanflow' needs meanflow artifacts"),
    "steps 0": (dict(steps=0), "steps must be an integer >= 1, got 0"),
    "negative cfg": (dict(cfg_rate=-0.5), "cfg_rate must be finite and >= 0, got -0.5"),
    "NaN cfg": (dict(cfg_rate=float("nan")), "cfg_rate must be finite and >= 0, got nan"),
    "steps over the limit": (dict(steps=1001), "steps must be at most 1000 (MAX_STEPS), got 1001"),
    "cfg over the limit": (dict(cfg_rate=10.5), "cfg_rate must be at most 10 (MAX_CFG_RATE), got 10.5"),
    "negative seed": (dict(seed=-1), "seed must be an integer >= 0 or None"),
    "noise shape": (dict(noise={**draw_noise(0, 3, 4), "z": np.zeros((1, 80, 15), np.float32)}),
                    "noise 'z' has shape (1, 80, 15) but a request with 3 prompt and 4 new tokens needs (1, 80, 14)"),
    "NaN noise": (dict(noise={**draw_noise(0, 3, 4), "sine_phase": np.full((1, 9, 1), np.nan, np.float32)}),
                  "noise 'sine_phase' contains NaN or Inf"),
    "even noise, odd voice": (dict(voice=_bad_voice(prompt_feat=np.zeros((1, 7, 80), np.float32)),
                                   noise=draw_noise(0, 3, 4)),
                              "noise 'sine_noise' has shape (1, 9, 3840) but a request with 3 prompt and 4 new "
                              "tokens after 7 prompt frames needs (1, 9, 3360)"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_before_any_graph(std, monkeypatch, case):
    changes, message = BAD_INPUTS[case]
    tokens, voice = tiny()
    kwargs = {"tokens": tokens, "voice": voice, "seed": 0, **changes}
    calls = count_calls(monkeypatch, std)
    with pytest.raises(InputError) as e:
        std.synthesize(kwargs.pop("tokens"), kwargs.pop("voice"), **kwargs)
    assert message in str(e.value)
    assert sum(calls.values()) == 0


def test_meanflow_refuses_other_solvers_and_guidance(mf, monkeypatch):
    tokens, voice = tiny()
    calls = count_calls(monkeypatch, mf)
    with pytest.raises(InputError, match="meanflow artifacts run only the 'meanflow' solver .* got 'euler'"):
        mf.synthesize(tokens, voice, seed=0, solver="euler")
    with pytest.raises(InputError, match="no guided estimator: cfg_rate must be 0, got 0.7"):
        mf.synthesize(tokens, voice, seed=0, cfg_rate=0.7)
    assert sum(calls.values()) == 0


def test_bad_runtime_options(exported):
    with pytest.raises(InputError, match="precision must be one of fp32, int8, got 'fp16'"):
        S3GenRuntime(exported("meanflow"), precision="fp16")
    with pytest.raises(InputError, match="pad_to_bucket must be True or False"):
        S3GenRuntime(exported("meanflow"), pad_to_bucket="yes")
    with pytest.raises(InputError, match="unknown backend 'openvino'; known backends: .*onnxruntime"):
        S3GenRuntime(exported("meanflow"), backend="openvino")
    with pytest.raises(ArtifactError, match="have no int8 graphs .*re-export with --int8"):
        S3GenRuntime(exported("meanflow"), precision="int8")


# ---------------------------------------------------------------- tampered artifacts

def test_flipped_byte_is_refused_at_load(exported, tmp_path):
    folder = linked_copy(exported("standard"), tmp_path / "a", copy=("encoder.onnx",))
    with open(folder / "encoder.onnx", "r+b") as f:
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(ArtifactError, match="components.encoder: file encoder.onnx is tampered or corrupt"):
        S3GenRuntime(folder)


def test_missing_file_is_refused_at_load(exported, tmp_path):
    folder = linked_copy(exported("standard"), tmp_path / "a", skip=("vocoder.onnx",))
    with pytest.raises(ArtifactError, match="components.vocoder: file vocoder.onnx is missing"):
        S3GenRuntime(folder)


def test_edited_spec_hash_is_refused_at_load(exported, tmp_path):
    def edit(data):
        data["components"]["encoder"]["spec_hash"] = "0" * 16
        return data
    folder = linked_copy(exported("standard"), tmp_path / "a", edit)
    with pytest.raises(ArtifactError, match="encoder .*s3gen.spec_hash is '[0-9a-f]+', the manifest expects '0{16}'"):
        S3GenRuntime(folder)


def test_unknown_schema_version_is_refused(exported, tmp_path):
    def edit(data):
        data["schema_version"] = SCHEMA_VERSION + 1
        return data
    folder = linked_copy(exported("standard"), tmp_path / "a", edit)
    with pytest.raises(ManifestError, match=f"schema_version {SCHEMA_VERSION + 1} is not supported"):
        S3GenRuntime(folder)


def test_a_graph_that_failed_its_validation_is_refused(exported, tmp_path):
    def edit(data):
        record = data["components"]["vocoder"]["validation"]
        record["passed"] = False
        record["cases"][1]["max_abs"]["wav"], record["cases"][1]["max_rel"]["wav"] = 0.5, 0.5
        return data
    folder = linked_copy(exported("standard"), tmp_path / "a", edit)
    with pytest.raises(ManifestError, match=r"components\.vocoder\.validation\.passed is false: case 'b1_long' "
                                            r"output 'wav': max abs error 0\.5 exceeds atol"):
        S3GenRuntime(folder)


# ---------------------------------------------------------------- seeds, noise, solvers, settings

def test_seeds(std):
    tokens, voice = tiny()
    a = std.synthesize(tokens, voice, seed=7, **TINY)
    b = std.synthesize(tokens, voice, seed=7, **TINY)
    c = std.synthesize(tokens, voice, seed=8, **TINY)
    assert np.array_equal(a.wav, b.wav) and np.array_equal(a.mel, b.mel)
    assert max_diff(a.wav, c.wav) > 1e-2 and max_diff(a.mel, c.mel) > 1e-1
    fresh = std.synthesize(tokens, voice, **TINY)   # no seed: a fresh one, reported for replay
    assert isinstance(fresh.seed, int) and fresh.seed != 7
    assert np.array_equal(std.synthesize(tokens, voice, seed=fresh.seed, **TINY).wav, fresh.wav)
    # explicit noise overrides the seed
    given = std.synthesize(tokens, voice, seed=8, noise=draw_noise(7, 3, 4), **TINY)
    assert given.seed is None and np.array_equal(given.wav, a.wav)


@pytest.mark.parametrize("solver,nfe", [("heun", 4), ("midpoint", 4), ("dpmpp2m", 2)])
def test_other_solvers_run(std, monkeypatch, solver, nfe):
    tokens, voice = tiny()
    calls = count_calls(monkeypatch, std)
    result = std.synthesize(tokens, voice, seed=1, solver=solver, steps=2)
    assert result.nfe == nfe and calls == Counter({"encoder": 1, "estimator_cfg": nfe, "vocoder": 1})
    assert result.wav.shape == (960 * 4,) and result.mel.shape == (80, 8)
    assert np.all(np.isfinite(result.wav)) and np.all(np.isfinite(result.mel)) and np.abs(result.wav).max() > 0


def test_cfg_rate_zero_runs_the_unguided_graph(std, monkeypatch):
    tokens, voice = tiny()
    calls = count_calls(monkeypatch, std)
    unguided = std.synthesize(tokens, voice, seed=1, cfg_rate=0.0, **TINY)
    assert calls == Counter({"encoder": 1, "estimator": 2, "vocoder": 1}) and unguided.nfe == 2
    guided = std.synthesize(tokens, voice, seed=1, **TINY)
    assert calls["estimator_cfg"] == 2 and calls["estimator"] == 2
    assert max_diff(guided.mel, unguided.mel) > 1e-2   # guidance changes the result


def test_settings_come_from_tuning_then_caller(std):
    manifest = std.manifest
    assert std.resolve() == resolve_settings(manifest) and std.resolve().solver == "euler"
    assert (std.defaults.steps, std.defaults.cfg_rate, std.variant) == (10, 0.7, "standard")
    tuned = replace(manifest, tuning=Tuning("dpmpp2m", 6, 0.5, 30.0, {}))
    s = resolve_settings(tuned)
    assert (s.solver, s.steps, s.cfg_rate, s.nfe) == ("dpmpp2m", 6, 0.5, 6)
    s = resolve_settings(tuned, solver="heun", cfg_rate=0)
    assert (s.solver, s.steps, s.cfg_rate, s.nfe, s.guided) == ("heun", 6, 0.0, 12, False)
    # the limits themselves are allowed (over them: BAD_INPUTS)
    s = resolve_settings(manifest, steps=1000, cfg_rate=10)
    assert (s.steps, s.cfg_rate, s.nfe) == (1000, 10.0, 1000)


def test_int8_graphs_are_picked_and_checked(exported, mf, tmp_path):
    pytest.importorskip("onnx")
    src = exported("meanflow")
    # A stand-in for a quantized graph: the vocoder relabelled int8 (quantization keeps the spec).
    folder = add_int8_standin(linked_copy(src, tmp_path / "a"))

    int8 = S3GenRuntime(folder, precision="int8")
    assert dict(int8.components) == {"encoder": "encoder", "estimator": "estimator", "vocoder": "vocoder_int8"}
    tokens, voice = tiny()
    assert np.array_equal(int8.synthesize(tokens, voice, seed=3).wav, mf.synthesize(tokens, voice, seed=3).wav)
    assert S3GenRuntime(folder).components["vocoder"] == "vocoder"   # fp32 ignores int8 graphs

    # an fp32 graph recorded as int8 in the manifest: its metadata gives it away
    mislabelled = add_int8_standin(linked_copy(src, tmp_path / "b"), file="vocoder.onnx")
    with pytest.raises(ArtifactError, match="s3gen.precision is 'fp32', the manifest expects 'int8'"):
        S3GenRuntime(mislabelled, precision="int8")
    recorded_fp32 = add_int8_standin(linked_copy(src, tmp_path / "c"), file="vocoder.onnx", precision="fp32",
                                     selftest=False)
    with pytest.raises(ArtifactError, match="component 'vocoder_int8' is recorded as fp32, expected int8"):
        S3GenRuntime(recorded_fp32, precision="int8")

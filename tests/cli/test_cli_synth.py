"""`s3gen-aot synth`: the runtime (--artifacts) and the eager reference (--checkpoint) from files."""
import re

import numpy as np
import pytest
from click.testing import CliRunner

from s3gen_cli.main import main
from s3gen_runtime.backends import open_runner
from s3gen_runtime.io import read_wav
from s3gen_runtime.pipeline import S3GenRuntime
from s3gen_runtime.voice import Voice, save_voice

GOLDEN = {"standard": "s3gen_p25_n35_seed0.npz", "meanflow": "s3gen_meanflow_p25_n35_seed0.npz"}


def synth(*args):
    return CliRunner().invoke(main, ["synth", *map(str, args)])


def golden_args(path):
    """A golden .npz is a valid tokens, voice and noise file."""
    return ["--tokens", path, "--voice", path, "--noise", path]


@pytest.fixture
def small_inputs(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "tokens.txt").write_text("12, 345, 6000 7")
    voice = Voice.validated(rng.integers(0, 6561, 3), rng.standard_normal((6, 80)).astype(np.float32),
                            rng.standard_normal(192).astype(np.float32))
    save_voice(voice, tmp_path / "voice.npz")
    return tmp_path / "tokens.txt", tmp_path / "voice.npz", voice


def check_golden_npz(out, golden_file):
    g, o = np.load(golden_file), np.load(out)
    assert o["mel"].shape == (1, 80, 70) and o["wav"].shape == (1, 33600)
    assert np.abs(o["mel"] - g["mel"]).max() < 1e-3
    assert np.abs(o["wav"] - g["wav"]).max() < 2e-3


def test_synth_artifacts_reproduces_golden(exported, golden, tmp_path):
    # meanflow: 2 estimator calls; the standard golden goes through the same code in test_pipeline
    path = golden(GOLDEN["meanflow"])
    result = synth("--artifacts", exported("meanflow"), *golden_args(path), "--out", tmp_path / "out.npz")
    assert result.exit_code == 0, result.output
    assert "solver meanflow, 2 steps, cfg_rate 0" in result.stdout
    assert "(meanflow, fp32, onnxruntime [CPUExecutionProvider])" in result.stdout   # the backend used
    assert re.search(r"estimator [\d.]+ s \(2 calls\)", result.stdout)
    assert re.search(r"audio 1\.40 s, RTF [\d.]+ \(synthesis seconds / audio seconds\)", result.stdout)
    check_golden_npz(tmp_path / "out.npz", path)


def test_synth_checkpoint_runs_the_reference(synthetic_checkpoint, golden, tmp_path):
    path = golden(GOLDEN["meanflow"])
    result = synth("--checkpoint", synthetic_checkpoint("meanflow"), *golden_args(path), "--out", tmp_path / "out.npz")
    assert result.exit_code == 0, result.output
    assert "eager torch reference" in result.stdout and "solver meanflow, 2 steps" in result.stdout
    assert re.search(r"RTF [\d.]+", result.stdout)
    check_golden_npz(tmp_path / "out.npz", path)


def test_synth_wav_with_seed_and_overrides(exported, small_inputs, tmp_path):
    tokens, voice_file, voice = small_inputs
    out = tmp_path / "out.wav"
    result = synth("--artifacts", exported("standard"), "--tokens", tokens, "--voice", voice_file, "--seed", 5,
                   "--solver", "dpmpp2m", "--steps", 2, "--cfg-rate", 0, "--out", out)
    assert result.exit_code == 0, result.output
    assert "solver dpmpp2m, 2 steps, cfg_rate 0" in result.stdout and "noise: seed 5" in result.stdout
    assert "(2 calls)" in result.stdout and f"wrote {out}" in result.stdout
    wav, rate = read_wav(out)
    assert rate == 24000 and wav.shape == (960 * 4,)
    expected = S3GenRuntime(exported("standard")).synthesize([12, 345, 6000, 7], voice, seed=5, solver="dpmpp2m",
                                                              steps=2, cfg_rate=0.0)
    assert np.abs(wav - expected.wav).max() <= 1.0 / 32767   # 16-bit PCM rounding only


def test_synth_threads_reach_every_session(exported, small_inputs, tmp_path, monkeypatch):
    import s3gen_runtime.pipeline as pipeline

    opened = []

    def spy(*args, **options):
        runner = open_runner(*args, **options)
        opened.append(runner)
        return runner

    monkeypatch.setattr(pipeline, "open_runner", spy)
    tokens, voice_file, _ = small_inputs
    result = synth("--artifacts", exported("meanflow"), "--backend", "onnxruntime", "--threads", 1, "--tokens", tokens,
                   "--voice", voice_file, "--seed", 2, "--out", tmp_path / "o.wav")
    assert result.exit_code == 0, result.output
    assert "onnxruntime [CPUExecutionProvider], 1 intra-op threads)" in result.stdout
    assert len(opened) == 3
    assert all(r._session.get_session_options().intra_op_num_threads == 1 for r in opened)


def test_synth_backend_without_its_libraries_is_one_line(exported, small_inputs, tmp_path):
    import onnxruntime

    tokens, voice_file, _ = small_inputs
    common = ["--tokens", tokens, "--voice", voice_file, "--seed", 2, "--out", tmp_path / "o.wav"]
    result = synth("--artifacts", exported("meanflow"), "--backend", "onnxruntime-cuda", *common)
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert result.exit_code == 0, result.output
        assert "onnxruntime-cuda [CUDAExecutionProvider" in result.stdout
    else:
        assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
        assert "the onnxruntime-cuda backend needs ONNX Runtime with CUDA" in result.stderr
    # These artifacts have no engines, so TensorRT refuses them with or without the library.
    result = synth("--artifacts", exported("meanflow"), "--backend", "tensorrt", *common)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith("error: ")


@pytest.mark.parametrize("option,value,message", [
    ("--backend", "openvino", "'openvino' is not one of 'onnxruntime', 'onnxruntime-cuda', 'tensorrt'"),
    ("--threads", "0", "0 is not in the range x>=1"),
])
def test_synth_bad_backend_options_exit_2(exported, small_inputs, tmp_path, option, value, message):
    tokens, voice_file, _ = small_inputs
    result = synth("--artifacts", exported("meanflow"), option, value, "--tokens", tokens, "--voice", voice_file,
                   "--out", tmp_path / "o.wav")
    assert result.exit_code == 2 and message in result.stderr, result.output


@pytest.mark.parametrize("text,message", [
    ("1 2 7000", "tokens: 1 id(s) outside the vocabulary range [0, 6561): 7000 at index 2"),
    ("1 two 3", "word 1 is 'two', not an integer token id"),
    ("", "tokens are empty"),
])
def test_bad_token_file_exits_1(exported, small_inputs, tmp_path, text, message):
    _, voice_file, _ = small_inputs
    bad = tmp_path / "bad.txt"
    bad.write_text(text)
    out = tmp_path / "out.wav"
    result = synth("--artifacts", exported("meanflow"), "--tokens", bad, "--voice", voice_file, "--out", out)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert not out.exists()


def test_usage_errors_exit_1(exported, synthetic_checkpoint, small_inputs, tmp_path):
    tokens, voice_file, _ = small_inputs
    common = ["--tokens", tokens, "--voice", voice_file, "--out", tmp_path / "o.wav"]
    cases = [
        ([*common], "give exactly one of --artifacts DIR or --checkpoint CKPT"),
        (["--artifacts", exported("meanflow"), "--checkpoint", tmp_path / "c.safetensors", *common],
         "give exactly one of"),
        (["--artifacts", exported("meanflow"), "--precision", "int8", *common], "re-export with --int8"),
        (["--artifacts", exported("meanflow"), "--solver", "euler", *common],
         "meanflow artifacts run only the 'meanflow' solver"),
        (["--artifacts", tmp_path / "nowhere", *common], "no manifest.json in"),
        (["--artifacts", exported("meanflow"), "--tokens", tokens, "--voice", tmp_path / "none.npz",
          "--out", tmp_path / "o.wav"], "voice file not found"),
        (["--checkpoint", tmp_path / "c.safetensors", "--solver", "heun", *common],
         "--checkpoint runs upstream's solver only"),
        (["--checkpoint", tmp_path / "c.safetensors", "--threads", "2", *common],
         "--backend and --threads choose how --artifacts run"),
        # The reference resolves its setting with the runtime's resolve_settings: the same checks.
        (["--checkpoint", synthetic_checkpoint("meanflow"), "--cfg-rate", "-1", *common],
         "cfg_rate must be finite and >= 0"),
        (["--checkpoint", synthetic_checkpoint("meanflow"), "--cfg-rate", "0.7", *common],
         "have no guided estimator: cfg_rate must be 0"),
        (["--checkpoint", synthetic_checkpoint("meanflow"), "--solver", "euler", *common],
         "run only the 'meanflow' solver"),
    ]
    for args, message in cases:
        result = synth(*args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr, (args, result.stderr)


def test_synth_stream_prints_latencies_and_writes_the_whole_stream(exported, small_inputs, tmp_path):
    _, voice_file, _ = small_inputs
    tokens = tmp_path / "twelve.txt"
    tokens.write_text(" ".join(str(t) for t in range(100, 124)))
    out = tmp_path / "stream.wav"
    result = synth("--artifacts", exported("standard"), "--tokens", tokens, "--voice", voice_file, "--seed", 3,
                   "--steps", 1, "--cfg-rate", 0, "--stream", "--first-chunk-tokens", 10, "--chunk-tokens", 3,
                   "--out", out)
    assert result.exit_code == 0, result.output
    assert re.search(r"chunk 0: .* from 10 tokens at [0-9.]+ s", result.stdout)
    assert "chunk 2:" in result.stdout and re.search(r"time to first audio [0-9.]+ s, total [0-9.]+ s", result.stdout)
    wav, _ = read_wav(out)
    assert wav.shape == (960 * 24,)   # chunks at 10, 13, 24 tokens (the rest, 11, is within 4 x 12)


@pytest.mark.parametrize("args,message", [(["--stream", "--first-chunk-tokens", 2], "first_chunk_tokens"),
                                          (["--chunk-tokens", 5], "need --stream")])
def test_synth_stream_bad_options(exported, small_inputs, tmp_path, args, message):
    tokens, voice_file, _ = small_inputs
    result = synth("--artifacts", exported("standard"), "--tokens", tokens, "--voice", voice_file, *args,
                   "--out", tmp_path / "x.wav")
    assert result.exit_code == 1 and message in result.output

"""The ONNX Runtime backend: graphs checked against the manifest at open, feeds checked before a run."""
from dataclasses import replace

import numpy as np
import pytest

from s3gen_runtime import backends
from s3gen_runtime.backends import known_backends, open_runner, register_backend
from s3gen_runtime.backends.base import Runner
from s3gen_runtime.backends.onnxruntime import OnnxRuntimeRunner
from s3gen_runtime.errors import ArtifactError, InputError
from s3gen_runtime.manifest import TensorSpec, load_manifest


@pytest.fixture(scope="module")
def artifacts(exported):
    folder = exported("standard")
    return folder, load_manifest(folder, verify=False)   # hashes are the pipeline tests' business


@pytest.fixture(scope="module")
def vocoder(artifacts):
    """The smallest graph: enough to exercise every runner check."""
    folder, manifest = artifacts
    return open_runner(folder, manifest, "vocoder")


def vocoder_feeds(frames=(4, 2)):
    rng = np.random.default_rng(0)
    b, f = len(frames), max(frames)
    return {
        "mel": (rng.standard_normal((b, 80, f)) - 5.0).astype(np.float32),
        "mel_lengths": np.array(frames, dtype=np.int64),
        "sine_phase": np.zeros((b, 9, 1), dtype=np.float32),
        "sine_noise": rng.standard_normal((b, 9, 480 * f)).astype(np.float32),
    }


def test_runner_matches_manifest_and_runs(vocoder, artifacts):
    _, manifest = artifacts
    assert isinstance(vocoder, OnnxRuntimeRunner) and isinstance(vocoder, Runner)
    spec = manifest.component("vocoder")
    assert vocoder.input_names == [s.name for s in spec.inputs] == ["mel", "mel_lengths", "sine_phase", "sine_noise"]
    assert vocoder.output_names == ["wav", "f0"]
    assert vocoder.providers == ["CPUExecutionProvider"]
    out = vocoder.run(vocoder_feeds())
    assert set(out) == {"wav", "f0"}
    assert out["wav"].shape == (2, 1920) and out["f0"].shape == (2, 4)
    assert np.all(out["wav"][1, 960:] == 0.0)   # the graph zeroes each row past its length
    only = vocoder.run(vocoder_feeds(), ["f0"])
    assert list(only) == ["f0"] and np.array_equal(only["f0"], out["f0"])


def _count_runs(monkeypatch, runner):
    calls = []
    original = runner._run
    monkeypatch.setattr(runner, "_run", lambda feeds, outputs: calls.append(1) or original(feeds, outputs))
    return calls


def _feeds_with(change):
    feeds = vocoder_feeds()
    change(feeds)
    return feeds


BAD_FEEDS = {
    "float64 mel": (lambda f: f.update(mel=f["mel"].astype(np.float64)), "'mel' must be float32, got float64"),
    "int32 lengths": (lambda f: f.update(mel_lengths=f["mel_lengths"].astype(np.int32)), "must be int64"),
    "rank": (lambda f: f.update(mel=f["mel"][0]), "must have rank 3"),
    "fixed size": (lambda f: f.update(mel=np.zeros((2, 81, 4), np.float32)), "axis 1 must be 80"),
    "missing": (lambda f: f.pop("sine_phase"), "missing ['sine_phase']"),
    "unknown": (lambda f: f.update(r=np.zeros(2, np.float32)), "unknown ['r']"),
    "batch mismatch": (lambda f: f.update(mel_lengths=np.array([4], np.int64)), "axis 'batch' is 2 in 'mel' but 1"),
    "empty": (lambda f: f.update(mel=np.zeros((2, 80, 0), np.float32)), "axis 2 is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_FEEDS))
def test_bad_feeds_refused_before_running(vocoder, monkeypatch, case):
    change, message = BAD_FEEDS[case]
    calls = _count_runs(monkeypatch, vocoder)
    with pytest.raises(InputError, match="vocoder") as e:
        vocoder.run(_feeds_with(change))
    assert message in str(e.value)
    assert not calls


def test_unknown_output_refused(vocoder, monkeypatch):
    calls = _count_runs(monkeypatch, vocoder)
    with pytest.raises(InputError, match=r"requested outputs \['audio'\]; this graph has \['wav', 'f0'\]"):
        vocoder.run(vocoder_feeds(), ["audio"])
    assert not calls


def test_metadata_must_match_manifest(artifacts):
    folder, manifest = artifacts
    record = manifest.component("vocoder")
    with pytest.raises(ArtifactError) as e:
        OnnxRuntimeRunner(folder / "vocoder.onnx", replace(record, spec_hash="0123456789abcdef"))
    assert f"s3gen.spec_hash is '{record.spec_hash}', the manifest expects '0123456789abcdef'" in str(e.value)
    # the vocoder's file under the encoder's name: metadata says which graph it really is
    with pytest.raises(ArtifactError, match="s3gen.component is 'vocoder', the manifest expects 'encoder'"):
        OnnxRuntimeRunner(folder / "vocoder.onnx", record, name="encoder")
    # artifacts from another checkpoint or variant
    other = replace(manifest, checkpoint=replace(manifest.checkpoint, sha256="f" * 64, variant="meanflow"))
    with pytest.raises(ArtifactError) as e:
        open_runner(folder, other, "vocoder")
    assert "s3gen.checkpoint_sha256" in str(e.value) and "s3gen.variant is 'standard'" in str(e.value)


def test_graph_io_must_match_manifest(artifacts):
    folder, manifest = artifacts
    record = manifest.component("vocoder")
    half = replace(record, inputs=(replace(record.inputs[0], dtype="float16"),) + record.inputs[1:])
    with pytest.raises(ArtifactError, match="input 'mel' is float32 in the graph but float16 in the manifest"):
        OnnxRuntimeRunner(folder / "vocoder.onnx", half)
    renamed = replace(record, outputs=(TensorSpec("audio", "float32", ("batch", "samples")), record.outputs[1]))
    with pytest.raises(ArtifactError, match=r"graph outputs are \['wav', 'f0'\] but the manifest records \['audio', 'f0'\]"):
        OnnxRuntimeRunner(folder / "vocoder.onnx", renamed)
    wide = replace(record, inputs=(TensorSpec("mel", "float32", ("batch", 100, "mel_frames")),) + record.inputs[1:])
    with pytest.raises(ArtifactError, match="input 'mel' axis 1 is 80 in the graph but 100 in the manifest"):
        OnnxRuntimeRunner(folder / "vocoder.onnx", wide)


def test_missing_graph_file(artifacts, tmp_path):
    _, manifest = artifacts
    with pytest.raises(ArtifactError, match="missing"):
        OnnxRuntimeRunner(tmp_path / "vocoder.onnx", manifest.component("vocoder"))


def test_unknown_component_backend_and_options(artifacts):
    folder, manifest = artifacts
    with pytest.raises(ArtifactError, match="no component 'decoder'.*available: encoder, estimator, estimator_cfg, speaker_encoder, tokenizer, vocoder"):
        open_runner(folder, manifest, "decoder")
    with pytest.raises(InputError, match="unknown backend 'openvino'; known backends: .*onnxruntime"):
        open_runner(folder, manifest, "vocoder", backend="openvino")
    with pytest.raises(InputError, match=r"unknown onnxruntime backend option\(s\) \['threads'\]"):
        open_runner(folder, manifest, "vocoder", threads=2)
    with pytest.raises(InputError, match=r"providers \['NoSuchExecutionProvider'\] are not available"):
        open_runner(folder, manifest, "vocoder", providers=["NoSuchExecutionProvider"])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="intra_op_threads must be an integer >= 1"):
            open_runner(folder, manifest, "vocoder", intra_op_threads=bad)


def test_intra_op_threads_gives_same_result(artifacts, vocoder):
    folder, manifest = artifacts
    single = open_runner(folder, manifest, "vocoder", intra_op_threads=1)
    a, b = single.run(vocoder_feeds())["wav"], vocoder.run(vocoder_feeds())["wav"]
    assert np.abs(a - b).max() < 1e-5   # measured ~0 : only the thread split differs


def test_session_options_reach_the_session_and_keep_results(artifacts, vocoder):
    folder, manifest = artifacts
    lean = open_runner(folder, manifest, "vocoder", allow_spinning=False, memory_arena=False)
    options = lean._session.get_session_options()
    assert options.enable_cpu_mem_arena is False
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert vocoder._session.get_session_options().enable_cpu_mem_arena is True
    shrinking = vocoder._run_options.get_run_config_entry("memory.enable_memory_arena_shrinkage")
    assert shrinking == "cpu:0"   # the default: a long request's peak goes back to the OS
    kept = open_runner(folder, manifest, "vocoder", arena_shrinkage=False)
    with pytest.raises(RuntimeError):
        kept._run_options.get_run_config_entry("memory.enable_memory_arena_shrinkage")
    for runner in (lean, kept):
        assert np.abs(runner.run(vocoder_feeds())["wav"] - vocoder.run(vocoder_feeds())["wav"]).max() < 1e-5
    for key in ("allow_spinning", "memory_arena", "arena_shrinkage"):
        with pytest.raises(InputError, match=f"{key} must be True or False, got 1"):
            open_runner(folder, manifest, "vocoder", **{key: 1})


def test_graph_is_verified_as_it_is_opened(artifacts, tmp_path):
    folder, manifest = artifacts
    (tmp_path / "vocoder.onnx").write_bytes((folder / "vocoder.onnx").read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="components.vocoder: file vocoder.onnx is tampered or corrupt"):
        open_runner(tmp_path, manifest, "vocoder")


def test_registry_is_extensible(artifacts, monkeypatch):
    folder, manifest = artifacts
    monkeypatch.setattr(backends, "_BACKENDS", dict(backends._BACKENDS))   # the real registry comes back after
    register_backend("ort-alias", "s3gen_runtime.backends.onnxruntime", "open_onnxruntime")
    assert {"onnxruntime", "ort-alias"} <= set(known_backends())
    assert isinstance(open_runner(folder, manifest, "vocoder", backend="ort-alias"), OnnxRuntimeRunner)
    with pytest.raises(InputError, match="backend name must be a non-empty string"):
        register_backend("", "some.module", "factory")

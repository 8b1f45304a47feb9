"""The engine build end to end through the simulated CUDA runtime and TensorRT of tests/fake_cuda.py
and tests/fake_tensorrt.py (an engine there is an ONNX graph executed by ONNX Runtime): profiles,
file names, the timing cache, validation, the manifest records and the runtime runner, without a
GPU. Tests marked `gpu` build real engines and skip cleanly where there is no TensorRT or CUDA."""
from __future__ import annotations

import re
import sys

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import fake_cuda
import fake_tensorrt
from s3gen_export.engines import (
    EngineBuildError,
    build_engines,
    build_serialized_engine,
    fp32_layer_names,
    random_feeds,
)
from s3gen_runtime.backends import gpu
from s3gen_runtime.backends.tensorrt.compat import trt_logger
from s3gen_runtime.backends.tensorrt.bucketed import open_tensorrt
from s3gen_runtime.backends.tensorrt.compat import TensorRTUnavailableError
from s3gen_runtime.errors import EngineMismatchError, InputError
from s3gen_runtime.manifest import Manifest, load_manifest, write_manifest


# ================================================================ building (simulated GPU)

@pytest.fixture
def fake_trt(monkeypatch):
    """make(version, weak_typing, devices) -> (cuda, trt): a simulated GPU and TensorRT."""
    def make(version="10.3.0", weak_typing=True, devices=1, layer_metadata=True):
        cuda = fake_cuda.FakeCuda(devices=devices)
        trt = fake_tensorrt.make_fake_trt(cuda, version, weak_typing, layer_metadata)
        gpu.use_bindings(cuda)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return cuda, trt

    yield make
    gpu.use_bindings(None)


@pytest.fixture
def small_artifacts(standard, tmp_path):
    """A copy of the standard artifacts (graphs linked) with tiny buckets, so builds validate fast."""
    src, manifest = standard

    def make(graphs=("vocoder",), buckets=(("mel2", 2), ("mel4", 4))):
        data = manifest.to_dict()
        data["components"] = {g: data["components"][g] for g in graphs}
        data["buckets"] = [{"name": n, "mel_frames": f} for n, f in buckets]
        data["engines"] = []
        folder = tmp_path / "art"
        folder.mkdir()
        for g in graphs:
            (folder / data["components"][g]["file"]).symlink_to(src / data["components"][g]["file"])
        write_manifest(folder, Manifest.from_dict(data))
        return folder

    return make


def test_build_engines_without_tensorrt_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTUnavailableError, match=r"TensorRT is not installed: pip install 's3gen-aot\[tensorrt\]'"):
        build_engines(tmp_path, "fp16")


def test_build_engines_checks_its_arguments_first(tmp_path):
    with pytest.raises(InputError, match="precision must be one of fp32, fp16, bf16"):
        build_engines(tmp_path, "int8")
    with pytest.raises(InputError, match="min_batch <= opt_batch <= max_batch"):
        build_engines(tmp_path, "fp16", min_batch=4, max_batch=2)


def test_build_engines_without_a_gpu(fake_trt, tmp_path):
    fake_trt(devices=0)
    with pytest.raises(TensorRTUnavailableError, match="no CUDA GPU"):
        build_engines(tmp_path, "fp16")


def test_the_parser_refuses_float64_as_tensorrt_does(fake_trt):
    """TensorRT has no float64: a graph with one (the vocoder's phase sum once was) cannot be built."""
    _, trt = fake_trt()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["x64"], name="to_double", to=TensorProto.DOUBLE),
                               helper.make_node("CumSum", ["x64", "axis"], ["c64"], name="phase_sum"),
                               helper.make_node("Cast", ["c64"], ["y"], name="to_float", to=TensorProto.FLOAT)],
                              "g", [x], [y], initializer=[helper.make_tensor("axis", TensorProto.INT64, [], [0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    builder = trt.Builder(trt_logger(trt))
    with pytest.raises(EngineBuildError, match=r"could not parse the graph: In node 'to_double' \(Cast\): DOUBLE"):
        build_serialized_engine(trt, builder, model.SerializeToString(), {"x": ((1,), (4,), (8,))}, "fp32",
                                strongly_typed=False)
    assert trt.builds == []


def test_fused_attention_reaches_tensorrt_as_standard_ops(fake_trt, standard):
    """The exported estimator holds com.microsoft.MultiHeadAttention (each in an If: mask-free when no key
    is padding, masked otherwise), which TensorRT's parser refuses; the graph the builder gives it has
    neither left, and it parses."""
    import onnx

    from s3gen_export.engines.build import load_for_tensorrt

    from s3gen_export.engines.profiles import plan_profiles
    from s3gen_runtime.buckets import Bucket

    _, trt = fake_trt()
    folder, manifest = standard
    fused = onnx.load(str(folder / "estimator_cfg.onnx"), load_external_data=False)
    branches = [a.g.node[0] for n in fused.graph.node if n.op_type == "If" for a in n.attribute]
    assert len(branches) == 2 * 56 and all(b.op_type == "MultiHeadAttention" for b in branches)
    builder = trt.Builder(trt_logger(trt))
    profile = plan_profiles(manifest.component("estimator_cfg"), Bucket("mel256", 256), None)
    with pytest.raises(EngineBuildError, match="no importer registered for op: MultiHeadAttention"):
        build_serialized_engine(trt, builder, fused.SerializeToString(), profile, "fp32", strongly_typed=False)
    portable = load_for_tensorrt(folder / "estimator_cfg.onnx")
    assert {n.domain for n in portable.graph.node} <= {"", "ai.onnx"}
    assert not any(n.op_type == "If" for n in portable.graph.node)
    assert sum(n.op_type == "Softmax" for n in portable.graph.node) == 56
    build_serialized_engine(trt, builder, portable.SerializeToString(), profile, "fp32", strongly_typed=False)


def test_build_engines_end_to_end(fake_trt, small_artifacts, standard):
    cuda, trt = fake_trt()
    folder = small_artifacts()
    lines = []
    built = build_engines(folder, "fp32", max_batch=2, progress=lines.append)
    manifest = load_manifest(folder, verify=True)
    assert [e.bucket for e in manifest.engines] == ["mel2", "mel4"] and list(built) == list(manifest.engines)
    assert manifest.versions.tensorrt == "10.3.0"
    small, big = manifest.engines
    assert small.file == "engines/vocoder.mel2.fp32.sm90.engine" and (folder / small.file).is_file()
    assert (small.graph, small.precision, small.tensorrt, small.compute_capability, small.gpu) == (
        "vocoder", "fp32", "10.3.0", "9.0", "NVIDIA H100 80GB HBM3")
    assert (small.min_batch, small.max_batch) == (1, 2)
    assert small.build_options["profile"]["mel"] == {"min": [1, 80, 1], "opt": [1, 80, 2], "max": [2, 80, 2]}
    assert big.build_options["profile"]["sine_noise"]["min"] == [1, 9, 480 * 3]
    assert (small.build_options["frames_range"], big.build_options["frames_range"]) == ([1, 2], [3, 4])
    assert small.build_options["onnx_sha256"] == manifest.component("vocoder").sha256
    assert small.validation["passed"] and [c["name"] for c in small.validation["cases"]] == ["min", "opt", "max"]
    assert "onnxruntime fp32" in small.validation["reference"]
    assert "TF32" not in trt.builds[0]["flags"]   # fp32 engines compute in true fp32
    assert (folder / "engines" / "timing.sm90.trt10.3.0.cache").is_file()
    assert re.fullmatch(r"\[1/2\] vocoder mel2 fp32 \.\.\. \d+\.\d s \(min .* dB, opt .* dB, max .* dB\)", lines[1])
    assert lines[2].startswith("[2/2] vocoder mel4 fp32 ... ")

    # the runtime runs them: each call goes to the bucket that holds it
    runner = open_tensorrt(folder, manifest, "vocoder")
    component = manifest.component("vocoder")
    session = ort.InferenceSession(str(folder / "vocoder.onnx"), providers=["CPUExecutionProvider"])
    for frames in (1, 3):
        shapes = {"mel": (2, 80, frames), "mel_lengths": (2,), "sine_phase": (2, 9, 1), "sine_noise": (2, 9, 480 * frames)}
        feeds = random_feeds(component, shapes, np.random.default_rng(frames))
        np.testing.assert_allclose(runner.run(feeds)["wav"], session.run(["wav"], feeds)[0], atol=1e-6)
    runner.close()

    # a second build reuses the timing cache and replaces the records (no duplicates)
    lines.clear()
    build_engines(folder, "fp32", max_batch=2, buckets=["mel4"], progress=lines.append)
    assert any("reusing timing cache" in line for line in lines)
    again = load_manifest(folder)
    assert [e.bucket for e in again.engines] == ["mel2", "mel4"]
    assert again.engines[1].build_options["frames_range"] == [1, 4]   # built alone: covers 1..4


def test_build_engines_fp16_strongly_typed_on_tensorrt_11(fake_trt, small_artifacts):
    _, trt = fake_trt(version="11.4.0", weak_typing=False)
    folder = small_artifacts()
    with pytest.raises(EngineBuildError, match="--strongly-typed"):
        build_engines(folder, "fp16", strongly_typed=False, progress=lambda m: None)
    build_engines(folder, "fp16", buckets=["mel4"], max_batch=1, progress=lambda m: None)
    (engine,) = load_manifest(folder).engines
    assert engine.build_options["strongly_typed"] is True and engine.file.endswith("vocoder.mel4.fp16.sm90.engine")
    assert trt.builds[-1]["network_flags"] == 1 << 5 and trt.builds[-1]["pinned"] == []
    snr = [c["snr_db"]["wav"] for c in engine.validation["cases"]]
    assert engine.validation["passed"] and min(snr) >= 25.0 and max(snr) < 200   # really ran in fp16


def test_build_engines_fp16_weakly_typed_pins_fp32_layers(fake_trt, small_artifacts, protos):
    _, trt = fake_trt(version="10.3.0", weak_typing=True)
    folder = small_artifacts()
    build_engines(folder, "fp16", buckets=["mel4"], max_batch=1, progress=lambda m: None)
    (engine,) = load_manifest(folder).engines
    build = trt.builds[-1]
    assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= build["flags"] and build["network_flags"] == 0
    keep = fp32_layer_names(protos("standard", "vocoder"))
    assert set(build["pinned"]) == set(keep)
    assert engine.build_options["fp32_trt_layers_pinned"] == len(keep) == engine.build_options["fp32_layers"]
    assert engine.build_options["strongly_typed"] is False


def test_build_engines_fails_on_a_tolerance_miss(fake_trt, small_artifacts):
    _, trt = fake_trt()
    folder = small_artifacts()
    build_engines(folder, "fp32", buckets=["mel2"], progress=lambda m: None)
    (before,) = load_manifest(folder).engines
    trt.perturb = 0.5   # a rebuild whose engines are wrong
    lines = []
    with pytest.raises(EngineBuildError, match="2 of 2 engine\\(s\\) failed"):
        build_engines(folder, "fp32", progress=lines.append)
    assert sum("FAIL" in line for line in lines) == 2
    assert load_manifest(folder, verify=True).engines == (before,)   # the engine that passed before is intact
    assert sorted(p.name for p in (folder / "engines").iterdir() if "engine" in p.name) == [
        "vocoder.mel2.fp32.sm90.engine"]
    trt.perturb, trt.garbage = 0.0, True   # an engine TensorRT cannot even load
    with pytest.raises(EngineBuildError, match="could not deserialise"):
        build_engines(folder, "fp32", buckets=["mel4"], progress=lambda m: None)


def test_foreign_engine_built_elsewhere_is_refused_at_load(fake_trt, small_artifacts):
    fake_trt()
    folder = small_artifacts()
    build_engines(folder, "fp32", buckets=["mel4"], progress=lambda m: None)
    manifest = load_manifest(folder)
    fake_trt(version="10.5.0")   # the same artifacts on a machine with another TensorRT
    with pytest.raises(EngineMismatchError, match="rebuild for this GPU: s3gen-aot build-engines .* --precision fp32"):
        open_tensorrt(folder, manifest, "vocoder").run(random_feeds(
            manifest.component("vocoder"), {"mel": (1, 80, 4), "mel_lengths": (1,), "sine_phase": (1, 9, 1),
                                            "sine_noise": (1, 9, 1920)}, np.random.default_rng(0)))


@pytest.mark.slow
def test_pipeline_on_tensorrt_engines_matches_onnxruntime(fake_trt, small_artifacts, monkeypatch):
    """S3GenRuntime with backend='tensorrt' (simulated engines of every graph, two buckets) gives
    what the ONNX Runtime backend gives: each graph call lands in the engine of its own bucket."""
    from s3gen_runtime import backends
    from s3gen_runtime.pipeline import Request, S3GenRuntime
    from s3gen_runtime.voice import Voice
    fake_trt()
    monkeypatch.setitem(backends._BACKENDS, "tensorrt", ("s3gen_runtime.backends.tensorrt.bucketed", "open_tensorrt"))
    folder = small_artifacts(graphs=("encoder", "estimator_cfg", "estimator", "vocoder"),
                             buckets=(("mel16", 16), ("mel32", 32)))
    build_engines(folder, "fp32", max_batch=2, progress=lambda m: None)
    rng = np.random.default_rng(0)

    def voice(p):
        return Voice.validated(rng.integers(0, 6561, p), (rng.standard_normal((2 * p, 80)) * 2 - 5).astype(np.float32),
                               rng.standard_normal(192).astype(np.float32))

    requests = [Request(rng.integers(0, 6561, 9), voice(5), seed=1), Request(rng.integers(0, 6561, 3), voice(2), seed=2)]
    on_trt = S3GenRuntime(folder, backend="tensorrt", engine_precision="fp32")
    on_ort = S3GenRuntime(folder)
    for solver_args in ({"steps": 2}, {"steps": 2, "cfg_rate": 0.0}):
        got = on_trt.synthesize_batch(requests, **solver_args)
        want = on_ort.synthesize_batch(requests, **solver_args)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.mel, w.mel, atol=1e-5)
            np.testing.assert_allclose(g.wav, w.wav, atol=1e-5)


# ================================================================ real GPU (skipped without one)

@pytest.mark.gpu
def test_gpu_build_small_engines_and_compare_with_onnxruntime(small_artifacts):
    fake_cuda.real_gpu_or_skip()
    folder = small_artifacts()
    for precision in ("fp32", "fp16"):
        build_engines(folder, precision, max_batch=2, progress=print)
    manifest = load_manifest(folder)
    assert len(manifest.engines) == 4 and all(e.validation["passed"] for e in manifest.engines)

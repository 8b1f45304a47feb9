"""The TensorRT backend: compatibility and freshness checks, engine selection, and the runners.

No GPU here: the runners are driven through the simulated CUDA runtime and TensorRT of
tests/fake_gpu.py, so every check, buffer, pool and graph-capture path runs for real.
Tests marked `gpu` run on a real GPU with TensorRT and skip cleanly elsewhere.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import TensorProto, helper

from s3gen_runtime import gpu
from s3gen_runtime.backends import tensorrt as trt_backend
from s3gen_runtime.backends.tensorrt import (
    BucketedTensorRTRunner,
    EngineMismatchWarning,
    TensorRTRunner,
    TensorRTUnavailableError,
    axis_sizes,
    bucket_frames,
    check_engine_compatible,
    check_engine_fresh,
    engines_for,
    open_tensorrt,
    parse_compute_capability,
    parse_version,
    select_engine,
    sm_tag,
)
from s3gen_runtime.errors import ArtifactError, BucketError, EngineMismatchError, InputError, S3GenError
from s3gen_runtime.manifest import Audio, Engine, Manifest, load_manifest, sha256_file, write_manifest

REPO = Path(__file__).resolve().parents[2]


# tests/fake_gpu.py: the simulated CUDA runtime and TensorRT (tests/ is on sys.path: conftest lives there)
import fake_gpu as fakes  # noqa: E402


@pytest.fixture
def fake_gpu(monkeypatch):
    """A simulated H100 with TensorRT 10.3: (cuda, trt)."""
    cuda = fakes.FakeCuda()
    trt = fakes.make_fake_trt(cuda)
    gpu._reset_for_tests(cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_backend, "_LOGGER", None)
    yield cuda, trt
    gpu._reset_for_tests(None)


# ================================================================ a tiny artifact folder with engines

def _vi(name, elem, dims):
    return helper.make_tensor_value_info(name, elem, dims)


def tiny_estimator_onnx() -> bytes:
    """velocity = 2 x + mu * mask + t (estimator-shaped I/O: x, mask, mu, t -> velocity)."""
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["x2"], name="node_mul_x"),
        helper.make_node("Mul", ["mu", "mask"], ["mm"], name="node_mul_mu"),
        helper.make_node("Add", ["x2", "mm"], ["s"], name="node_add_1"),
        helper.make_node("Unsqueeze", ["t", "axes"], ["t3"], name="node_unsqueeze_t"),
        helper.make_node("Add", ["s", "t3"], ["velocity"], name="node_add_t"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [_vi("x", TensorProto.FLOAT, ["batch", 80, "frames"]), _vi("mask", TensorProto.FLOAT, ["batch", 1, "frames"]),
         _vi("mu", TensorProto.FLOAT, ["batch", 80, "frames"]), _vi("t", TensorProto.FLOAT, ["batch"])],
        [_vi("velocity", TensorProto.FLOAT, ["batch", 80, "frames"])],
        initializer=[helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
                     helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def expected_velocity(feeds):
    return 2 * feeds["x"] + feeds["mu"] * feeds["mask"] + feeds["t"][:, None, None]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


BUCKETS = (("mel256", 256), ("mel512", 512), ("mel1024", 1024))


def engine_profile(prev, top, min_batch=1, max_batch=2):
    lo = prev + 1
    return {"x": ((min_batch, 80, lo), (1, 80, top), (max_batch, 80, top)),
            "mask": ((min_batch, 1, lo), (1, 1, top), (max_batch, 1, top)),
            "mu": ((min_batch, 80, lo), (1, 80, top), (max_batch, 80, top)),
            "t": ((min_batch,), (1,), (max_batch,))}


def engine_record(file, data, bucket, prev, top, onnx_sha, *, precision="fp16", trt="10.3.0", cc="9.0",
                  gpu_name="NVIDIA H100 80GB HBM3", min_batch=1, max_batch=2) -> dict:
    profile = engine_profile(prev, top, min_batch, max_batch)
    return {"file": file, "sha256": _sha(data), "graph": "estimator", "bucket": bucket, "precision": precision,
            "tensorrt": trt, "gpu": gpu_name, "compute_capability": cc, "min_batch": min_batch,
            "max_batch": max_batch,
            "build_options": {"onnx_sha256": onnx_sha, "frames_range": [prev + 1, top],
                              "profile": {n: {"min": list(a), "opt": list(b), "max": list(c)}
                                          for n, (a, b, c) in profile.items()}},
            "validation": None}


def write_tiny_artifacts(folder: Path, buckets=BUCKETS, precision="fp16", **record_options) -> Manifest:
    """An artifact folder with one tiny 'estimator' graph and one fake engine per bucket."""
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_estimator_onnx()
    (folder / "estimator.onnx").write_bytes(model)
    engines, prev = [], 0
    for name, top in buckets:
        data = fakes.fake_engine_bytes(model, engine_profile(prev, top, record_options.get("min_batch", 1),
                                                             record_options.get("max_batch", 2)))
        rel = f"engines/estimator.{name}.{precision}.sm90.engine"
        (folder / rel).parent.mkdir(exist_ok=True)
        (folder / rel).write_bytes(data)
        engines.append(engine_record(rel, data, name, prev, top, _sha(model), precision=precision, **record_options))
        prev = top
    spec = lambda name, shape: {"name": name, "dtype": "float32", "shape": shape}  # noqa: E731
    manifest = Manifest.from_dict({
        "schema_version": 1,
        "tool": {"name": "s3gen-aot", "version": "0.1.0"},
        "versions": {"python": "3.11", "torch": None, "onnx": None, "onnxruntime": None, "tensorrt": "10.3.0"},
        "checkpoint": {"file": "s3gen.safetensors", "sha256": _sha(b"ckpt"), "variant": "standard"},
        "audio": Audio.current().to_dict(),
        "defaults": {"solver": "euler", "steps": 10, "cfg_rate": 0.7},
        "buckets": [{"name": n, "mel_frames": f} for n, f in BUCKETS],
        "components": {"estimator": {
            "file": "estimator.onnx", "sha256": _sha(model), "format": "onnx", "precision": "fp32", "opset": 18,
            "spec_hash": "tiny",
            "inputs": [spec("x", ["batch", 80, "frames"]), spec("mask", ["batch", 1, "frames"]),
                       spec("mu", ["batch", 80, "frames"]), spec("t", ["batch"])],
            "outputs": [spec("velocity", ["batch", 80, "frames"])],
            "validation": {"passed": True, "cases": [],
                           "tolerance": {"velocity": {"atol": 1e-3, "rtol": 1e-3, "min_snr_db": None}}}}},
        "engines": engines,
        "tuning": None,
    })
    write_manifest(folder, manifest)
    return load_manifest(folder)


def feeds_for(frames: int, batch: int = 1, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, 1, frames), np.float32)
    mask[1:, :, frames // 2:] = 0.0
    return {"x": rng.standard_normal((batch, 80, frames)).astype(np.float32), "mask": mask,
            "mu": rng.standard_normal((batch, 80, frames)).astype(np.float32),
            "t": rng.uniform(0, 1, batch).astype(np.float32)}


@pytest.fixture
def tiny(tmp_path, fake_gpu):
    manifest = write_tiny_artifacts(tmp_path / "art")
    return tmp_path / "art", manifest


def record(manifest: Manifest, bucket: str) -> Engine:
    return next(e for e in manifest.engines if e.bucket == bucket)


# ================================================================ compatibility (pure)

def test_parse_version_and_compute_capability():
    assert parse_version("10.3.0") == (10, 3, 0)
    assert parse_version("10.3.0.26") == (10, 3, 0)
    assert parse_version("v11.4") == (11, 4)
    for value, want in (("9.0", (9, 0)), ("sm90", (9, 0)), ("sm_86", (8, 6)), ("80", (8, 0)), ((12, 0), (12, 0)),
                        ("sm100", (10, 0)), ("12.1", (12, 1))):
        assert parse_compute_capability(value) == want
    assert sm_tag("9.0") == "sm90" and sm_tag("10.0") == "sm100"
    with pytest.raises(ArtifactError):
        parse_compute_capability("hopper")
    with pytest.raises(ArtifactError):
        parse_version("")


def _engine(**changes) -> Engine:
    base = engine_record("engines/estimator.mel256.fp16.sm90.engine", b"x", "mel256", 0, 256, "0" * 64)
    base.update(changes)
    return Engine.from_dict(base, "engine")


def test_foreign_gpu_engine_is_refused_with_the_rebuild_command():
    foreign = _engine(compute_capability="8.0", tensorrt="10.0.1", gpu="NVIDIA A100-SXM4-80GB")
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10\.0\.1.*10\.3\.0") as e:
        check_engine_compatible(foreign, "10.3.0", "9.0", "NVIDIA H100 80GB HBM3", folder="/art")
    assert "rebuild for this GPU: s3gen-aot build-engines /art --precision fp16" in str(e.value)
    same_trt = _engine(compute_capability="8.0", gpu="NVIDIA A100-SXM4-80GB")
    with pytest.raises(EngineMismatchError, match=r"compute capability 8\.0.*9\.0") as e:
        check_engine_compatible(same_trt, "10.3.0", "9.0", "NVIDIA H100 80GB HBM3")
    assert "rebuild for this GPU: s3gen-aot build-engines DIR --precision fp16" in str(e.value)
    assert isinstance(e.value, ArtifactError) and isinstance(e.value, S3GenError)


def test_same_gpu_engine_is_accepted_and_another_name_only_warns():
    engine = _engine()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_engine_compatible(engine, "10.3.0", "9.0", "NVIDIA H100 80GB HBM3")
        check_engine_compatible(engine, "10.3.0.26", "sm90", "NVIDIA H100 80GB HBM3")   # build number only
    with pytest.warns(EngineMismatchWarning, match="NVIDIA H100 NVL"):
        check_engine_compatible(engine, "10.3.0", "9.0", "NVIDIA H100 NVL")
    with pytest.raises(EngineMismatchError):
        check_engine_compatible(engine, "10.4.0", "9.0", "NVIDIA H100 80GB HBM3")


def test_stale_engine_is_refused():
    engine = _engine(build_options={"onnx_sha256": "a" * 64})
    component = SimpleNamespace(sha256="b" * 64)
    with pytest.raises(EngineMismatchError, match="stale"):
        check_engine_fresh(engine, component)
    check_engine_fresh(engine, SimpleNamespace(sha256="a" * 64))
    with pytest.raises(ArtifactError, match="onnx_sha256"):
        check_engine_fresh(_engine(build_options={}), component)


# ================================================================ engine selection (pure)

def test_select_engine_picks_the_smallest_bucket_that_fits(tmp_path, fake_gpu):
    manifest = write_tiny_artifacts(tmp_path / "a")
    for frames, bucket in ((1, "mel256"), (256, "mel256"), (257, "mel512"), (512, "mel512"), (513, "mel1024"),
                           (1024, "mel1024")):
        assert select_engine(manifest, "estimator", frames, 1, "fp16").bucket == bucket
    assert select_engine(manifest, "estimator", 300, 2, "fp16", compute_capability="9.0").bucket == "mel512"
    with pytest.raises(BucketError, match="1025.*mel1024"):
        select_engine(manifest, "estimator", 1025, 1, "fp16")
    with pytest.raises(InputError, match="batch of 3.*1..2"):
        select_engine(manifest, "estimator", 100, 3, "fp16")
    with pytest.raises(ArtifactError, match="no fp32 TensorRT engine.*build-engines DIR --precision fp32"):
        select_engine(manifest, "estimator", 100, 1, "fp32")
    with pytest.raises(ArtifactError, match="compute capability 8.0"):
        select_engine(manifest, "estimator", 100, 1, "fp16", compute_capability="8.0")
    with pytest.raises(InputError):
        select_engine(manifest, "estimator", 0, 1, "fp16")
    with pytest.raises(InputError):
        select_engine(manifest, "estimator", 10, 1, "int8")
    assert [e.bucket for e in engines_for(manifest, "estimator", "fp16")] == ["mel256", "mel512", "mel1024"]


def test_select_engine_refuses_a_gap_between_engines(tmp_path, fake_gpu):
    manifest = write_tiny_artifacts(tmp_path / "a")
    data = manifest.to_dict()
    data["engines"] = [e for e in data["engines"] if e["bucket"] != "mel512"]   # mel1024 still starts at 513
    gapped = Manifest.from_dict(data)
    with pytest.raises(ArtifactError, match="513..1024"):
        select_engine(gapped, "estimator", 300, 1, "fp16")
    assert select_engine(gapped, "estimator", 600, 1, "fp16").bucket == "mel1024"


def test_bucket_frames_per_graph():
    assert bucket_frames({"batch": 2, "frames": 700}) == 700
    assert bucket_frames({"batch": 1, "mel_frames": 300, "samples": 144000}) == 300
    assert bucket_frames({"batch": 1, "tokens": 200, "prompt_tokens": 150, "prompt_frames": 300}) == 700
    with pytest.raises(InputError):
        bucket_frames({"batch": 1})
    component = SimpleNamespace(inputs=[SimpleNamespace(name="x", shape=("batch", 80, "frames")),
                                        SimpleNamespace(name="t", shape=("batch",))])
    assert axis_sizes(component, {"x": (2, 80, 33), "t": (2,)}) == {"batch": 2, "frames": 33}


# ================================================================ the manifest round trip

def test_engine_records_round_trip_through_the_strict_parser(tmp_path, fake_gpu):
    folder = tmp_path / "a"
    manifest = write_tiny_artifacts(folder)
    again = load_manifest(folder, verify=True)
    assert again.engines == manifest.engines
    assert again.engines[0].build_options["frames_range"] == [1, 256]
    text = (folder / "manifest.json").read_text()
    data = json.loads(text)
    data["engines"][0]["surprise"] = 1
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="unknown key engines\\[0\\].surprise"):
        load_manifest(folder)


# ================================================================ the single-engine runner

def test_runner_runs_the_engine_and_reuses_buffers(tiny, fake_gpu):
    folder, manifest = tiny
    cuda, trt = fake_gpu
    runner = TensorRTRunner(folder, record(manifest, "mel512"), manifest.component("estimator"), pool_size=1)
    assert runner.profile["x"] == ((1, 80, 257), (1, 80, 512), (2, 80, 512))
    feeds = feeds_for(300, batch=2)
    out = runner.run(feeds)
    np.testing.assert_allclose(out["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    mallocs = cuda.mallocs
    for frames in (300, 280, 300):   # same or smaller shapes: no new device memory
        feeds = feeds_for(frames, batch=2, seed=frames)
        np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    assert cuda.mallocs == mallocs
    feeds = feeds_for(500, batch=2)
    np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    assert cuda.mallocs > mallocs   # grew once for the longer shape
    runner.close()
    assert cuda.mem == {}   # every buffer freed


def test_runner_refuses_shapes_outside_the_bucket_profile(tiny):
    folder, manifest = tiny
    runner = TensorRTRunner(folder, record(manifest, "mel512"), manifest.component("estimator"))
    with pytest.raises(InputError, match=r"bucket mel512.*axis 'frames' is 600 but this engine takes 257..512"):
        runner.run(feeds_for(600))
    with pytest.raises(InputError, match=r"axis 'frames' is 100 but this engine takes 257..512"):
        runner.run(feeds_for(100))
    with pytest.raises(InputError, match=r"axis 'batch' is 3 but this engine takes 1..2"):
        runner.run(feeds_for(300, batch=3))
    with pytest.raises(InputError, match="must be float32"):
        runner.run({**feeds_for(300), "x": feeds_for(300)["x"].astype(np.float64)})


def test_tampered_engine_is_refused_before_deserialising(tiny, fake_gpu):
    folder, manifest = tiny
    _, trt = fake_gpu
    engine = record(manifest, "mel256")
    path = folder / engine.file
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with pytest.raises(ArtifactError, match="tampered or corrupt"):
        TensorRTRunner(folder, engine, manifest.component("estimator"))
    with pytest.raises(ArtifactError, match="tampered or corrupt"):
        load_manifest(folder)   # the manifest loader refuses it too
    path.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        TensorRTRunner(folder, engine, manifest.component("estimator"))
    assert trt.deserialized == 0


def test_foreign_engine_is_refused_before_deserialising(tmp_path, fake_gpu):
    _, trt = fake_gpu
    manifest = write_tiny_artifacts(tmp_path / "a", cc="8.0", trt="10.0.1", gpu_name="NVIDIA A100-SXM4-80GB")
    with pytest.raises(EngineMismatchError, match="rebuild for this GPU: s3gen-aot build-engines .* --precision fp16"):
        TensorRTRunner(tmp_path / "a", record(manifest, "mel256"), manifest.component("estimator"))
    assert trt.deserialized == 0
    with pytest.raises(ArtifactError, match="compute capability 9.0"):   # none for this GPU to choose from
        open_tensorrt(tmp_path / "a", manifest, "estimator", engine_precision="fp16")


def test_stale_engine_is_refused_by_the_runner(tiny, fake_gpu):
    folder, manifest = tiny
    data = manifest.to_dict()
    data["components"]["estimator"]["sha256"] = "c" * 64   # as if re-exported after the build
    with pytest.raises(EngineMismatchError, match="stale"):
        TensorRTRunner(folder, record(manifest, "mel256"), Manifest.from_dict(data).component("estimator"))


def test_runner_pool_serves_concurrent_callers(tiny, fake_gpu):
    folder, manifest = tiny
    cuda, trt = fake_gpu
    trt.delay = 0.01
    runner = TensorRTRunner(folder, record(manifest, "mel512"), manifest.component("estimator"), pool_size=2)
    errors, results = [], {}

    def worker(k):
        try:
            for j in range(4):
                feeds = feeds_for(260 + 10 * k + j, batch=1 + (k % 2), seed=k * 10 + j)
                out = runner.run(feeds)["velocity"]
                results[(k, j)] = np.max(np.abs(out - expected_velocity(feeds)))
        except Exception as e:   # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 24 and max(results.values()) < 1e-5
    assert trt.max_active == 2   # two contexts ran at once, never more
    assert cuda.streams == 2
    runner.close()


def test_cuda_graph_capture_and_replay(tiny, fake_gpu):
    folder, manifest = tiny
    cuda, trt = fake_gpu
    runner = TensorRTRunner(folder, record(manifest, "mel256"), manifest.component("estimator"), pool_size=1,
                            cuda_graph=True)
    for k in range(4):   # run, capture, replay, replay
        feeds = feeds_for(256, batch=2, seed=k)
        np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    assert cuda.instantiated == 1 and cuda.launches == 3 and trt.executions == 4
    feeds = feeds_for(200, batch=2)   # another shape: runs plainly and drops the graph
    np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    assert cuda.instantiated == 1 and cuda.launches == 3
    for k in range(3):   # back to 256: run, capture anew, replay
        feeds = feeds_for(256, batch=2, seed=10 + k)
        np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    assert cuda.instantiated == 2 and cuda.launches == 5 and trt.executions == 8
    runner.close()


def test_run_device_keeps_tensors_on_the_gpu(tiny, fake_gpu):
    folder, manifest = tiny
    runner = TensorRTRunner(folder, record(manifest, "mel512"), manifest.component("estimator"))
    feeds = feeds_for(300, batch=2)
    conditioning = {n: gpu.DeviceArray.from_host(feeds[n]) for n in ("mask", "mu")}   # uploaded once
    out_buffer = gpu.DeviceArray.empty((2, 80, 512), np.float32)
    for step in range(3):
        x = (feeds["x"] + step).astype(np.float32)
        t = np.full(2, 0.1 * step, np.float32)
        result = runner.run_device({"x": x, "t": t, **conditioning}, {"velocity": out_buffer})
        v = result["velocity"]
        assert v.shape == (2, 80, 300) and v.ptr == out_buffer.ptr
        np.testing.assert_allclose(v.to_host(), expected_velocity({**feeds, "x": x, "t": t}), rtol=1e-6, atol=1e-6)
    allocated = runner.run_device({"x": feeds["x"], "t": feeds["t"], **conditioning}, ["velocity"])["velocity"]
    np.testing.assert_allclose(allocated.to_host(), expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    allocated.close()
    np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    with pytest.raises(InputError, match="does not fit|must be a float32"):
        small = gpu.DeviceArray.empty((1, 80, 10), np.float32)
        runner.run_device({"x": feeds["x"], "t": feeds["t"], **conditioning}, {"velocity": small})
    with pytest.raises(InputError, match="feeds must be exactly"):
        runner.run_device({"x": feeds["x"]})
    runner.close()


# ================================================================ every bucket of one graph

def test_bucketed_runner_routes_each_call_to_its_bucket(tiny, fake_gpu):
    folder, manifest = tiny
    _, trt = fake_gpu
    runner = open_tensorrt(folder, manifest, "estimator")
    assert isinstance(runner, BucketedTensorRTRunner) and runner.engine_precision == "fp16"
    assert trt.deserialized == 0   # lazily, on first use
    for frames in (100, 256, 257, 700, 1024):
        feeds = feeds_for(frames, batch=2, seed=frames)
        np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    assert trt.deserialized == 3
    with pytest.raises(BucketError, match="1100"):
        runner.run(feeds_for(1100))
    with pytest.raises(InputError, match="batch of 3"):
        runner.run(feeds_for(100, batch=3))
    runner.close()
    with pytest.raises(InputError, match="engine precision"):
        open_tensorrt(folder, manifest, "estimator", engine_precision="int8")


# ================================================================ missing pieces

def test_missing_tensorrt_gives_the_install_command(tiny, monkeypatch):
    folder, manifest = tiny
    monkeypatch.setitem(sys.modules, "tensorrt", None)   # import tensorrt -> ImportError
    with pytest.raises(TensorRTUnavailableError, match=r"TensorRT is not installed: pip install 's3gen-aot\[tensorrt\]'"):
        TensorRTRunner(folder, record(manifest, "mel256"), manifest.component("estimator"))
    with pytest.raises(S3GenError, match="TensorRT is not installed"):
        open_tensorrt(folder, manifest, "estimator")


def test_no_gpu_is_a_clear_error(tiny, fake_gpu):
    folder, manifest = tiny
    cuda, _ = fake_gpu
    cuda.devices = 0
    assert gpu.device_count() == 0
    with pytest.raises(gpu.NoGpuError, match="no CUDA GPU"):
        TensorRTRunner(folder, record(manifest, "mel256"), manifest.component("estimator"))


def test_missing_cuda_python_gives_the_install_command(monkeypatch):
    gpu._reset_for_tests(None)
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(gpu.CudaError, match="s3gen-aot\\[tensorrt\\]"):
        gpu.device_count()
    gpu._reset_for_tests(None)


def test_gpu_helpers_on_the_simulated_runtime(fake_gpu):
    cuda, _ = fake_gpu
    assert gpu.device_count() == 1 and gpu.require_device(0) == 0
    assert gpu.compute_capability(0) == "9.0"
    assert gpu.device_name(0) == "NVIDIA H100 80GB HBM3"
    with pytest.raises(gpu.NoGpuError, match="device 3"):
        gpu.require_device(3)
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    d = gpu.DeviceArray.from_host(a, gpu.Stream())
    np.testing.assert_array_equal(d.to_host(), a)
    v = d.view((2, 3, 2))
    assert v.ptr == d.ptr and v.shape == (2, 3, 2)
    with pytest.raises(gpu.CudaError, match="does not fit"):
        d.view((3, 3, 4))
    cuda.fail_next = "malloc"
    with pytest.raises(gpu.CudaError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
        gpu.DeviceBuffer(16)
    d.close()
    assert cuda.mem == {}


def test_runtime_backend_imports_neither_torch_nor_tensorrt():
    code = ("import sys; import s3gen_runtime.backends.tensorrt, s3gen_runtime.backends.onnxruntime_cuda, "
            "s3gen_runtime.gpu; "
            "bad = [m for m in ('torch', 'tensorrt', 'cuda', 'onnxruntime') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


# ================================================================ ONNX Runtime on CUDA (IO binding)

def test_onnxruntime_cuda_runner_io_binding_on_cpu(tmp_path):
    """The IO-binding code path, exercised on the CPU provider (the same calls as on CUDA)."""
    import onnxruntime as ort
    from s3gen_runtime.backends.onnxruntime_cuda import OnnxRuntimeCudaRunner
    manifest = write_tiny_artifacts(tmp_path / "a")
    component = manifest.component("estimator")
    runner = OnnxRuntimeCudaRunner(tmp_path / "a" / "estimator.onnx", component, device_type="cpu",
                                   expected_metadata={})
    feeds = feeds_for(40, batch=2)
    np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    on_device = {n: runner.to_device(feeds[n]) for n in ("mask", "mu")}
    out = runner.run_device({"x": feeds["x"], "t": feeds["t"], **on_device})
    assert isinstance(out["velocity"], ort.OrtValue)
    np.testing.assert_allclose(out["velocity"].numpy(), expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    with pytest.raises(InputError, match="must be float32"):
        runner.run_device({**feeds, "x": runner.to_device(feeds["x"].astype(np.float64))})


def test_onnxruntime_cuda_backend_needs_the_cuda_provider(tmp_path):
    import onnxruntime as ort
    from s3gen_runtime.backends.onnxruntime_cuda import open_onnxruntime_cuda
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    manifest = write_tiny_artifacts(tmp_path / "a")
    with pytest.raises(ArtifactError, match=r"onnxruntime-gpu"):
        open_onnxruntime_cuda(tmp_path / "a", manifest, "estimator")
    with pytest.raises(InputError, match="unknown onnxruntime-cuda backend option"):
        open_onnxruntime_cuda(tmp_path / "a", manifest, "estimator", providers=["x"])


# ================================================================ real GPU (skipped without one)

@pytest.mark.gpu
def test_gpu_tensorrt_runner_concurrency(tmp_path):
    """Build the tiny graph into a real engine, then hammer it from several threads."""
    trt = fakes.real_gpu_or_skip()
    from s3gen_export.engines import build_serialized_engine
    model = tiny_estimator_onnx()
    cc, name = gpu.compute_capability(0), gpu.device_name(0)
    folder = tmp_path / "a"
    manifest = write_tiny_artifacts(folder, buckets=BUCKETS[:1], trt=trt.__version__, cc=cc, gpu_name=name,
                                    precision="fp32")
    builder = trt.Builder(trt_backend._logger(trt))
    data, _ = build_serialized_engine(trt, builder, model, engine_profile(0, 256), "fp32", strongly_typed=False)
    engine = record(manifest, "mel256")
    (folder / engine.file).write_bytes(data)
    fixed = Engine.from_dict(dict(engine.to_dict(), sha256=sha256_file(folder / engine.file)), "engine")
    runner = TensorRTRunner(folder, fixed, manifest.component("estimator"), pool_size=2, cuda_graph=True)
    errors = []

    def worker(k):
        try:
            for j in range(5):
                feeds = feeds_for(100 + k, batch=1 + k % 2, seed=j)
                np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), atol=1e-5)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runner.close()
    assert not errors, errors

"""The TensorRT runners on the simulated GPU of tests/fake_cuda.py and tests/fake_tensorrt.py: checks
before deserialising, buffers, the context pool, CUDA graphs, IO binding and bucket routing. The
`gpu`-marked test runs on a real GPU with TensorRT and skips cleanly elsewhere."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import fake_cuda
from s3gen_runtime.backends import gpu
from s3gen_runtime.backends.tensorrt.bucketed import BucketedTensorRTRunner, open_tensorrt
from s3gen_runtime.backends.tensorrt.compat import trt_logger
from s3gen_runtime.backends.tensorrt.runner import TensorRTRunner
from s3gen_runtime.errors import ArtifactError, BucketError, EngineMismatchError, InputError
from s3gen_runtime.manifest import Engine, Manifest, load_manifest, sha256_file
from tiny_engines import (BUCKETS, engine_profile, expected_velocity, feeds_for, record, tiny_estimator_onnx,
                          write_tiny_artifacts)


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
    """Two contexts run at once and a third caller waits for one: held at a gate, not timed."""
    folder, manifest = tiny
    cuda, trt = fake_gpu
    runner = TensorRTRunner(folder, record(manifest, "mel512"), manifest.component("estimator"), pool_size=2)
    trt.gate = threading.Event()   # executions block here until the test opens it
    errors, results = [], {}

    def worker(k):
        try:
            feeds = feeds_for(260 + 10 * k, batch=1 + (k % 2), seed=k)
            results[k] = np.max(np.abs(runner.run(feeds)["velocity"] - expected_velocity(feeds)))
        except Exception as e:   # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        with trt.stats:   # both contexts are inside the engine at the same time ...
            assert trt.stats.wait_for(lambda: trt.active == 2, timeout=30), f"{trt.active} running, want 2"
        # ... and the third caller is parked on the empty pool, not running: it cannot reach the
        # engine until a context comes back, so it has not started (executions counts every start)
        assert trt.executions == 2 and all(t.is_alive() for t in threads)
    finally:
        trt.gate.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors and not any(t.is_alive() for t in threads)
    assert sorted(results) == [0, 1, 2] and max(results.values()) < 1e-5
    assert trt.executions == 3 and trt.max_active == 2   # never more than the pool
    assert cuda.streams == 2   # one stream per context, none per call
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


def test_no_gpu_is_a_clear_error(tiny, fake_gpu):
    folder, manifest = tiny
    cuda, _ = fake_gpu
    cuda.devices = 0
    assert gpu.device_count() == 0
    with pytest.raises(gpu.NoGpuError, match="no CUDA GPU"):
        TensorRTRunner(folder, record(manifest, "mel256"), manifest.component("estimator"))


# ================================================================ real GPU (skipped without one)

@pytest.mark.gpu
def test_gpu_tensorrt_runner_concurrency(tmp_path):
    """Build the tiny graph into a real engine, then hammer it from several threads."""
    trt = fake_cuda.real_gpu_or_skip()
    from s3gen_export.engines import build_serialized_engine
    model = tiny_estimator_onnx()
    cc, name = gpu.compute_capability(0), gpu.device_name(0)
    folder = tmp_path / "a"
    manifest = write_tiny_artifacts(folder, buckets=BUCKETS[:1], trt=trt.__version__, cc=cc, gpu_name=name,
                                    precision="fp32")
    builder = trt.Builder(trt_logger(trt))
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

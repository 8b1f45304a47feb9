"""The CUDA helpers (backends.gpu) on the simulated runtime, and ONNX Runtime's CUDA backend with IO
binding exercised on the CPU provider (no GPU here)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from s3gen_runtime.backends import gpu
from s3gen_runtime.errors import ArtifactError, InputError
from tiny_engines import expected_velocity, feeds_for, write_tiny_artifacts


def test_missing_cuda_python_gives_the_install_command(monkeypatch):
    gpu.use_bindings(None)
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(gpu.CudaError, match="s3gen-aot\\[tensorrt\\]"):
        gpu.device_count()
    gpu.use_bindings(None)


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

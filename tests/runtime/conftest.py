"""Runtime test fixtures: runtimes on the exported synthetic checkpoint (loaded once per session:
loading hashes every graph file), a simulated GPU, and a tiny artifact folder with engines."""
from __future__ import annotations

import sys

import pytest

import fake_cuda
import fake_tensorrt
from s3gen_runtime.backends import gpu
from s3gen_runtime.pipeline import S3GenRuntime
from tiny_engines import write_tiny_artifacts


@pytest.fixture(scope="session")
def std(exported):
    return S3GenRuntime(exported("standard"))


@pytest.fixture(scope="session")
def mf(exported):
    return S3GenRuntime(exported("meanflow"))


@pytest.fixture
def fake_gpu(monkeypatch):
    """A simulated H100 with TensorRT 10.3: (cuda, trt)."""
    cuda = fake_cuda.FakeCuda()
    trt = fake_tensorrt.make_fake_trt(cuda)
    gpu.use_bindings(cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    yield cuda, trt
    gpu.use_bindings(None)


@pytest.fixture
def tiny(tmp_path, fake_gpu):
    """(folder, manifest) of a tiny artifact folder with one fake engine per bucket."""
    manifest = write_tiny_artifacts(tmp_path / "art")
    return tmp_path / "art", manifest

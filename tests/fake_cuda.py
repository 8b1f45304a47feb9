"""A simulated CUDA runtime, for tests that need a GPU without having one; and the real-GPU-or-skip helper.

`FakeCuda` is the subset of `cuda.bindings.runtime` the backend uses: device pointers are host
memory, copies are memmove, CUDA graphs replay recorded launches. Install it with
`s3gen_runtime.backends.gpu.use_bindings(FakeCuda())`.

A plain helper module (no tests), imported by name: tests/ is on sys.path (conftest lives there).
"""
from __future__ import annotations

import ctypes
import enum
import threading
from types import SimpleNamespace

import numpy as np


class _Err(enum.Enum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidValue = 1


class FakeCuda:
    """The subset of `cuda.bindings.runtime` the backend uses; device memory is host memory."""

    cudaError_t = _Err
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2, cudaMemcpyDeviceToDevice=3)
    cudaDeviceAttr = SimpleNamespace(cudaDevAttrComputeCapabilityMajor=75, cudaDevAttrComputeCapabilityMinor=76)
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)
    cudaStreamNonBlocking = 1

    def __init__(self, devices: int = 1, cc=(9, 0), name: str = "NVIDIA H100 80GB HBM3"):
        self.devices, self.cc, self.name = devices, cc, name
        self.mem: dict[int, object] = {}
        self.mallocs = 0
        self.frees = 0
        self.streams = 0
        self.capturing: dict[int, list] = {}
        self.instantiated = 0
        self.launches = 0
        self.lock = threading.Lock()
        self.fail_next: str | None = None

    def _ok(self, *values):
        return (_Err.cudaSuccess, *values)

    def _maybe_fail(self, what):
        if self.fail_next == what:
            self.fail_next = None
            return (_Err.cudaErrorMemoryAllocation,)
        return None

    def cudaGetErrorString(self, err):
        return self._ok(f"simulated {err.name}".encode())

    def cudaGetDeviceCount(self):
        if self.devices == 0:
            return (_Err.cudaErrorInsufficientDriver, None)
        return self._ok(self.devices)

    def cudaSetDevice(self, dev):
        return self._ok() if dev < self.devices else (_Err.cudaErrorInvalidValue,)

    def cudaDeviceGetAttribute(self, attr, dev):
        return self._ok(self.cc[0] if attr == 75 else self.cc[1])

    def cudaGetDeviceProperties(self, dev):
        return self._ok(SimpleNamespace(name=self.name.encode() + b"\0\0", major=self.cc[0], minor=self.cc[1]))

    def cudaMalloc(self, n):
        failed = self._maybe_fail("malloc")
        if failed:
            return (failed[0], None)
        buf = ctypes.create_string_buffer(int(n))
        with self.lock:
            self.mem[ctypes.addressof(buf)] = buf
            self.mallocs += 1
        return self._ok(ctypes.addressof(buf))

    def cudaFree(self, ptr):
        with self.lock:
            self.mem.pop(ptr)
            self.frees += 1
        return self._ok()

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        ctypes.memmove(dst, src, n)
        return self._ok()

    def cudaStreamCreateWithFlags(self, flags):
        with self.lock:
            self.streams += 1
            return self._ok(1000 + self.streams)

    def cudaStreamSynchronize(self, stream):
        return self._ok()

    def cudaDeviceSynchronize(self):
        return self._ok()

    def cudaStreamDestroy(self, stream):
        return self._ok()

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing[int(stream)] = []
        return self._ok()

    def cudaStreamEndCapture(self, stream):
        return self._ok(self.capturing.pop(int(stream)))

    def cudaGraphInstantiate(self, graph, flags):
        self.instantiated += 1
        return self._ok(list(graph))

    def cudaGraphLaunch(self, exec_, stream):
        self.launches += 1
        for fn in exec_:
            fn()
        return self._ok()

    def cudaGraphExecDestroy(self, exec_):
        return self._ok()

    def cudaGraphDestroy(self, graph):
        return self._ok()

    def read(self, ptr, shape, dtype) -> np.ndarray:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raw = (ctypes.c_char * n).from_address(ptr)
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()

    def write(self, ptr, array: np.ndarray) -> None:
        a = np.ascontiguousarray(array)
        ctypes.memmove(ptr, a.ctypes.data, a.nbytes)



def real_gpu_or_skip():
    """tensorrt on a real CUDA device, or skip the calling test (gpu-marked tests only)."""
    import pytest

    from s3gen_runtime.backends import gpu

    trt = pytest.importorskip("tensorrt")
    gpu.use_bindings(None)
    try:
        if gpu.device_count() == 0:
            pytest.skip("no CUDA GPU")
    except gpu.CudaError as e:
        pytest.skip(str(e))
    return trt

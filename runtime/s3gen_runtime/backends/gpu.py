"""Small CUDA helpers over the `cuda-python` bindings (no torch): devices, streams, device memory.

The TensorRT backend (and the engine builder on the export side) need only a handful of CUDA
runtime calls: how many GPUs, which compute capability, malloc/free, async copies on a stream,
and (optionally) CUDA-graph capture. They live here so both sides share one definition.

`cuda-python` is imported lazily, inside `cudart()`: importing this module never needs CUDA.
Both layouts of the package are accepted: `cuda.bindings.runtime` (cuda-python >= 12.6, 13.x)
and the older `cuda.cudart`.

Every binding call returns a tuple `(error, *results)`; `call()` turns a non-success error into a
`CudaError` naming the call, so nothing fails silently.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..errors import S3GenError

INSTALL_HINT = "pip install 's3gen-aot[tensorrt]' (it brings cuda-python)"

_lock = threading.Lock()
_cudart = None


class CudaError(S3GenError):
    """A CUDA runtime call failed, or CUDA is not usable on this machine."""


class NoGpuError(CudaError):
    """No CUDA device (or no driver) on this machine."""


def cudart():
    """The CUDA runtime bindings module, imported once; a clear CudaError when cuda-python is missing."""
    global _cudart
    if _cudart is None:
        with _lock:
            if _cudart is None:
                _cudart = _import_cudart()
    return _cudart


def _import_cudart():
    try:
        from cuda.bindings import runtime as rt   # cuda-python >= 12.6
        return rt
    except ImportError:
        pass
    try:
        from cuda import cudart as rt             # older cuda-python
        return rt
    except ImportError as e:
        raise CudaError(f"the CUDA runtime bindings are not installed: {INSTALL_HINT}") from e


def use_bindings(module=None) -> None:
    """Point the helpers at another bindings module (the simulated runtime in tests); None forgets the
    cached one, so the next call imports cuda-python again."""
    global _cudart
    with _lock:
        _cudart = module


def _error_text(rt, err) -> str:
    name = getattr(err, "name", None) or str(err)
    try:
        e2, text = rt.cudaGetErrorString(err)
        text = text.decode() if isinstance(text, bytes) else str(text)
    except Exception:   # the error string is a courtesy; never mask the real error
        text = ""
    return f"{name}: {text}" if text else name


def call(what: str, result):
    """Check a binding call's `(error, *values)` result: the values (one value unwrapped), or CudaError."""
    rt = cudart()
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if err != rt.cudaError_t.cudaSuccess:
        raise CudaError(f"CUDA call {what} failed: {_error_text(rt, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# ---------------------------------------------------------------- devices

_NO_DEVICE_ERRORS = ("cudaErrorNoDevice", "cudaErrorInsufficientDriver", "cudaErrorInitializationError",
                     "cudaErrorNotSupported", "cudaErrorSystemNotReady", "cudaErrorCompatNotSupportedOnDevice",
                     "cudaErrorSystemDriverMismatch", "cudaErrorStubLibrary", "cudaErrorDevicesUnavailable")


def device_count() -> int:
    """Number of usable CUDA devices; 0 where there is no GPU or no driver (never raises for that)."""
    rt = cudart()
    result = rt.cudaGetDeviceCount()
    err = result[0]
    if err == rt.cudaError_t.cudaSuccess:
        return int(result[1])
    if getattr(err, "name", "") in _NO_DEVICE_ERRORS:
        return 0
    raise CudaError(f"CUDA call cudaGetDeviceCount failed: {_error_text(rt, err)}")


def require_device(device: int = 0) -> int:
    """`device` if it exists; NoGpuError otherwise (the message says what was found)."""
    if isinstance(device, bool) or not isinstance(device, (int, np.integer)) or device < 0:
        raise CudaError(f"CUDA device must be an integer >= 0, got {device!r}")
    n = device_count()
    if n == 0:
        raise NoGpuError("no CUDA GPU is visible on this machine (no device or no driver): TensorRT engines "
                         "are built and run on an NVIDIA GPU; use the onnxruntime backend on CPU")
    if device >= n:
        raise NoGpuError(f"CUDA device {device} does not exist: this machine has {n} GPU(s)")
    return int(device)


def compute_capability(device: int = 0) -> str:
    """'9.0' for an H100: the form recorded in the manifest's engine records."""
    rt = cudart()
    attr = rt.cudaDeviceAttr
    major = call("cudaDeviceGetAttribute", rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device))
    minor = call("cudaDeviceGetAttribute", rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device))
    return f"{int(major)}.{int(minor)}"


def device_name(device: int = 0) -> str:
    rt = cudart()
    props = call("cudaGetDeviceProperties", rt.cudaGetDeviceProperties(device))
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return str(name).strip()


def set_device(device: int) -> None:
    rt = cudart()
    call("cudaSetDevice", rt.cudaSetDevice(device))


# ---------------------------------------------------------------- streams and memory

class Stream:
    """A non-blocking CUDA stream (CUDA-graph capture needs a stream other than the legacy default)."""

    def __init__(self):
        rt = cudart()
        flags = getattr(rt, "cudaStreamNonBlocking", 1)
        if hasattr(rt, "cudaStreamCreateWithFlags"):
            self.handle = call("cudaStreamCreateWithFlags", rt.cudaStreamCreateWithFlags(flags))
        else:
            self.handle = call("cudaStreamCreate", rt.cudaStreamCreate())

    @property
    def ptr(self) -> int:
        """The handle as an integer, the form TensorRT's execute_async_v3 takes."""
        return _as_int(self.handle)

    def synchronize(self) -> None:
        call("cudaStreamSynchronize", cudart().cudaStreamSynchronize(self.handle))

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            call("cudaStreamDestroy", cudart().cudaStreamDestroy(handle))


def _as_int(handle) -> int:
    if isinstance(handle, int):
        return handle
    try:
        return int(handle)
    except TypeError:
        return int(handle.getPtr())


class DeviceBuffer:
    """`nbytes` of device memory (cudaMalloc), freed by close(). Grow-only reuse: `ensure(n)`."""

    def __init__(self, nbytes: int):
        self.ptr = 0
        self.nbytes = 0
        self.ensure(nbytes)

    def ensure(self, nbytes: int) -> bool:
        """Make room for `nbytes`; True when the memory moved (addresses bound elsewhere are stale)."""
        nbytes = max(int(nbytes), 1)
        if nbytes <= self.nbytes and self.ptr:
            return False
        self.close()
        self.ptr = _as_int(call("cudaMalloc", cudart().cudaMalloc(nbytes)))
        self.nbytes = nbytes
        return True

    def close(self) -> None:
        if self.ptr:
            ptr, self.ptr, self.nbytes = self.ptr, 0, 0
            call("cudaFree", cudart().cudaFree(ptr))

    def __del__(self):   # best effort; explicit close() is the contract
        try:
            self.close()
        except Exception:
            pass


def copy_to_device(ptr: int, array: np.ndarray, stream: Stream | None = None) -> None:
    """Host array -> device memory at `ptr` (async on `stream`; keep `array` alive until it syncs)."""
    rt = cudart()
    a = np.ascontiguousarray(array)
    if a.nbytes:
        call("cudaMemcpyAsync", rt.cudaMemcpyAsync(ptr, a.ctypes.data, a.nbytes,
                                                  rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                                  0 if stream is None else stream.handle))


def copy_to_host(array: np.ndarray, ptr: int, stream: Stream | None = None) -> np.ndarray:
    """Device memory at `ptr` -> a C-contiguous host `array` (async; synchronize before reading it)."""
    rt = cudart()
    if not array.flags.c_contiguous:
        raise CudaError("copy_to_host needs a C-contiguous destination array")
    if array.nbytes:
        call("cudaMemcpyAsync", rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes,
                                                  rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                                  0 if stream is None else stream.handle))
    return array


def copy_device_to_device(dst: int, src: int, nbytes: int, stream: Stream | None = None) -> None:
    rt = cudart()
    if nbytes:
        call("cudaMemcpyAsync", rt.cudaMemcpyAsync(dst, src, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                                                  0 if stream is None else stream.handle))


@dataclass
class DeviceArray:
    """A typed view of device memory: what `run_device` takes and fills (caller-owned IO binding).

    Create with `DeviceArray.empty(shape, dtype)` or `DeviceArray.from_host(array)`; the memory is
    freed by close(). `view(shape)` reinterprets a prefix of the same memory (no copy).
    """

    buffer: DeviceBuffer
    shape: tuple
    dtype: np.dtype
    owner: bool = True

    @classmethod
    def empty(cls, shape, dtype) -> "DeviceArray":
        shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        if any(s < 0 for s in shape):
            raise CudaError(f"negative dimension in shape {shape}")
        return cls(DeviceBuffer(_nbytes(shape, dtype)), shape, dtype)

    @classmethod
    def from_host(cls, array, stream: Stream | None = None) -> "DeviceArray":
        a = np.ascontiguousarray(array)
        out = cls.empty(a.shape, a.dtype)
        copy_to_device(out.ptr, a, stream)
        if stream is not None:
            stream.synchronize()   # `a` may be a temporary: the copy must finish while it lives
        return out

    @property
    def ptr(self) -> int:
        return self.buffer.ptr

    @property
    def nbytes(self) -> int:
        return _nbytes(self.shape, self.dtype)

    def view(self, shape) -> "DeviceArray":
        shape = tuple(int(s) for s in shape)
        if _nbytes(shape, self.dtype) > self.buffer.nbytes:
            raise CudaError(f"view of shape {shape} ({self.dtype}) does not fit a {self.buffer.nbytes}-byte buffer")
        return DeviceArray(self.buffer, shape, self.dtype, owner=False)

    def copy_from(self, array, stream: Stream | None = None) -> None:
        a = np.ascontiguousarray(array, dtype=self.dtype)
        if a.shape != self.shape:
            raise CudaError(f"cannot copy an array of shape {a.shape} into a device array of shape {self.shape}")
        copy_to_device(self.ptr, a, stream)
        if stream is not None:
            stream.synchronize()

    def to_host(self, stream: Stream | None = None) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        copy_to_host(out, self.ptr, stream)
        if stream is not None:
            stream.synchronize()
        else:
            call("cudaDeviceSynchronize", cudart().cudaDeviceSynchronize())
        return out

    def close(self) -> None:
        if self.owner:
            self.buffer.close()


def _nbytes(shape, dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


# ---------------------------------------------------------------- CUDA graphs

class CudaGraph:
    """One captured launch sequence on a stream, replayed with `launch()` (addresses are frozen)."""

    def __init__(self, stream: Stream, enqueue):
        """Capture what `enqueue()` puts on `stream` (it must only enqueue work, not synchronize)."""
        rt = cudart()
        self._exec = None
        self._graph = None
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        call("cudaStreamBeginCapture", rt.cudaStreamBeginCapture(stream.handle, mode))
        try:
            ok = enqueue()
        finally:
            graph = call("cudaStreamEndCapture", rt.cudaStreamEndCapture(stream.handle))
        self._graph = graph
        if ok is False:
            self.close()
            raise CudaError("the work captured into a CUDA graph failed to enqueue")
        self._exec = call("cudaGraphInstantiate", rt.cudaGraphInstantiate(graph, 0))

    def launch(self, stream: Stream) -> None:
        call("cudaGraphLaunch", cudart().cudaGraphLaunch(self._exec, stream.handle))

    def close(self) -> None:
        rt = cudart()
        if self._exec is not None:
            handle, self._exec = self._exec, None
            call("cudaGraphExecDestroy", rt.cudaGraphExecDestroy(handle))
        if self._graph is not None:
            handle, self._graph = self._graph, None
            call("cudaGraphDestroy", rt.cudaGraphDestroy(handle))


__all__ = ["CudaError", "NoGpuError", "cudart", "call", "device_count", "require_device", "compute_capability",
           "device_name", "set_device", "Stream", "DeviceBuffer", "DeviceArray", "CudaGraph", "copy_to_device",
           "copy_to_host", "copy_device_to_device"]

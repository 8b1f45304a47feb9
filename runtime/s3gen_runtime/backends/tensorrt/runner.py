"""`TensorRTRunner`: one engine (one graph, one bucket), checked before it is deserialised.

A pool of execution contexts (`ExecutionSlot`: each with its own CUDA stream and device buffers)
serves concurrent callers: a call takes a context from a thread-safe queue and gives it back.
Device buffers grow only and are reused for the same (or smaller) shapes; with `cuda_graph=True` a
context captures its enqueue into a CUDA graph when a call repeats the previous call's shapes and
replays it while they stay the same (solver steps of one batch; `pad_to_bucket=True` in the
pipeline makes every call of a bucket the same shape).

`run_device()` binds caller-owned device memory (`backends.gpu.DeviceArray`) instead: the
conditioning (mu, mask, spks, cond) can be uploaded once and stay on the GPU for every solver step,
and outputs can be written into caller buffers; only x and t change per step.
"""

from __future__ import annotations

import queue
from pathlib import Path

import numpy as np

from ...errors import ArtifactError, InputError
from ...manifest import Component, Engine
from .. import gpu
from ..base import Runner, check_feeds, check_output_names
from .compat import (check_engine_compatible, check_engine_fresh, import_tensorrt, read_verified, rebuild_command,
                     trt_logger)
from .contexts import ExecutionSlot
from .selection import check_profile_shapes


def _dims(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


class TensorRTRunner(Runner):
    """One TensorRT engine (one graph, one bucket), checked against the manifest before loading.

    pool_size execution contexts serve that many concurrent callers (more wait their turn).
    """

    def __init__(self, folder, engine_record: Engine, component_record: Component, pool_size: int = 2, *,
                 cuda_graph: bool = False, device: int = 0, name: str | None = None):
        super().__init__(name or engine_record.graph, component_record)
        if isinstance(pool_size, bool) or not isinstance(pool_size, (int, np.integer)) or pool_size < 1:
            raise InputError(f"pool_size must be an integer >= 1, got {pool_size!r}")
        if not isinstance(cuda_graph, bool):
            raise InputError(f"cuda_graph must be True or False, got {cuda_graph!r}")
        self.folder = Path(folder)
        self.engine_record = engine_record
        self.path = self.folder / engine_record.file
        data = read_verified(self.path, engine_record)
        check_engine_fresh(engine_record, component_record, self.folder)
        trt = import_tensorrt()
        self.device = gpu.require_device(device)
        gpu.set_device(self.device)
        self.gpu_name = gpu.device_name(self.device)
        self.compute_capability = gpu.compute_capability(self.device)
        check_engine_compatible(engine_record, trt.__version__, self.compute_capability, self.gpu_name, self.folder)
        self._trt = trt
        self._runtime = trt.Runtime(trt_logger(trt))
        self._engine = self._runtime.deserialize_cuda_engine(data)
        del data
        if self._engine is None:
            raise ArtifactError(f"TensorRT could not deserialise {engine_record.file} (see the TensorRT log above); "
                                f"{rebuild_command(engine_record, self.folder)}")
        self._inspect_io()
        self._pool: queue.Queue = queue.Queue()
        self._slots = []
        try:
            for _ in range(int(pool_size)):
                slot = ExecutionSlot(self._engine, cuda_graph)
                self._slots.append(slot)
                self._pool.put(slot)
        except Exception:
            self.close()
            raise
        self.pool_size = int(pool_size)
        self.cuda_graph = cuda_graph

    # -- engine I/O

    def _inspect_io(self) -> None:
        trt, engine = self._trt, self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        where = f"{self.name} engine {self.engine_record.file}"
        if sorted(inputs) != sorted(self.input_names) or sorted(outputs) != sorted(self.output_names):
            raise ArtifactError(f"{where}: engine tensors (inputs {inputs}, outputs {outputs}) do not match the "
                                f"manifest (inputs {self.input_names}, outputs {self.output_names}); "
                                f"{rebuild_command(self.engine_record, self.folder)}")
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._profile = {}
        for n in inputs:
            lo, opt, hi = engine.get_tensor_profile_shape(n, 0)
            self._profile[n] = (_dims(lo), _dims(opt), _dims(hi))
        self._outputs_all = outputs

    @property
    def profile(self) -> dict:
        """input name -> (min, opt, max) shape of the engine's optimization profile."""
        return dict(self._profile)

    def check_shapes(self, shapes: dict) -> None:
        """InputError (naming the bucket's limits) when an input shape lies outside the profile."""
        check_profile_shapes(f"{self.name} engine for bucket {self.engine_record.bucket} "
                             f"({self.engine_record.precision})", self.component, self._profile, shapes)

    # -- running

    def _run(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        self.check_shapes({n: a.shape for n, a in feeds.items()})
        gpu.set_device(self.device)   # the current device is per thread; callers may be any thread
        slot = self._pool.get()
        try:
            return self._run_on(slot, feeds, outputs)
        finally:
            self._pool.put(slot)

    def _cast(self, name: str, array: np.ndarray) -> np.ndarray:
        want = self._dtypes[name]
        a = np.asarray(array)
        if a.dtype != want:
            if a.dtype.kind != want.kind and not (a.dtype.kind in "iu" and want.kind in "iu"):
                raise InputError(f"{self.name}: input {name!r} is {a.dtype} but the engine takes {want}")
            if a.dtype.kind in "iu" and a.size and (a.max() > np.iinfo(want).max or a.min() < np.iinfo(want).min):
                raise InputError(f"{self.name}: input {name!r} has values outside {want}")
            a = a.astype(want)
        return np.ascontiguousarray(a)

    def _set_shapes(self, slot: ExecutionSlot, shapes: dict) -> dict[str, tuple]:
        for name, shape in shapes.items():
            if not slot.context.set_input_shape(name, tuple(int(s) for s in shape)):
                raise InputError(f"{self.name}: TensorRT refused shape {tuple(shape)} for input {name!r} "
                                 f"(profile {self._profile[name][0]}..{self._profile[name][2]})")
        out_shapes = {}
        for name in self._outputs_all:
            shape = _dims(slot.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ArtifactError(f"{self.name}: TensorRT could not infer the shape of output {name!r} ({shape})")
            out_shapes[name] = shape
        return out_shapes

    def _run_on(self, slot: ExecutionSlot, feeds: dict, outputs: list[str]) -> dict[str, np.ndarray]:
        arrays = {n: self._cast(n, a) for n, a in feeds.items()}
        out_shapes = self._set_shapes(slot, {n: a.shape for n, a in arrays.items()})
        for name, a in arrays.items():
            slot.bind(name, slot.buffer(name, a.nbytes))
        results = {}
        for name, shape in out_shapes.items():
            nbytes = int(np.prod(shape, dtype=np.int64)) * self._dtypes[name].itemsize
            slot.bind(name, slot.buffer(name, nbytes))
        for name, a in arrays.items():   # arrays stay referenced until the stream syncs below
            gpu.copy_to_device(slot.buffers[name].ptr, a, slot.stream)
        key = None
        if slot.use_graphs:
            key = tuple((n, a.shape) for n, a in sorted(arrays.items())) + \
                tuple(sorted((n, p) for n, p in slot.bound.items()))
        slot.execute(key)
        for name in outputs:
            results[name] = np.empty(out_shapes[name], self._dtypes[name])
            gpu.copy_to_host(results[name], slot.buffers[name].ptr, slot.stream)
        slot.stream.synchronize()
        return results

    def run_device(self, feeds: dict, outputs=None) -> dict:
        """Run with caller-owned device memory (IO binding): x can stay on the GPU across steps.

        `feeds`: input name -> `gpu.DeviceArray` (bound by address, no copy) or a numpy array
        (copied into this context's buffer). `outputs`: None (every output), a list of names, or
        a dict name -> DeviceArray to write into (it must be large enough). Returns name ->
        DeviceArray; arrays this call allocated belong to the caller (close() them). The call
        synchronizes its stream before returning, so results are ready on any stream.
        """
        if not isinstance(feeds, dict):
            raise InputError(f"{self.name}: feeds must be a dict of name -> DeviceArray or array")
        proxies = {}
        for n, v in feeds.items():
            if isinstance(v, gpu.DeviceArray):
                proxies[n] = np.broadcast_to(np.zeros((), v.dtype), v.shape)
            else:
                proxies[n] = np.asarray(v)
        check_feeds(self.name, self.component, proxies)   # names, dtypes, ranks, axes: as for run()
        given_outputs = outputs if isinstance(outputs, dict) else {}
        names = check_output_names(self.name, self.component, list(outputs) if outputs is not None else None)
        self.check_shapes({n: p.shape for n, p in proxies.items()})
        gpu.set_device(self.device)
        slot = self._pool.get()
        try:
            out_shapes = self._set_shapes(slot, {n: p.shape for n, p in proxies.items()})
            keep = []
            for name, v in feeds.items():
                if isinstance(v, gpu.DeviceArray):
                    if v.dtype != self._dtypes[name]:
                        raise InputError(f"{self.name}: device input {name!r} is {v.dtype}; the engine takes "
                                         f"{self._dtypes[name]}")
                    slot.bind(name, v.ptr)
                else:
                    a = self._cast(name, v)
                    keep.append(a)
                    ptr = slot.buffer(name, a.nbytes)
                    slot.bind(name, ptr)
                    gpu.copy_to_device(ptr, a, slot.stream)
            results = {}
            for name, shape in out_shapes.items():
                dtype = self._dtypes[name]
                if name in given_outputs:
                    target = given_outputs[name]
                    if not isinstance(target, gpu.DeviceArray) or target.dtype != dtype:
                        raise InputError(f"{self.name}: output {name!r} must be a {dtype} DeviceArray")
                    try:
                        results[name] = target.view(shape)
                    except gpu.CudaError as e:
                        raise InputError(f"{self.name}: output {name!r} of shape {shape}: {e}") from e
                elif name in names:
                    results[name] = gpu.DeviceArray.empty(shape, dtype)
                else:   # unrequested outputs still need somewhere to go
                    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                    slot.bind(name, slot.buffer(name, nbytes))
                    continue
                slot.bind(name, results[name].ptr)
            slot.execute(None)
            slot.stream.synchronize()
            del keep
            return {n: results[n] for n in names}
        finally:
            # caller addresses must not linger in the context for the next run()
            slot.bound = {n: p for n, p in slot.bound.items()
                          if n in slot.buffers and slot.buffers[n].ptr == p}
            self._pool.put(slot)

    def close(self) -> None:
        for slot in getattr(self, "_slots", []):
            slot.close()
        self._slots = []
        self._engine = None
        self._runtime = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


"""TensorRT backend: one engine per graph and shape bucket, checked before it is deserialised.

An engine is tied to the GPU architecture (compute capability) and the exact TensorRT version it
was built with, and to the ONNX graph it was built from. Before a single byte is handed to
TensorRT the runner checks, in this order:

1. the engine file's sha256 against the manifest (a tampered or truncated file is refused);
2. the ONNX graph the engine was built from (`build_options.onnx_sha256`) against the component
   the manifest records now (an engine left over from an earlier export is stale);
3. `check_engine_compatible`: TensorRT version and compute capability against this machine
   (a mismatch is an EngineMismatchError telling the user how to rebuild; a different GPU name
   with the same architecture is only a warning).

Runners:

- `TensorRTRunner(folder, engine_record, component_record, pool_size=2)`: one engine. A pool of
  execution contexts (each with its own CUDA stream and device buffers) serves concurrent callers:
  a call takes a context from a thread-safe queue and gives it back. Device buffers grow only and
  are reused for the same (or smaller) shapes; with `cuda_graph=True` a context captures its
  enqueue into a CUDA graph when a call repeats the previous call's shapes and replays it while
  they stay the same (solver steps of one batch; `pad_to_bucket=True` in the pipeline makes every
  call of a bucket the same shape).
  `run_device()` binds caller-owned device memory (`s3gen_runtime.gpu.DeviceArray`) instead: the
  conditioning (mu, mask, spks, cond) can be uploaded once and stay on the GPU for every solver
  step, and outputs can be written into caller buffers; only x and t change per step.
- `BucketedTensorRTRunner`: every engine of one graph at one precision; each call picks the engine
  of the smallest bucket that holds it (`select_engine`) and deserialises it on first use.
- `open_tensorrt(folder, manifest, component_name, **options)`: the registry factory.

`tensorrt` and the CUDA bindings are imported inside functions: importing this module needs
neither, so the pure parts (compatibility check, engine selection) run and are tested anywhere.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
import warnings
from pathlib import Path

import numpy as np

from ..buckets import pick_bucket
from ..constants import SAMPLES_PER_FRAME, TOKEN_MEL_RATIO
from ..errors import ArtifactError, EngineMismatchError, InputError, S3GenError
from ..manifest import Component, Engine, Manifest
from .base import Runner, check_feeds, check_output_names

ENGINE_PRECISIONS = ("fp32", "fp16", "bf16")
INSTALL_HINT = "pip install 's3gen-aot[tensorrt]'"


class TensorRTUnavailableError(S3GenError):
    """The tensorrt package (or a CUDA GPU) is missing where TensorRT is needed."""


class EngineMismatchWarning(UserWarning):
    """The engine was built on another GPU model of the same architecture: it runs, maybe slower."""


def import_tensorrt():
    """The tensorrt module, or a TensorRTUnavailableError with the install command."""
    try:
        import tensorrt
    except ImportError as e:
        raise TensorRTUnavailableError(f"TensorRT is not installed: {INSTALL_HINT}") from e
    return tensorrt


# ---------------------------------------------------------------- compatibility (pure)

def parse_version(version) -> tuple[int, ...]:
    """'10.3.0.26' -> (10, 3, 0); 'v10.3' -> (10, 3). The engine format changes with every release,
    so major.minor.patch must all agree (the build number of a release does not matter)."""
    if not isinstance(version, str) or not version.strip():
        raise ArtifactError(f"TensorRT version must be a non-empty string, got {version!r}")
    parts = re.findall(r"\d+", version.strip().lstrip("vV").split("+")[0])
    if not parts:
        raise ArtifactError(f"cannot read TensorRT version {version!r}")
    return tuple(int(p) for p in parts[:3])


def parse_compute_capability(value) -> tuple[int, int]:
    """'9.0', 'sm90', 'sm_90', '90', (9, 0) -> (9, 0)."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    if isinstance(value, str):
        text = value.strip().lower()
        m = re.fullmatch(r"(\d+)\.(\d+)", text)
        if m:
            return int(m.group(1)), int(m.group(2))
        m = re.fullmatch(r"(?:sm_?|compute_?)?(\d+)(\d)", text)
        if m:
            return int(m.group(1)), int(m.group(2))
    raise ArtifactError(f"cannot read compute capability {value!r} (expected e.g. '9.0' or 'sm90')")


def format_compute_capability(value) -> str:
    major, minor = parse_compute_capability(value)
    return f"{major}.{minor}"


def sm_tag(value) -> str:
    """'9.0' -> 'sm90' (the form used in engine file names)."""
    major, minor = parse_compute_capability(value)
    return f"sm{major}{minor}"


def rebuild_command(engine: Engine, folder=None) -> str:
    return f"s3gen-aot build-engines {folder if folder is not None else 'DIR'} --precision {engine.precision}"


def check_engine_compatible(engine: Engine, trt_version: str, compute_capability, gpu_name: str,
                            folder=None) -> None:
    """Refuse an engine built for another TensorRT version or GPU architecture (EngineMismatchError,
    with the command that rebuilds it); a different GPU name alone is an EngineMismatchWarning."""
    where = f"engine {engine.file} ({engine.graph}, {engine.bucket}, {engine.precision})"
    fix = f"rebuild for this GPU: {rebuild_command(engine, folder)}"
    built_trt, local_trt = parse_version(engine.tensorrt), parse_version(trt_version)
    n = min(len(built_trt), len(local_trt), 3)
    if built_trt[:n] != local_trt[:n] or n < 2:
        raise EngineMismatchError(
            f"{where} was built with TensorRT {engine.tensorrt} but this machine has TensorRT {trt_version}; "
            f"engines only load in the TensorRT version that built them: {fix}")
    built_cc, local_cc = parse_compute_capability(engine.compute_capability), parse_compute_capability(compute_capability)
    if built_cc != local_cc:
        raise EngineMismatchError(
            f"{where} was built for compute capability {built_cc[0]}.{built_cc[1]} ({engine.gpu}) but this GPU "
            f"({gpu_name}) has compute capability {local_cc[0]}.{local_cc[1]}: {fix}")
    if gpu_name and engine.gpu and gpu_name.strip() != engine.gpu.strip():
        warnings.warn(f"{where} was built on {engine.gpu} and runs here on {gpu_name} (same compute capability "
                      f"{local_cc[0]}.{local_cc[1]}): it works, but tactics were timed on the other GPU; "
                      f"for best speed {fix}", EngineMismatchWarning, stacklevel=2)


def check_engine_fresh(engine: Engine, component: Component, folder=None) -> None:
    """The engine must come from the ONNX graph the manifest records now (not an earlier export)."""
    built_from = engine.build_options.get("onnx_sha256")
    if built_from is None:
        raise ArtifactError(f"engine {engine.file} does not record the ONNX graph it was built from "
                            f"(build_options.onnx_sha256): {rebuild_command(engine, folder)}")
    if built_from != component.sha256:
        raise EngineMismatchError(
            f"engine {engine.file} is stale: it was built from {engine.graph} ONNX sha256 {str(built_from)[:12]}... "
            f"but the artifacts now hold sha256 {component.sha256[:12]}... (re-exported?): "
            f"rebuild: {rebuild_command(engine, folder)}")


# ---------------------------------------------------------------- buckets and axes (pure)

def axis_sizes(component: Component, shapes: dict) -> dict[str, int]:
    """Named axis -> size, read from input shapes (`shapes`: input name -> shape tuple)."""
    axes: dict[str, int] = {}
    for spec in component.inputs:
        shape = shapes[spec.name]
        for dim, size in zip(spec.shape, shape):
            if isinstance(dim, str):
                axes.setdefault(dim, int(size))
    return axes


def bucket_frames(axes: dict) -> int:
    """The mel frames a call needs, the measure buckets are sized in.

    estimator: `frames`; vocoder: `mel_frames`; encoder: 2 * (prompt_tokens + tokens) (the two
    are padded separately and their sum must fit the bucket).
    """
    if "frames" in axes:
        return int(axes["frames"])
    if "mel_frames" in axes:
        return int(axes["mel_frames"])
    if "samples" in axes:
        return -(-int(axes["samples"]) // SAMPLES_PER_FRAME)
    if "tokens" in axes or "prompt_tokens" in axes:
        return TOKEN_MEL_RATIO * (int(axes.get("tokens", 0)) + int(axes.get("prompt_tokens", 0)))
    raise InputError(f"cannot tell the bucket of a call with axes {sorted(axes)}")


def frames_range(engine: Engine) -> tuple[int, int] | None:
    """(lowest, highest) bucket frames the engine's profile covers, as recorded at build time."""
    r = engine.build_options.get("frames_range")
    if isinstance(r, list) and len(r) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in r):
        return int(r[0]), int(r[1])
    return None


def _check_precision(precision) -> str:
    if precision not in ENGINE_PRECISIONS:
        raise InputError(f"engine precision must be one of {', '.join(ENGINE_PRECISIONS)}, got {precision!r}")
    return precision


def engines_for(manifest: Manifest, graph: str, precision: str, compute_capability=None) -> list[Engine]:
    """The engines of one graph and precision (for one GPU architecture if given), smallest bucket first."""
    _check_precision(precision)
    sizes = {b.name: b.mel_frames for b in manifest.buckets}
    found = [e for e in manifest.engines if e.graph == graph and e.precision == precision]
    if compute_capability is not None:
        want = parse_compute_capability(compute_capability)
        found = [e for e in found if parse_compute_capability(e.compute_capability) == want]
    return sorted(found, key=lambda e: sizes[e.bucket])


def select_engine(manifest: Manifest, graph: str, frames: int, batch: int, precision: str, *,
                  compute_capability=None, folder=None) -> Engine:
    """The engine record of the smallest bucket that holds `frames` mel frames at `batch` rows.

    Too long for every engine: BucketError naming both lengths. A batch outside the engine's
    [min_batch, max_batch]: InputError naming the limits. No engine at all: ArtifactError with
    the command that builds them.
    """
    for value, what in ((frames, "frames"), (batch, "batch")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{what} must be a positive integer, got {value!r}")
    frames, batch = int(frames), int(batch)
    candidates = engines_for(manifest, graph, precision, compute_capability)
    if not candidates:
        have = sorted({f"{e.graph}/{e.precision}/sm{e.compute_capability}" for e in manifest.engines}) or ["none"]
        cc = "" if compute_capability is None else f" for compute capability {format_compute_capability(compute_capability)}"
        raise ArtifactError(f"no {precision} TensorRT engine for {graph!r}{cc} in these artifacts (engines: "
                            f"{', '.join(have)}); build them: s3gen-aot build-engines "
                            f"{folder if folder is not None else 'DIR'} --precision {precision}")
    buckets = [b for b in manifest.buckets if b.name in {e.bucket for e in candidates}]
    bucket = pick_bucket(buckets, frames)   # BucketError past the largest engine's bucket
    chosen = [e for e in candidates if e.bucket == bucket.name]
    engine = chosen[0]
    covered = frames_range(engine)
    if covered is not None and not covered[0] <= frames <= covered[1]:
        raise ArtifactError(
            f"no {graph} engine covers {frames} mel frames: the {bucket.name} engine's profile takes "
            f"{covered[0]}..{covered[1]} (a bucket below it was not built); rebuild with every bucket: "
            f"s3gen-aot build-engines {folder if folder is not None else 'DIR'} --precision {precision}")
    if not engine.min_batch <= batch <= engine.max_batch:
        raise InputError(f"batch of {batch} is outside the {graph} {bucket.name} engine's batch range "
                         f"{engine.min_batch}..{engine.max_batch}; split the batch or rebuild with --max-batch {batch}")
    return engine


# ---------------------------------------------------------------- the single-engine runner

_LOGGER = None
_LOGGER_LOCK = threading.Lock()


def _logger(trt):
    """One TensorRT logger per process (TensorRT expects a single one)."""
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:
            _LOGGER = trt.Logger(trt.Logger.WARNING)
        return _LOGGER


def _read_verified(path: Path, engine: Engine) -> bytes:
    """The engine bytes, hashed in memory: the bytes checked are the bytes deserialised."""
    if not path.is_file():
        raise ArtifactError(f"engine file {engine.file} is missing from {path.parent}")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != engine.sha256:
        raise ArtifactError(f"engine file {engine.file} is tampered or corrupt: sha256 {actual[:12]}... but the "
                            f"manifest expects {engine.sha256[:12]}...; rebuild it: {rebuild_command(engine, path.parent)}")
    return data


def _dims(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


class _Slot:
    """One execution context with its own stream, device buffers and captured CUDA graphs."""

    def __init__(self, engine, gpu, use_graphs: bool):
        self.context = engine.create_execution_context()
        if self.context is None:
            raise ArtifactError("TensorRT could not create an execution context (out of GPU memory?)")
        self.gpu = gpu
        self.stream = gpu.Stream()
        self.buffers: dict = {}
        self.bound: dict = {}
        self.use_graphs = use_graphs
        self.graph = None
        self.last_key = None

    def buffer(self, name: str, nbytes: int) -> int:
        buf = self.buffers.get(name)
        if buf is None:
            buf = self.buffers[name] = self.gpu.DeviceBuffer(nbytes)
            moved = True
        else:
            moved = buf.ensure(nbytes)
        if moved:
            self.drop_graphs()   # a captured graph holds the old addresses
            self.last_key = None
        return buf.ptr

    def bind(self, name: str, ptr: int) -> None:
        if self.bound.get(name) != ptr:
            if not self.context.set_tensor_address(name, ptr):
                raise ArtifactError(f"TensorRT refused the address of tensor {name!r}")
            self.bound[name] = ptr

    def execute(self, key) -> None:
        """Run the enqueued shapes. With CUDA graphs: a call whose key (shapes and addresses) equals
        the previous call's is captured once and replayed after that; any other key runs plainly and
        drops the graph. One graph per context, and only for repeated identical calls: TensorRT must
        have run a shape before it is captured, and a context's internal state follows its last shape."""
        if not self.use_graphs or key is None:
            self.last_key = None
            self.drop_graphs()
            self._enqueue_or_fail()
            return
        if key != self.last_key:
            self.drop_graphs()
            self.last_key = key
            self._enqueue_or_fail()
            return
        if self.graph is None:
            self.graph = self.gpu.CudaGraph(self.stream, lambda: self.context.execute_async_v3(self.stream.ptr))
        self.graph.launch(self.stream)

    def _enqueue_or_fail(self) -> None:
        if not self.context.execute_async_v3(self.stream.ptr):
            raise ArtifactError("TensorRT failed to enqueue the engine (see the TensorRT log above)")

    def drop_graphs(self) -> None:
        if self.graph is not None:
            graph, self.graph = self.graph, None
            graph.close()

    def close(self) -> None:
        self.drop_graphs()
        for buf in self.buffers.values():
            buf.close()
        self.buffers.clear()
        self.stream.close()
        self.context = None


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
        data = _read_verified(self.path, engine_record)
        check_engine_fresh(engine_record, component_record, self.folder)
        trt = import_tensorrt()
        from .. import gpu
        self._gpu = gpu
        self.device = gpu.require_device(device)
        gpu.set_device(self.device)
        self.gpu_name = gpu.device_name(self.device)
        self.compute_capability = gpu.compute_capability(self.device)
        check_engine_compatible(engine_record, trt.__version__, self.compute_capability, self.gpu_name, self.folder)
        self._trt = trt
        self._runtime = trt.Runtime(_logger(trt))
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
                slot = _Slot(self._engine, gpu, cuda_graph)
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
        self._gpu.set_device(self.device)   # the current device is per thread; callers may be any thread
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

    def _set_shapes(self, slot: _Slot, shapes: dict) -> dict[str, tuple]:
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

    def _run_on(self, slot: _Slot, feeds: dict, outputs: list[str]) -> dict[str, np.ndarray]:
        gpu = self._gpu
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
        gpu = self._gpu
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


def check_profile_shapes(where: str, component: Component, profile: dict, shapes: dict) -> None:
    """Every input dim inside [min, max] of the profile; the error names the axis and the limits."""
    for spec in component.inputs:
        if spec.name not in profile:
            continue
        lo, _, hi = profile[spec.name]
        shape = tuple(shapes[spec.name])
        if len(shape) != len(lo):
            raise InputError(f"{where}: input {spec.name!r} has rank {len(shape)}, the engine takes rank {len(lo)}")
        for axis, (size, a, b) in enumerate(zip(shape, lo, hi)):
            if not a <= size <= b:
                dim = spec.shape[axis] if axis < len(spec.shape) else axis
                label = f"axis {dim!r}" if isinstance(dim, str) else f"axis {axis}"
                raise InputError(f"{where}: input {spec.name!r} {label} is {size} but this engine takes "
                                 f"{a}..{b} (profile {lo}..{hi}); pick the bucket that fits, split the batch, "
                                 "or rebuild the engines with the limits you need")


# ---------------------------------------------------------------- every bucket of one graph

class BucketedTensorRTRunner(Runner):
    """All engines of one graph at one precision; each call goes to the smallest bucket that holds it.

    Engines are checked and deserialised on first use (or all at once with preload=True).
    """

    def __init__(self, folder, manifest: Manifest, component_name: str, engine_precision: str, *,
                 pool_size: int = 2, cuda_graph: bool = False, device: int = 0, preload: bool = False):
        component = manifest.component(component_name)
        super().__init__(component_name, component)
        self.folder = Path(folder)
        self.manifest = manifest
        self.engine_precision = _check_precision(engine_precision)
        import_tensorrt()   # fail at open time, not on the first call
        from .. import gpu
        self.device = gpu.require_device(device)
        self.compute_capability = gpu.compute_capability(self.device)
        self.engines = engines_for(manifest, component_name, engine_precision, self.compute_capability)
        if not self.engines:
            select_engine(manifest, component_name, 1, 1, engine_precision,
                          compute_capability=self.compute_capability, folder=self.folder)   # raises the message
        self._options = {"pool_size": pool_size, "cuda_graph": cuda_graph, "device": self.device}
        self._runners: dict[str, TensorRTRunner] = {}
        self._lock = threading.Lock()
        if preload:
            for e in self.engines:
                self._runner(e)

    def _runner(self, engine: Engine) -> TensorRTRunner:
        with self._lock:
            runner = self._runners.get(engine.file)
            if runner is None:
                runner = TensorRTRunner(self.folder, engine, self.component, name=self.name, **self._options)
                self._runners[engine.file] = runner
            return runner

    def engine_for(self, shapes: dict) -> Engine:
        axes = axis_sizes(self.component, shapes)
        return select_engine(self.manifest, self.name, bucket_frames(axes), axes.get("batch", 1),
                             self.engine_precision, compute_capability=self.compute_capability, folder=self.folder)

    def _run(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        engine = self.engine_for({n: a.shape for n, a in feeds.items()})
        return self._runner(engine)._run(feeds, outputs)

    def run_device(self, feeds: dict, outputs=None) -> dict:
        shapes = {n: tuple(v.shape) for n, v in feeds.items()}
        missing = [s.name for s in self.component.inputs if s.name not in shapes]
        if missing:
            raise InputError(f"{self.name}: missing inputs {missing}")
        return self._runner(self.engine_for(shapes)).run_device(feeds, outputs)

    def close(self) -> None:
        with self._lock:
            for r in self._runners.values():
                r.close()
            self._runners.clear()


def open_tensorrt(folder, manifest: Manifest, component_name: str, engine_precision: str | None = None,
                  pool_size: int = 2, cuda_graph: bool = False, device: int = 0,
                  preload: bool = False) -> BucketedTensorRTRunner:
    """Registry factory: the TensorRT runner for one component of the artifact folder.

    engine_precision None takes the only precision built for this graph (fp16 first when several).
    """
    if engine_precision is None:
        have = {e.precision for e in manifest.engines if e.graph == component_name}
        for p in ("fp16", "bf16", "fp32"):
            if p in have:
                engine_precision = p
                break
        else:
            raise ArtifactError(f"no TensorRT engines for {component_name!r} in {folder}; build them: "
                                f"s3gen-aot build-engines {folder} --precision fp16")
    return BucketedTensorRTRunner(folder, manifest, component_name, engine_precision, pool_size=pool_size,
                                  cuda_graph=cuda_graph, device=device, preload=preload)


__all__ = ["ENGINE_PRECISIONS", "TensorRTUnavailableError", "EngineMismatchWarning", "import_tensorrt",
           "parse_version", "parse_compute_capability", "format_compute_capability", "sm_tag",
           "check_engine_compatible", "check_engine_fresh", "axis_sizes", "bucket_frames", "frames_range",
           "engines_for", "select_engine", "check_profile_shapes", "TensorRTRunner", "BucketedTensorRTRunner",
           "open_tensorrt"]

"""ONNX Runtime backend: one InferenceSession per graph, shared by every thread.

onnxruntime is imported inside the functions: importing s3gen_runtime.backends must not
require it (a TensorRT-only deployment), and its import costs ~0.3 s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError, InputError
from ..manifest import Component, Manifest, verify_file
from .base import METADATA_PREFIX, Runner, check_graph_io, check_metadata, expected_metadata, onnx_component

# ORT's type strings -> numpy dtype names used by the manifest.
_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16",
    "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:   # the runtime's one hard dependency for this backend
        raise ArtifactError("the onnxruntime backend needs the onnxruntime package: pip install onnxruntime") from e
    return onnxruntime


def _providers(ort, providers) -> list[str]:
    """Requested providers, each one available here; ORT would silently fall back to CPU instead."""
    providers = list(DEFAULT_PROVIDERS if providers is None else providers)
    available = ort.get_available_providers()
    if not providers or not all(isinstance(p, str) for p in providers):
        raise InputError(f"providers must be a non-empty list of provider names, got {providers!r}")
    missing = [p for p in providers if p not in available]
    if missing:
        raise InputError(f"ONNX Runtime providers {missing} are not available here; available: {available}")
    return providers


def _threads(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"intra_op_threads must be an integer >= 1 (or None for all cores), got {value!r}")
    return int(value)


def _graph_io(values) -> list[tuple]:
    """(name, dtype, shape) per ORT NodeArg; unknown element types keep their ORT spelling."""
    return [(v.name, _ORT_DTYPES.get(v.type, v.type), v.shape) for v in values]


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return value


def session_options(ort, intra_op_threads=None, allow_spinning: bool = True, memory_arena: bool = True):
    """ORT session options of this backend. Spinning threads answer the next kernel sooner but burn
    a core while waiting (worse on a machine shared with other work); without the memory arena every
    buffer is malloc'ed and freed per run, so memory returns to the OS (see `arena_shrinkage` for
    the middle way)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3   # ORT's warnings (e.g. unused initializers) are noise to users
    threads = _threads(intra_op_threads)
    if threads is not None:
        options.intra_op_num_threads = threads
    if not _flag("allow_spinning", allow_spinning):
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = _flag("memory_arena", memory_arena)
    return options


class OnnxRuntimeRunner(Runner):
    """An ONNX graph under ONNX Runtime, checked against its manifest record before first use.

    `expected_metadata` maps metadata_props keys to accepted values; by default the record's
    spec_hash (and the component name when `name` is given). open_runner passes the full set.
    `arena_shrinkage`: after each run, the CPU arena hands its free chunks back to the OS, so a long
    request does not keep its peak for the life of the process.
    """

    def __init__(self, path, component: Component, providers=None, intra_op_threads=None, *,
                 name: str | None = None, expected_metadata: dict | None = None,
                 allow_spinning: bool = True, memory_arena: bool = True, arena_shrinkage: bool = True):
        super().__init__(name or Path(path).stem, component)
        ort = import_onnxruntime()
        options = session_options(ort, intra_op_threads, allow_spinning, memory_arena)
        provider_list = _providers(ort, providers)
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{self.name}: graph file {path} is missing")
        try:
            self._session = ort.InferenceSession(str(path), options, providers=provider_list)
        except Exception as e:   # ORT raises its own exception types for unreadable models
            raise ArtifactError(f"{self.name}: ONNX Runtime cannot load {path}: {e}") from e
        self._run_options = ort.RunOptions()
        if _flag("arena_shrinkage", arena_shrinkage) and memory_arena:
            self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        if expected_metadata is None:
            expected_metadata = {METADATA_PREFIX + "spec_hash": (component.spec_hash,)}
            if name is not None:
                expected_metadata[METADATA_PREFIX + "component"] = (name,)
        where = f"{self.name} ({path.name})"
        check_metadata(where, dict(self._session.get_modelmeta().custom_metadata_map), expected_metadata)
        check_graph_io(where, component, _graph_io(self._session.get_inputs()), _graph_io(self._session.get_outputs()))
        self.path = path
        self.providers = self._session.get_providers()

    def _run(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        # InferenceSession.run is thread-safe; the session holds no per-call state of ours.
        values = self._session.run(outputs, feeds, self._run_options)
        return dict(zip(outputs, values))


SESSION_OPTIONS = frozenset({"intra_op_threads", "allow_spinning", "memory_arena", "arena_shrinkage"})


def open_onnxruntime(folder, manifest: Manifest, component_name: str, **options) -> OnnxRuntimeRunner:
    """The runner for `component_name` of the artifact folder: its file's sha256 checked as it is
    opened, metadata checked in full.

    ORT loads the graph from its path, not from the bytes the hash read: measured on the fp32 guided
    estimator (288 MB), a session made from bytes keeps ~270 MiB more resident after load (651 vs
    380 MiB, peak 889 vs 432); the second read comes from the page cache."""
    component = onnx_component(manifest, component_name, "onnxruntime", options, SESSION_OPTIONS | {"providers"})
    path = verify_file(folder, f"components.{component_name}", component.file, component.sha256)
    return OnnxRuntimeRunner(path, component, name=component_name,
                             expected_metadata=expected_metadata(manifest, component_name), **options)

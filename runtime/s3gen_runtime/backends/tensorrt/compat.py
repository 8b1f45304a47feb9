"""Is TensorRT here, and was this engine built for it? Pure checks run before any engine is loaded.

An engine is tied to the exact TensorRT version that built it, to the GPU architecture (compute
capability), and to the ONNX graph it was built from. `read_verified` (file sha256 against the
manifest), `check_engine_fresh` (ONNX sha256) and `check_engine_compatible` (TensorRT version and
compute capability) run in that order before a single byte reaches TensorRT.

`tensorrt` is imported inside `import_tensorrt`: importing this module needs neither TensorRT nor CUDA.
"""

from __future__ import annotations

import hashlib
import re
import threading
import warnings
from pathlib import Path

from ...errors import ArtifactError, EngineMismatchError, S3GenError
from ...manifest import Component, Engine

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



_LOGGERS: dict = {}
_LOGGERS_LOCK = threading.Lock()


def trt_logger(trt):
    """The one logger of a tensorrt module (TensorRT expects a single one per process); the runner
    and the engine builder share it."""
    with _LOGGERS_LOCK:
        entry = _LOGGERS.get(id(trt))
        if entry is None or entry[0] is not trt:   # keyed by the module itself, not a recycled id
            entry = _LOGGERS[id(trt)] = (trt, trt.Logger(trt.Logger.WARNING))
        return entry[1]


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


def read_verified(path: Path, engine: Engine) -> bytes:
    """The engine bytes, hashed in memory: the bytes checked are the bytes deserialised."""
    if not path.is_file():
        raise ArtifactError(f"engine file {engine.file} is missing from {path.parent}")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != engine.sha256:
        raise ArtifactError(f"engine file {engine.file} is tampered or corrupt: sha256 {actual[:12]}... but the "
                            f"manifest expects {engine.sha256[:12]}...; rebuild it: {rebuild_command(engine, path.parent)}")
    return data

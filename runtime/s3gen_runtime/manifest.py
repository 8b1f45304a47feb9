"""The artifact manifest: written by the export side, read strictly here.

An artifact folder holds manifest.json plus the files it names. The runtime
refuses what it does not understand: another schema_version, unknown or missing
keys, wrong types, audio constants other than its own, and (with verify=True)
files that are missing or whose sha256 differs from the record.

Every section is a frozen dataclass with a strict `from_dict(data, path)` and a
`to_dict()`; `path` is the key path used in error messages, e.g.
`components.encoder.inputs[0].dtype`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Optional

from . import constants as C
from .buckets import Bucket
from .errors import ArtifactError, InputError, ManifestError
from .solvers import SOLVERS

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
MANIFEST_NAME = "manifest.json"
TOOL_NAME = "s3gen-aot"
COMPONENT_FORMATS = ("onnx",)
COMPONENT_PRECISIONS = ("fp32", "int8")
TENSOR_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")

_SHA256 = re.compile(r"[0-9a-f]{64}")


# ---------------------------------------------------------------- strict readers

def _obj(data, path: str, required: tuple) -> dict:
    """`data` as a dict with exactly the `required` keys (nullable ones are still required)."""
    if not isinstance(data, dict):
        raise ManifestError(f"{path or 'manifest'}: expected an object, got {type(data).__name__}")
    for key in data:
        if key not in required:
            raise ManifestError(f"unknown key {_join(path, key)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ManifestError(f"missing key {_join(path, missing[0])}" + (
            f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""))
    return data


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _type_error(path: str, want: str, value) -> ManifestError:
    return ManifestError(f"{path} must be {want}, got {type(value).__name__} {value!r}")


def _str(d: dict, key: str, path: str) -> str:
    v = d[key]
    if not isinstance(v, str):
        raise _type_error(_join(path, key), "a string", v)
    return v


def _opt_str(d: dict, key: str, path: str) -> Optional[str]:
    return None if d[key] is None else _str(d, key, path)


def _int(d: dict, key: str, path: str, minimum: Optional[int] = None) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise _type_error(_join(path, key), "an integer", v)
    if minimum is not None and v < minimum:
        raise ManifestError(f"{_join(path, key)} must be >= {minimum}, got {v}")
    return v


def _num(v, path: str, nonnegative: bool = False) -> float:
    """A finite JSON number (ints allowed: JSON writes 1.0 as 1 in some tools)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _type_error(path, "a finite number", v)
    if nonnegative and v < 0:
        raise ManifestError(f"{path} must be >= 0, got {v}")
    return float(v)


def _float(d: dict, key: str, path: str, nonnegative: bool = False) -> float:
    return _num(d[key], _join(path, key), nonnegative)


def _bool(d: dict, key: str, path: str) -> bool:
    v = d[key]
    if not isinstance(v, bool):
        raise _type_error(_join(path, key), "true or false", v)
    return v


def _choice(d: dict, key: str, path: str, choices) -> str:
    v = _str(d, key, path)
    if v not in choices:
        raise ManifestError(f"{_join(path, key)} is {v!r}; expected one of {', '.join(map(str, choices))}")
    return v


def _sha(d: dict, key: str, path: str) -> str:
    v = _str(d, key, path)
    if not _SHA256.fullmatch(v):
        raise ManifestError(f"{_join(path, key)} must be 64 lowercase hex digits, got {v!r}")
    return v


def _rel_file(d: dict, key: str, path: str) -> str:
    """A file inside the artifact folder: relative, no '..', forward slashes."""
    v = _str(d, key, path)
    p = PurePosixPath(v)
    if not v or p.is_absolute() or ".." in p.parts or "\\" in v:
        raise ManifestError(f"{_join(path, key)} must be a relative path inside the artifact folder, got {v!r}")
    return v


def _list(d: dict, key: str, path: str) -> list:
    v = d[key]
    if not isinstance(v, list):
        raise _type_error(_join(path, key), "a list", v)
    return v


def _dict(d: dict, key: str, path: str) -> dict:
    v = d[key]
    if not isinstance(v, dict):
        raise _type_error(_join(path, key), "an object", v)
    return v


def _json_value(v, path: str):
    """A deep copy of free-form JSON data (build options, measurements), checked to be JSON."""
    if isinstance(v, dict):
        out = {}
        for k, item in v.items():
            if not isinstance(k, str):
                raise ManifestError(f"{path}: object keys must be strings, got {k!r}")
            out[k] = _json_value(item, _join(path, k))
        return out
    if isinstance(v, (list, tuple)):
        return [_json_value(item, f"{path}[{i}]") for i, item in enumerate(v)]
    if isinstance(v, float) and not math.isfinite(v):
        raise ManifestError(f"{path}: NaN/Inf cannot be stored in JSON")
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    raise _type_error(path, "JSON data", v)


def _float_map(d: dict, key: str, path: str) -> dict:
    p = _join(path, key)
    return {name: _num(v, _join(p, name), nonnegative=True) for name, v in _dict(d, key, path).items()}


# ---------------------------------------------------------------- sections

@dataclass(frozen=True)
class Tool:
    name: str
    version: str

    @classmethod
    def from_dict(cls, data, path: str = "tool") -> "Tool":
        d = _obj(data, path, ("name", "version"))
        name = _str(d, "name", path)
        if name != TOOL_NAME:
            raise ManifestError(f"{path}.name is {name!r}: this runtime reads artifacts made by {TOOL_NAME!r}")
        return cls(name, _str(d, "version", path))

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True)
class Versions:
    """Library versions the artifacts were made with (None: not used)."""

    python: str
    torch: Optional[str]
    onnx: Optional[str]
    onnxruntime: Optional[str]
    tensorrt: Optional[str]

    _KEYS = ("python", "torch", "onnx", "onnxruntime", "tensorrt")

    @classmethod
    def from_dict(cls, data, path: str = "versions") -> "Versions":
        d = _obj(data, path, cls._KEYS)
        return cls(_str(d, "python", path), *(_opt_str(d, k, path) for k in cls._KEYS[1:]))

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self._KEYS}


@dataclass(frozen=True)
class Checkpoint:
    file: str
    sha256: str
    variant: str

    @classmethod
    def from_dict(cls, data, path: str = "checkpoint") -> "Checkpoint":
        d = _obj(data, path, ("file", "sha256", "variant"))
        return cls(_str(d, "file", path), _sha(d, "sha256", path), _choice(d, "variant", path, C.VARIANTS))

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "variant": self.variant}


@dataclass(frozen=True)
class Audio:
    """The audio constants the graphs were exported for."""

    sample_rate: int
    mel_bins: int
    mel_rate: int
    token_rate: int
    samples_per_frame: int
    vocab_size: int
    speaker_embed_dim: int
    n_harmonics: int
    max_mel_frames: int

    _KEYS = ("sample_rate", "mel_bins", "mel_rate", "token_rate", "samples_per_frame", "vocab_size",
             "speaker_embed_dim", "n_harmonics", "max_mel_frames")

    @classmethod
    def current(cls) -> "Audio":
        """This runtime's constants (the only ones it can run)."""
        return cls(C.SAMPLE_RATE, C.MEL_BINS, C.MEL_RATE, C.TOKEN_RATE, C.SAMPLES_PER_FRAME,
                   C.SPEECH_VOCAB_SIZE, C.SPEAKER_EMBED_DIM, C.N_HARMONICS, C.MAX_MEL_FRAMES)

    @classmethod
    def from_dict(cls, data, path: str = "audio") -> "Audio":
        d = _obj(data, path, cls._KEYS)
        return cls(*(_int(d, k, path, minimum=1) for k in cls._KEYS))

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self._KEYS}

    def check_runtime(self, path: str = "audio") -> None:
        """Refuse constants that differ from this runtime's: its DSP and shapes assume them."""
        mine = Audio.current()
        for k in self._KEYS:
            if getattr(self, k) != getattr(mine, k):
                raise ManifestError(
                    f"{path}.{k} is {getattr(self, k)} but this runtime is built for {getattr(mine, k)}"
                )


@dataclass(frozen=True)
class Defaults:
    solver: str
    steps: int
    cfg_rate: float

    @classmethod
    def from_dict(cls, data, path: str = "defaults") -> "Defaults":
        d = _obj(data, path, ("solver", "steps", "cfg_rate"))
        return cls(_choice(d, "solver", path, tuple(SOLVERS)), _int(d, "steps", path, minimum=1),
                   _float(d, "cfg_rate", path, nonnegative=True))

    def to_dict(self) -> dict:
        return {"solver": self.solver, "steps": self.steps, "cfg_rate": self.cfg_rate}


def _bucket_from_dict(data, path: str) -> Bucket:
    d = _obj(data, path, ("name", "mel_frames"))
    name, frames = _str(d, "name", path), _int(d, "mel_frames", path)
    try:
        return Bucket(name, frames)
    except InputError as e:
        raise ManifestError(f"{path}: {e}") from e


def _bucket_to_dict(b: Bucket) -> dict:
    return {"name": b.name, "mel_frames": b.mel_frames}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, dtype and shape (ints, or strings for named axes)."""

    name: str
    dtype: str
    shape: tuple

    @classmethod
    def from_dict(cls, data, path: str) -> "TensorSpec":
        d = _obj(data, path, ("name", "dtype", "shape"))
        shape = []
        for i, dim in enumerate(_list(d, "shape", path)):
            if isinstance(dim, bool) or not isinstance(dim, (int, str)) or (isinstance(dim, int) and dim < 0):
                raise _type_error(f"{path}.shape[{i}]", "a non-negative integer or an axis name", dim)
            shape.append(dim)
        return cls(_str(d, "name", path), _choice(d, "dtype", path, TENSOR_DTYPES), tuple(shape))

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ValidationCase:
    """Measured max abs error, max error relative to the output's peak, and SNR (dB) per output."""

    name: str
    max_abs: dict
    max_rel: dict
    snr_db: dict

    @classmethod
    def from_dict(cls, data, path: str) -> "ValidationCase":
        d = _obj(data, path, ("name", "max_abs", "max_rel", "snr_db"))
        return cls(_str(d, "name", path), _float_map(d, "max_abs", path), _float_map(d, "max_rel", path),
                   _float_map(d, "snr_db", path))

    def to_dict(self) -> dict:
        return {"name": self.name, "max_abs": dict(self.max_abs), "max_rel": dict(self.max_rel),
                "snr_db": dict(self.snr_db)}


@dataclass(frozen=True)
class Tolerance:
    """|got - ref| <= atol + rtol |ref| everywhere, or (quantized graphs) an SNR floor in dB."""

    atol: float
    rtol: float
    min_snr_db: Optional[float] = None

    @classmethod
    def from_dict(cls, data, path: str) -> "Tolerance":
        d = _obj(data, path, ("atol", "rtol", "min_snr_db"))
        snr = None if d["min_snr_db"] is None else _float(d, "min_snr_db", path)
        return cls(_float(d, "atol", path, nonnegative=True), _float(d, "rtol", path, nonnegative=True), snr)

    def to_dict(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol, "min_snr_db": self.min_snr_db}


@dataclass(frozen=True)
class Validation:
    passed: bool
    cases: tuple
    tolerance: dict   # output name -> Tolerance

    @classmethod
    def from_dict(cls, data, path: str) -> "Validation":
        d = _obj(data, path, ("passed", "cases", "tolerance"))
        cases = tuple(ValidationCase.from_dict(c, f"{path}.cases[{i}]") for i, c in enumerate(_list(d, "cases", path)))
        tol_path = _join(path, "tolerance")
        tolerance = {k: Tolerance.from_dict(v, _join(tol_path, k)) for k, v in _dict(d, "tolerance", path).items()}
        return cls(_bool(d, "passed", path), cases, tolerance)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "cases": [c.to_dict() for c in self.cases],
                "tolerance": {k: t.to_dict() for k, t in self.tolerance.items()}}


@dataclass(frozen=True)
class Component:
    """One exported graph (ONNX file) with its I/O spec and validation record."""

    file: str
    sha256: str
    format: str
    precision: str
    opset: int
    spec_hash: str
    inputs: tuple
    outputs: tuple
    validation: Validation

    @classmethod
    def from_dict(cls, data, path: str) -> "Component":
        d = _obj(data, path, ("file", "sha256", "format", "precision", "opset", "spec_hash",
                              "inputs", "outputs", "validation"))
        io = {}
        for key in ("inputs", "outputs"):
            specs = tuple(TensorSpec.from_dict(s, f"{path}.{key}[{i}]") for i, s in enumerate(_list(d, key, path)))
            names = [s.name for s in specs]
            if len(set(names)) != len(names):
                raise ManifestError(f"{path}.{key} has duplicate tensor names: {names}")
            io[key] = specs
        return cls(_rel_file(d, "file", path), _sha(d, "sha256", path), _choice(d, "format", path, COMPONENT_FORMATS),
                   _choice(d, "precision", path, COMPONENT_PRECISIONS), _int(d, "opset", path, minimum=1),
                   _str(d, "spec_hash", path), io["inputs"], io["outputs"],
                   Validation.from_dict(d["validation"], _join(path, "validation")))

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "format": self.format, "precision": self.precision,
                "opset": self.opset, "spec_hash": self.spec_hash,
                "inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs],
                "validation": self.validation.to_dict()}


@dataclass(frozen=True)
class Engine:
    """A TensorRT engine for one graph and bucket, tied to a GPU and TensorRT version."""

    file: str
    sha256: str
    graph: str
    bucket: str
    precision: str
    tensorrt: str
    gpu: str
    compute_capability: str
    min_batch: int
    max_batch: int
    build_options: dict
    validation: Optional[dict]

    _KEYS = ("file", "sha256", "graph", "bucket", "precision", "tensorrt", "gpu", "compute_capability",
             "min_batch", "max_batch", "build_options", "validation")

    @classmethod
    def from_dict(cls, data, path: str) -> "Engine":
        d = _obj(data, path, cls._KEYS)
        min_batch, max_batch = _int(d, "min_batch", path, minimum=1), _int(d, "max_batch", path, minimum=1)
        if max_batch < min_batch:
            raise ManifestError(f"{path}: max_batch {max_batch} is below min_batch {min_batch}")
        validation = d["validation"]
        if validation is not None:
            validation = _json_value(_dict(d, "validation", path), _join(path, "validation"))
        return cls(_rel_file(d, "file", path), _sha(d, "sha256", path), _str(d, "graph", path),
                   _str(d, "bucket", path), _str(d, "precision", path), _str(d, "tensorrt", path),
                   _str(d, "gpu", path), _str(d, "compute_capability", path), min_batch, max_batch,
                   _json_value(_dict(d, "build_options", path), _join(path, "build_options")), validation)

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self._KEYS}
        out["build_options"] = _json_value(self.build_options, "build_options")
        out["validation"] = None if self.validation is None else _json_value(self.validation, "validation")
        return out


@dataclass(frozen=True)
class Tuning:
    """The solver setting chosen by measurement (on real weights) and what was measured."""

    solver: str
    steps: int
    cfg_rate: float
    target_db: float
    measured: dict

    @classmethod
    def from_dict(cls, data, path: str = "tuning") -> "Tuning":
        d = _obj(data, path, ("solver", "steps", "cfg_rate", "target_db", "measured"))
        return cls(_choice(d, "solver", path, tuple(SOLVERS)), _int(d, "steps", path, minimum=1),
                   _float(d, "cfg_rate", path, nonnegative=True), _float(d, "target_db", path),
                   _json_value(_dict(d, "measured", path), _join(path, "measured")))

    def to_dict(self) -> dict:
        return {"solver": self.solver, "steps": self.steps, "cfg_rate": self.cfg_rate,
                "target_db": self.target_db, "measured": _json_value(self.measured, "measured")}


# ---------------------------------------------------------------- the manifest

def _no_duplicate_keys(pairs) -> dict:
    """json object hook: a repeated key would otherwise silently keep the last value."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ManifestError(f"duplicate key {key!r} in {MANIFEST_NAME}")
        out[key] = value
    return out


_TOP_KEYS = ("schema_version", "tool", "versions", "checkpoint", "audio", "defaults", "buckets",
             "components", "engines", "tuning")


def _check_schema_version(data) -> None:
    """Checked before anything else: a newer manifest may have keys we do not know."""
    if not isinstance(data, dict):
        raise ManifestError(f"manifest must be a JSON object, got {type(data).__name__}")
    if "schema_version" not in data:
        raise ManifestError("missing key schema_version")
    v = data["schema_version"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise _type_error("schema_version", "an integer", v)
    if v not in SUPPORTED_SCHEMA_VERSIONS:
        readable = ", ".join(map(str, SUPPORTED_SCHEMA_VERSIONS))
        raise ManifestError(
            f"schema_version {v} is not supported: this runtime reads schema_version {readable}; "
            "use the s3gen-aot version that exported these artifacts, or re-export them"
        )


@dataclass(frozen=True)
class Manifest:
    tool: Tool
    versions: Versions
    checkpoint: Checkpoint
    audio: Audio
    defaults: Defaults
    buckets: tuple            # of Bucket, smallest first
    components: dict          # graph name -> Component
    engines: tuple = ()       # of Engine
    tuning: Optional[Tuning] = None
    schema_version: int = field(default=SCHEMA_VERSION)

    @classmethod
    def from_dict(cls, data) -> "Manifest":
        _check_schema_version(data)
        d = _obj(data, "", _TOP_KEYS)
        buckets = tuple(_bucket_from_dict(b, f"buckets[{i}]") for i, b in enumerate(_list(d, "buckets", "")))
        frames = [b.mel_frames for b in buckets]
        if not buckets or frames != sorted(set(frames)) or len({b.name for b in buckets}) != len(buckets):
            raise ManifestError(f"buckets must be non-empty, unique and sorted by mel_frames, got {frames}")
        components = {name: Component.from_dict(c, f"components.{name}")
                      for name, c in _dict(d, "components", "").items()}
        engines = tuple(Engine.from_dict(e, f"engines[{i}]") for i, e in enumerate(_list(d, "engines", "")))
        bucket_names = [b.name for b in buckets]
        for i, e in enumerate(engines):
            if e.graph not in components:
                raise ManifestError(f"engines[{i}].graph {e.graph!r} is not a component ({', '.join(components)})")
            if e.bucket not in bucket_names:
                raise ManifestError(f"engines[{i}].bucket {e.bucket!r} is not a bucket ({', '.join(bucket_names)})")
        tuning = None if d["tuning"] is None else Tuning.from_dict(d["tuning"])
        return cls(Tool.from_dict(d["tool"]), Versions.from_dict(d["versions"]),
                   Checkpoint.from_dict(d["checkpoint"]), Audio.from_dict(d["audio"]),
                   Defaults.from_dict(d["defaults"]), buckets, components, engines, tuning, d["schema_version"])

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "tool": self.tool.to_dict(),
            "versions": self.versions.to_dict(),
            "checkpoint": self.checkpoint.to_dict(),
            "audio": self.audio.to_dict(),
            "defaults": self.defaults.to_dict(),
            "buckets": [_bucket_to_dict(b) for b in self.buckets],
            "components": {name: c.to_dict() for name, c in self.components.items()},
            "engines": [e.to_dict() for e in self.engines],
            "tuning": None if self.tuning is None else self.tuning.to_dict(),
        }

    def dumps(self) -> str:
        """Canonical JSON: indent 2, sorted keys, no NaN."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def loads(cls, text: str) -> "Manifest":
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{MANIFEST_NAME} is not valid JSON: {e}") from e
        return cls.from_dict(data)

    def component(self, name: str) -> Component:
        if name not in self.components:
            raise ArtifactError(
                f"no component {name!r} in these artifacts; available: {', '.join(sorted(self.components)) or 'none'}"
            )
        return self.components[name]

    def files(self) -> list:
        """(key path, relative file, sha256) of every component and engine file."""
        out = [(f"components.{n}", c.file, c.sha256) for n, c in self.components.items()]
        out += [(f"engines[{i}]", e.file, e.sha256) for i, e in enumerate(self.engines)]
        return out


# ---------------------------------------------------------------- files

def sha256_file(path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (engines and graphs can be GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_size)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def verify_files(folder, manifest: Manifest) -> None:
    """Every component and engine file exists and has its recorded sha256."""
    folder = Path(folder)
    for where, rel, expected in manifest.files():
        p = folder / rel
        if not p.is_file():
            raise ArtifactError(f"{where}: file {rel} is missing from {folder}")
        actual = sha256_file(p)
        if actual != expected:
            raise ArtifactError(
                f"{where}: file {rel} is tampered or corrupt: sha256 {actual[:12]}... "
                f"but the manifest expects {expected[:12]}...; re-export the artifacts"
            )


def write_manifest(folder, manifest: Manifest) -> Path:
    """Write folder/manifest.json atomically (a reader never sees half a file).

    The text is parsed back with the strict reader first, so the export side can
    never write a manifest that the runtime would refuse.
    """
    folder = Path(folder)
    text = manifest.dumps()
    Manifest.loads(text)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / MANIFEST_NAME
    tmp = folder / (MANIFEST_NAME + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target


def load_manifest(folder, verify: bool = True) -> Manifest:
    """Read and check folder/manifest.json; with verify, check every file's sha256 too."""
    p = Path(folder) / MANIFEST_NAME
    if not p.is_file():
        raise ArtifactError(f"no {MANIFEST_NAME} in {folder}: not an s3gen-aot artifact folder")
    manifest = Manifest.loads(p.read_text(encoding="utf-8"))
    manifest.audio.check_runtime()
    if verify:
        verify_files(folder, manifest)
    return manifest

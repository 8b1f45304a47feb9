"""The manifest's graph records: each exported component (file, I/O spec, validation record) and each
TensorRT engine built from one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ManifestError
from .fields import (json_copy, key_path, read_bool, read_choice, read_dict, read_float, read_float_map, read_int,
                     read_list, read_object, read_rel_file, read_sha256, read_str, type_error)

COMPONENT_FORMATS = ("onnx",)
COMPONENT_PRECISIONS = ("fp32", "int8")
# Optional graphs that turn reference audio into a voice (x-vector, prompt tokens); exported when the
# checkpoint has the voice models, always both, always fp32, never built into TensorRT engines.
VOICE_COMPONENTS = ("speaker_encoder", "tokenizer")
TENSOR_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, dtype and shape (ints, or strings for named axes)."""

    name: str
    dtype: str
    shape: tuple

    @classmethod
    def from_dict(cls, data, path: str) -> "TensorSpec":
        d = read_object(data, path, ("name", "dtype", "shape"))
        shape = []
        for i, dim in enumerate(read_list(d, "shape", path)):
            if isinstance(dim, bool) or not isinstance(dim, (int, str)) or (isinstance(dim, int) and dim < 0):
                raise type_error(f"{path}.shape[{i}]", "a non-negative integer or an axis name", dim)
            shape.append(dim)
        return cls(read_str(d, "name", path), read_choice(d, "dtype", path, TENSOR_DTYPES), tuple(shape))

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
        d = read_object(data, path, ("name", "max_abs", "max_rel", "snr_db"))
        return cls(read_str(d, "name", path), read_float_map(d, "max_abs", path), read_float_map(d, "max_rel", path),
                   read_float_map(d, "snr_db", path))

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
        d = read_object(data, path, ("atol", "rtol", "min_snr_db"))
        snr = None if d["min_snr_db"] is None else read_float(d, "min_snr_db", path)
        return cls(read_float(d, "atol", path, nonnegative=True), read_float(d, "rtol", path, nonnegative=True), snr)

    def to_dict(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol, "min_snr_db": self.min_snr_db}


@dataclass(frozen=True)
class Validation:
    passed: bool
    cases: tuple
    tolerance: dict   # output name -> Tolerance

    @classmethod
    def from_dict(cls, data, path: str) -> "Validation":
        d = read_object(data, path, ("passed", "cases", "tolerance"))
        cases = tuple(ValidationCase.from_dict(c, f"{path}.cases[{i}]") for i, c in enumerate(read_list(d, "cases", path)))
        tol_path = key_path(path, "tolerance")
        tolerance = {k: Tolerance.from_dict(v, key_path(tol_path, k)) for k, v in read_dict(d, "tolerance", path).items()}
        return cls(read_bool(d, "passed", path), cases, tolerance)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "cases": [c.to_dict() for c in self.cases],
                "tolerance": {k: t.to_dict() for k, t in self.tolerance.items()}}

    def failures(self) -> list:
        """The recorded checks that fail, one line each. The exporter also fails a case on a shape
        mismatch or NaN/Inf, which leave no measurement: that shows as a missing output."""
        if not self.cases:
            return ["no validation case was recorded"]
        return [f"case {case.name!r} {line}" for case in self.cases
                for name, tol in self.tolerance.items() for line in _output_failures(case, name, tol)]


def _output_failures(case: ValidationCase, name: str, tol: Tolerance) -> list:
    if name not in case.max_abs:
        return [f"output {name!r}: not measured (shape mismatch or NaN/Inf)"]
    if tol.min_snr_db is not None:
        snr = case.snr_db.get(name, float("-inf"))
        return [f"output {name!r}: SNR {snr:.1f} dB below the {tol.min_snr_db:g} dB floor"] if snr < tol.min_snr_db else []
    err, rel = case.max_abs[name], case.max_rel.get(name, 0.0)
    peak = err / rel if rel > 0 else 0.0
    # The exporter's test is elementwise (|got - ref| <= atol + rtol |ref|); the record keeps only the
    # maximum error and the reference's peak, so an error above atol is the most it can point at.
    if err > tol.atol + tol.rtol * peak:
        return [f"output {name!r}: max abs error {err:.3g} exceeds atol {tol.atol:g} + rtol {tol.rtol:g} * peak {peak:.3g}"]
    if err > tol.atol:
        return [f"output {name!r}: max abs error {err:.3g} exceeds atol {tol.atol:g} (rtol {tol.rtol:g} * |ref| may not cover it)"]
    return []


@dataclass(frozen=True)
class SelfTest:
    """An int8 graph's load-time check (selftest.py): a probe file of inputs and fp32 outputs, the SNR
    floor per output, the SNRs measured at export and the CPU they were measured on (its int8 kernels
    decide them)."""

    file: str
    sha256: str
    min_snr_db: dict
    snr_db: dict
    cpu: dict

    _KEYS = ("file", "sha256", "min_snr_db", "snr_db", "cpu")

    @classmethod
    def from_dict(cls, data, path: str) -> "SelfTest":
        d = read_object(data, path, cls._KEYS)
        cpu = json_copy(read_dict(d, "cpu", path), key_path(path, "cpu"))
        floors, measured = read_float_map(d, "min_snr_db", path), read_float_map(d, "snr_db", path)
        if not floors or set(floors) != set(measured):
            raise ManifestError(f"{path}: min_snr_db and snr_db must name the same, non-empty set of outputs")
        return cls(read_rel_file(d, "file", path), read_sha256(d, "sha256", path), floors, measured, cpu)

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "min_snr_db": dict(self.min_snr_db), "snr_db": dict(self.snr_db),
                "cpu": json_copy(self.cpu, "cpu")}


@dataclass(frozen=True)
class Component:
    """One exported graph (ONNX file) with its I/O spec and validation record; int8 graphs also carry
    their self-test (fp32 graphs: None)."""

    file: str
    sha256: str
    format: str
    precision: str
    opset: int
    spec_hash: str
    inputs: tuple
    outputs: tuple
    validation: Validation
    selftest: Optional[SelfTest] = None

    @classmethod
    def from_dict(cls, data, path: str) -> "Component":
        d = read_object(data, path, ("file", "sha256", "format", "precision", "opset", "spec_hash",
                              "inputs", "outputs", "validation", "selftest"))
        io = {}
        for key in ("inputs", "outputs"):
            specs = tuple(TensorSpec.from_dict(s, f"{path}.{key}[{i}]") for i, s in enumerate(read_list(d, key, path)))
            names = [s.name for s in specs]
            if len(set(names)) != len(names):
                raise ManifestError(f"{path}.{key} has duplicate tensor names: {names}")
            io[key] = specs
        return cls(read_rel_file(d, "file", path), read_sha256(d, "sha256", path), read_choice(d, "format", path, COMPONENT_FORMATS),
                   read_choice(d, "precision", path, COMPONENT_PRECISIONS), read_int(d, "opset", path, minimum=1),
                   read_str(d, "spec_hash", path), io["inputs"], io["outputs"],
                   Validation.from_dict(d["validation"], key_path(path, "validation")),
                   _selftest(d, path))

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "format": self.format, "precision": self.precision,
                "opset": self.opset, "spec_hash": self.spec_hash,
                "inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs],
                "validation": self.validation.to_dict(),
                "selftest": None if self.selftest is None else self.selftest.to_dict()}


def _selftest(d: dict, path: str) -> Optional[SelfTest]:
    """int8 graphs must carry one: their accuracy depends on the CPU they run on."""
    if d["selftest"] is None:
        if d["precision"] == "int8":
            raise ManifestError(f"{path}.selftest is null: an int8 graph needs its self-test probe (re-export with --int8)")
        return None
    return SelfTest.from_dict(d["selftest"], key_path(path, "selftest"))


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
        d = read_object(data, path, cls._KEYS)
        min_batch, max_batch = read_int(d, "min_batch", path, minimum=1), read_int(d, "max_batch", path, minimum=1)
        if max_batch < min_batch:
            raise ManifestError(f"{path}: max_batch {max_batch} is below min_batch {min_batch}")
        validation = d["validation"]
        if validation is not None:
            validation = json_copy(read_dict(d, "validation", path), key_path(path, "validation"))
        return cls(read_rel_file(d, "file", path), read_sha256(d, "sha256", path), read_str(d, "graph", path),
                   read_str(d, "bucket", path), read_str(d, "precision", path), read_str(d, "tensorrt", path),
                   read_str(d, "gpu", path), read_str(d, "compute_capability", path), min_batch, max_batch,
                   json_copy(read_dict(d, "build_options", path), key_path(path, "build_options")), validation)

    def failures(self) -> list:
        """Problems of a validation record that says it failed (None: not validated, nothing to say)."""
        record = self.validation
        if record is None or record.get("passed") is not False:
            return []
        lines = [str(record["error"])] if record.get("error") else []
        lines += [f"case {c.get('name')!r}: {p}" for c in record.get("cases", []) if isinstance(c, dict)
                  for p in c.get("problems", [])]
        return lines or ["the record gives no reason"]

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self._KEYS}
        out["build_options"] = json_copy(self.build_options, "build_options")
        out["validation"] = None if self.validation is None else json_copy(self.validation, "validation")
        return out

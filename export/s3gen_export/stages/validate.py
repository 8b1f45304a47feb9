"""Validate an exported graph against eager PyTorch: output names, shapes, NaN/Inf, max errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..components.base import Case, ComponentSpec, Tolerance
from s3gen_runtime.metrics import snr_db


@dataclass
class CaseResult:
    case: str
    max_abs: dict[str, float] = field(default_factory=dict)
    max_rel: dict[str, float] = field(default_factory=dict)
    snr_db: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class ValidationReport:
    component: str
    cases: list[CaseResult]
    tolerances: dict[str, Tolerance]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    def table(self) -> str:
        """A plain-text table of the errors, one row per case and output."""
        lines = [f"{self.component}: {'PASS' if self.passed else 'FAIL'}",
                 f"  {'case':<14} {'output':<10} {'max_abs':>10} {'max_rel':>10} {'snr_db':>7} "
                 f"{'atol':>8} {'rtol':>8} {'min_snr':>7}"]
        for c in self.cases:
            for out, err in c.max_abs.items():
                tol = self.tolerances.get(out, Tolerance(0.0))
                floor = "-" if tol.min_snr_db is None else f"{tol.min_snr_db:g}"
                lines.append(f"  {c.case:<14} {out:<10} {err:>10.3g} {c.max_rel[out]:>10.3g} {c.snr_db[out]:>7.1f} "
                             f"{tol.atol:>8.1g} {tol.rtol:>8.1g} {floor:>7}")
            lines += [f"  {c.case:<14} ! {p}" for p in c.problems]
        return "\n".join(lines)

    def to_manifest(self) -> dict:
        return {"passed": self.passed,
                "cases": [{"name": c.case, "max_abs": c.max_abs, "max_rel": c.max_rel, "snr_db": c.snr_db}
                          for c in self.cases],
                "tolerance": {k: {"atol": v.atol, "rtol": v.rtol, "min_snr_db": v.min_snr_db}
                              for k, v in self.tolerances.items()}}


def compare(name: str, got: np.ndarray, ref: np.ndarray, tol: Tolerance, result: CaseResult) -> None:
    """Record errors of one output; shape, finiteness and tolerance misses become problems."""
    if got.shape != ref.shape:
        result.problems.append(f"{name}: shape {got.shape} != reference {ref.shape}")
        return
    if not np.all(np.isfinite(got)):
        result.problems.append(f"{name}: {int(np.sum(~np.isfinite(got)))} non-finite values")
        return
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    result.max_abs[name] = float(diff.max()) if diff.size else 0.0
    result.max_rel[name] = result.max_abs[name] / scale if scale > 0 else 0.0
    result.snr_db[name] = snr_db(got, ref)
    if tol.min_snr_db is not None:
        if result.snr_db[name] < tol.min_snr_db:
            result.problems.append(f"{name}: SNR {result.snr_db[name]:.1f} dB below the {tol.min_snr_db:g} dB floor")
        return
    bound = tol.atol + tol.rtol * np.abs(ref.astype(np.float64))
    if np.any(diff > bound):
        result.problems.append(f"{name}: max abs error {result.max_abs[name]:.3g} exceeds atol {tol.atol:g} "
                               f"+ rtol {tol.rtol:g} * |ref|")


@torch.inference_mode()
def reference_outputs(module: torch.nn.Module, spec: ComponentSpec, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    out = module(*(torch.from_numpy(feeds[n]) for n in spec.input_names))
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.numpy() for o in out]


_session_threads = 0   # ONNX Runtime's default (one per core); export workers take their share


def set_session_threads(threads: int) -> None:
    """Intra-op threads of the sessions this process opens for validation (0: ONNX Runtime's default)."""
    global _session_threads
    _session_threads = threads


def onnx_session(path: Path):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = _session_threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def validate_component(model: torch.nn.Module, spec: ComponentSpec, path: Path,
                       cases: tuple[Case, ...] | None = None, seed: int = 1234,
                       tolerances: dict[str, Tolerance] | None = None, progress=None) -> ValidationReport:
    """Run the ONNX graph and eager PyTorch on the same random inputs at each case and compare."""
    module = (spec.build_reference or spec.build_module)(model).eval()
    session = onnx_session(path)
    tolerances = tolerances or spec.tolerances
    graph_outputs = [o.name for o in session.get_outputs()]
    results = []
    for i, case in enumerate(cases or spec.validation_cases):
        if progress:
            progress(f"  validate {spec.name} [{i + 1}/{len(cases or spec.validation_cases)}] {case.name}")
        result = CaseResult(case.name)
        if graph_outputs != spec.output_names:
            result.problems.append(f"outputs {graph_outputs} != spec {spec.output_names}")
            results.append(result)
            continue
        feeds = spec.make_inputs(case, np.random.default_rng(seed + i))
        got = session.run(spec.output_names, feeds)
        for name, g, r in zip(spec.output_names, got, reference_outputs(module, spec, feeds)):
            compare(name, g, r, tolerances[name], result)
        results.append(result)
    return ValidationReport(spec.name, results, tolerances)

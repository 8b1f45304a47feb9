"""What the export stages hand each other: one exported graph file, its manifest record, and the export's error.

A module of its own so that `exporter` (which runs the stages), `quantize` (one stage) and `vocos_export`
(which swaps one graph) all import it without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from s3gen_runtime.manifest import sha256_file

from ..components.base import ComponentSpec
from .validate import ValidationReport


class ExportError(RuntimeError):
    """The export could not be done or did not validate; the message says why."""


@dataclass
class ExportedGraph:
    spec: ComponentSpec
    path: Path
    precision: str = "fp32"
    report: ValidationReport | None = None
    name: str = ""
    selftest: dict | None = None   # int8 only: file (relative), snr_db, min_snr_db, cpu

    def __post_init__(self):
        self.name = self.name or self.spec.name


def component_record(out: Path, g: ExportedGraph) -> dict:
    return {"file": g.path.relative_to(out).as_posix(), "sha256": sha256_file(g.path), "format": "onnx",
            "precision": g.precision, "opset": g.spec.opset, "spec_hash": g.spec.spec_hash(),
            "inputs": [t.to_manifest() for t in g.spec.inputs], "outputs": [t.to_manifest() for t in g.spec.outputs],
            "validation": g.report.to_manifest(), "selftest": selftest_record(out, g.selftest)}


def selftest_record(out: Path, selftest: dict | None) -> dict | None:
    if selftest is None:
        return None
    return {**selftest, "sha256": sha256_file(Path(out) / selftest["file"])}

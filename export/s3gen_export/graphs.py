"""What the export stages hand each other: one exported graph file, and the export's error.

A module of its own so that `exporter` (which runs the stages) and `quantize` (one stage) both
import it without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .components.base import ComponentSpec
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

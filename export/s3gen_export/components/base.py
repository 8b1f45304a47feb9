"""Declarative export specs: one per graph (inputs, outputs, named axes, opset, tolerances, dummies).

A spec says what a graph is; `onnx_export.py` turns a spec plus the prepared model into a file and
`validate.py` checks that file against eager PyTorch at the spec's validation cases.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from torch import nn

DEFAULT_OPSET = 18   # what torch's exporter emits natively; TensorRT 10 parses it


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str                       # numpy dtype name: float32, int64
    shape: tuple[int | str, ...]     # ints are fixed, strings are named dynamic axes

    def to_manifest(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Tolerance:
    """Elementwise |got - ref| <= atol + rtol |ref|; or, when min_snr_db is set (quantized graphs),
    the output's SNR against the reference must reach that floor."""
    atol: float
    rtol: float = 0.0
    min_snr_db: float | None = None


@dataclass(frozen=True)
class Case:
    """A batch to export or validate at: one tuple of lengths per row. What the lengths are is up to the
    component's input maker: (P prompt tokens, N new tokens) or (P, N, F) for the token -> wav graphs
    (`lengths`, `prompt_frames`: F defaults to 2P, and 2P + 1 is upstream's odd prompt); (frames,) for the
    voice graphs (`frame_lengths`)."""
    name: str
    rows: tuple[tuple[int, ...], ...]

    @property
    def batch(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    tolerances: dict[str, Tolerance]
    build_module: Callable[[nn.Module], nn.Module]          # prepared S3Gen -> graph module
    make_inputs: Callable[[Case, np.random.Generator], dict[str, np.ndarray]]
    export_case: Case
    validation_cases: tuple[Case, ...]
    # axis name -> (base axis, multiplier) for axes that are a fixed multiple of another
    derived_axes: dict[str, tuple[str, int]] = field(default_factory=dict)
    opset: int = DEFAULT_OPSET
    description: str = ""
    # attention written as com.microsoft.MultiHeadAttention (ONNX Runtime's fused kernel); TensorRT
    # builds get a standard-op rewrite of the same graph (fused_attention.decompose_multi_head_attention)
    fused_attention: bool = False
    # relative-position attention computed head by head (model.encoder.use_head_by_head_attention):
    # same maths, a fraction of the score buffers alive at once
    head_by_head_attention: bool = False
    # never quantized (the int8 pass skips it): a graph run once per voice, whose outputs are rounded
    # (tokens) or pooled (x-vector), gains little from int8 and could flip tokens
    fp32_only: bool = False
    # what validation compares against, when it is not the exported module itself (Vocos: the vocos
    # package's eager decode, while the graph uses convolutional ISTFT and padding masks)
    build_reference: Callable[[nn.Module], nn.Module] | None = None

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def declaration(self) -> dict:
        """The declarative part of the spec (what the hash covers)."""
        return {
            "name": self.name, "opset": self.opset,
            "inputs": [t.to_manifest() for t in self.inputs],
            "outputs": [t.to_manifest() for t in self.outputs],
            "derived_axes": {k: list(v) for k, v in sorted(self.derived_axes.items())},
            "tolerances": {k: asdict(v) for k, v in sorted(self.tolerances.items())},
            **({"fused_attention": True} if self.fused_attention else {}),
            **({"head_by_head_attention": True} if self.head_by_head_attention else {}),
            **({"fp32_only": True} if self.fp32_only else {}),
        }

    def spec_hash(self) -> str:
        blob = json.dumps(self.declaration(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# Shapes shared by the three graphs' validation: none equals an export case, one is batch 2 with
# unequal lengths (padding must be inert), one is batch 1 long enough to cross 512 mel frames. Odd
# prompts (F = 2P + 1) appear alone and beside an even row, so each row's own F must be honoured.
# The export case has an odd row too: its prompt width (13) then equals no other axis, so the
# exporter cannot tie prompt_frames to prompt_tokens.
EXPORT_CASE = Case("export_b2", ((6, 9, 13), (4, 5)))
VALIDATION_CASES = (
    Case("b1_short_odd", ((3, 5, 7),)),
    Case("b1_long", ((50, 210),)),
    Case("b2_unequal_odd_even", ((25, 35, 51), (10, 14))),
    Case("b3_mixed", ((8, 40), (30, 6), (12, 20))),
)


def lengths(case: Case, which: str, scale: int = 1) -> np.ndarray:
    """Per-row lengths: 'prompt' tokens, 'new' tokens or 'total' tokens, times scale."""
    index = {"prompt": (0,), "new": (1,), "total": (0, 1)}[which]
    return np.array([sum(row[i] for i in index) * scale for row in case.rows], dtype=np.int64)


def prompt_frames(case: Case) -> np.ndarray:
    """Per-row prompt mel frames F: the row's third entry, else 2P."""
    return np.array([row[2] if len(row) > 2 else 2 * row[0] for row in case.rows], dtype=np.int64)


def vocoded_frames(case: Case) -> np.ndarray:
    """Per-row frames the vocoder gets: T - F with T = 2 (P + N), i.e. 2N, or 2N - 1 for an odd prompt."""
    return lengths(case, "total", scale=2) - prompt_frames(case)


def frame_lengths(case: Case) -> np.ndarray:
    """Per-row frame counts of a voice-graph case (rows are (frames,))."""
    return np.array([row[0] for row in case.rows], dtype=np.int64)


def length_mask(lens: np.ndarray, size: int) -> np.ndarray:
    return (np.arange(size)[None, :] < lens[:, None]).astype(np.float32)

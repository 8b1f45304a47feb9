"""The rounding half of the speech tokenizer's FSQ (finite scalar quantization), in numpy.

The tokenizer graph stops at h = tanh(project_down(hidden)) * 0.999, 8 values per token in (-1, 1).
Each value rounds to -1, 0 or 1, and the token id is the base-3 number of the 8 digits:
token = sum_i (round(h_i) + 1) * 3**i, in [0, 6561).

Rounding is discontinuous at |h| = 0.5: a value that close to a boundary may round differently after
any float32 reordering (another backend, another CPU). `fsq_tokens` reports those positions so tests
and callers can tell a legitimate tie-break from a wrong model.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

FSQ_LEVELS = 3
FSQ_DIM = 8
FSQ_SCALE = 0.9990000128746033   # upstream's 0.999 as the float32 it is applied as
DEFAULT_MARGIN = 1e-4

__all__ = ["FSQ_LEVELS", "FSQ_DIM", "FSQ_SCALE", "DEFAULT_MARGIN", "FSQTokens", "fsq_tokens"]


class FSQTokens(NamedTuple):
    tokens: np.ndarray          # int64, the FSQ values' shape without the last axis
    near_boundary: np.ndarray   # bool, same shape: some value lies within `margin` of a rounding boundary


def fsq_tokens(fsq: np.ndarray, margin: float = DEFAULT_MARGIN) -> FSQTokens:
    """(..., 8) pre-rounding FSQ values -> token ids (...) and where a value is within `margin` of +-0.5.

    np.rint rounds half to even, as torch.round does upstream."""
    h = np.asarray(fsq)
    if h.shape[-1:] != (FSQ_DIM,):
        raise ValueError(f"FSQ values must have {FSQ_DIM} values on the last axis, got shape {h.shape}")
    digits = np.rint(h).astype(np.int64) + 1
    powers = FSQ_LEVELS ** np.arange(FSQ_DIM, dtype=np.int64)
    tokens = (digits * powers).sum(axis=-1)
    near = (np.abs(np.abs(h.astype(np.float64)) - 0.5) < margin).any(axis=-1)
    return FSQTokens(tokens, near)

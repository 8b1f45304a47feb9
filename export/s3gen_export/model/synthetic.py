"""The deterministic synthetic S3Gen checkpoint.

A pure function of each state-dict entry's name and shape: a splitmix64 hash of
(crc32(name), flat index) gives a uniform value in [-1, 1), which a rule on the
name scales to a plausible magnitude. No random-number library is involved, so
the same weights can be rebuilt anywhere, bit for bit; the golden reference
outputs in the shared folder were produced by upstream S3Gen loaded with exactly
these weights.

numpy only at import: the runtime side may use it too. Writing a checkpoint file
(`write_synthetic_checkpoint`) needs torch and imports it when called.
"""
from __future__ import annotations

import json
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = [
    "SYNTHESISED_PREFIXES",
    "uniform",
    "synthetic_tensor",
    "synthetic_state_dict",
    "layout_from_json",
    "write_synthetic_checkpoint",
]

# The parts of an upstream checkpoint the model has: tokens -> wav, and the voice models.
SYNTHESISED_PREFIXES = ("flow.", "mel2wav.", "speaker_encoder.", "tokenizer.")
# computed by upstream at load (mel basis, window), never synthesised
COMPUTED_BUFFERS = ("tokenizer._mel_filters", "tokenizer.window")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)


def uniform(key: str, n: int) -> np.ndarray:
    """`n` float64 values in [-1, 1): splitmix64 of (crc32(key), index), top 53 bits."""
    seed = np.uint64(zlib.crc32(key.encode("utf-8")))
    with np.errstate(over="ignore"):
        z = np.arange(int(n), dtype=np.uint64)
        z += seed * _GOLDEN + _GOLDEN  # wraps modulo 2**64
        z ^= z >> _S30
        z *= _M1
        z ^= z >> _S27
        z *= _M2
        z ^= z >> _S31
    z >>= _S11
    u = z.astype(np.float64)
    u *= 2.0 ** -53
    u *= 2.0
    u -= 1.0
    return u


def _as_dtype(dtype: Any) -> np.dtype:
    if isinstance(dtype, str) and dtype.startswith("torch."):
        dtype = dtype[len("torch."):]
    return np.dtype(dtype)


def synthetic_tensor(key: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """The synthetic value of one state-dict entry (first matching rule wins).

    u = uniform(key) in [-1, 1):
      integer dtype                                         -> zeros
      name ends 'running_var'                               -> 1 + 0.5*|u|
      name ends 'running_mean'                              -> 0.1*u
      name ends 'parametrizations.weight.original0' or 'weight_g' -> 1 + 0.2*u
      name ends 'bias'                                      -> 0.02*u
      2+ dims                                               -> u * sqrt(3 / fan_in), fan_in = prod(shape[1:])
      anything else (1-D gains, Snake alphas)               -> 1 + 0.1*u
    """
    shape = tuple(int(s) for s in shape)
    dt = _as_dtype(dtype)
    if np.issubdtype(dt, np.integer):
        return np.zeros(shape, dtype=dt)
    n = int(np.prod(shape)) if shape else 1
    u = uniform(key, n)
    if key.endswith("running_var"):
        v = 1.0 + 0.5 * np.abs(u)
    elif key.endswith("running_mean"):
        v = 0.1 * u
    elif key.endswith("parametrizations.weight.original0") or key.endswith("weight_g"):
        v = 1.0 + 0.2 * u
    elif key.endswith("bias"):
        v = 0.02 * u
    elif len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        v = u * np.sqrt(3.0 / fan_in)
    else:
        v = 1.0 + 0.1 * u
    return v.reshape(shape).astype(dt)


def synthetic_state_dict(
    expected: Mapping[str, tuple[tuple[int, ...], str]],
) -> dict[str, np.ndarray]:
    """Synthesise every model entry of `expected` (name -> (shape, dtype)): `flow.*`, `mel2wav.*`,
    `speaker_encoder.*`, `tokenizer.*` (integer entries are zeros). Anything else, and the tokenizer's
    computed buffers, are skipped. The order of `expected` is kept.
    """
    out: dict[str, np.ndarray] = {}
    for name, spec in expected.items():
        if not name.startswith(SYNTHESISED_PREFIXES) or name in COMPUTED_BUFFERS:
            continue
        shape, dtype = spec
        out[name] = synthetic_tensor(name, tuple(shape), dtype)
    return out


def layout_from_json(
    source: str | os.PathLike | Mapping[str, Any], variant: str
) -> dict[str, tuple[tuple[int, ...], str]]:
    """Read a state-dict layout file (like the golden `s3gen_state_dict.json`).

    `source` is a path or the already-parsed object: {variant: {name: {"shape": [...],
    "dtype": "float32"}}}. Returns name -> (shape tuple, dtype string), file order.
    """
    if isinstance(source, Mapping):
        data = source
    else:
        with open(source, encoding="utf-8") as f:
            data = json.load(f)
    if variant not in data or not isinstance(data[variant], Mapping):
        known = sorted(k for k, v in data.items() if isinstance(v, Mapping))
        raise KeyError(f"layout has no variant {variant!r} (has: {', '.join(known)})")
    return {
        name: (tuple(int(s) for s in entry["shape"]), str(entry["dtype"]))
        for name, entry in data[variant].items()
    }


def write_synthetic_checkpoint(
    path: str | os.PathLike,
    expected: Mapping[str, tuple[tuple[int, ...], str]],
    weight_norm: str = "parametrizations",
) -> Path:
    """Write the deterministic synthetic checkpoint for `expected` (name -> (shape, dtype)).

    `weight_norm` picks the stored form of weight-normed convs (see checkpoint.WEIGHT_NORM_FORMS)."""
    import torch   # here, not at the top: the synthetic weights themselves are numpy only

    from .checkpoint import save_checkpoint

    arrays = synthetic_state_dict(expected)
    return save_checkpoint({name: torch.from_numpy(a) for name, a in arrays.items()}, path, weight_norm=weight_norm)


def ensure_synthetic_checkpoint(path: str | os.PathLike, variant: str = "standard",
                                progress: Callable[[str], None] = print) -> Path:
    """The full synthetic checkpoint of `variant` (voice models included) at `path`: a file already there
    is reused when it holds exactly the expected keys (an older one without the voice models is
    rewritten), otherwise written. For the demo and the benchmarks."""
    from safetensors import safe_open

    from .s3gen import expected_layout

    path = Path(path)
    layout = expected_layout(variant, voice=True)
    if path.is_file():
        try:
            with safe_open(str(path), framework="numpy") as f:
                keys = set(f.keys())
        except Exception:   # unreadable: written again below
            keys = set()
        if keys == set(layout):
            progress(f"checkpoint {path} present, reusing it")
            return path
        progress(f"checkpoint {path} is not the current synthetic {variant} layout: writing it again")
    else:
        progress(f"writing the synthetic {variant} checkpoint to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_synthetic_checkpoint(path, layout)

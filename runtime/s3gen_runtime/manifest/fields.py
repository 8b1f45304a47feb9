"""Strict readers of manifest JSON: each takes (object, key, key path) and returns the value or raises
ManifestError naming the key path (e.g. `components.encoder.inputs[0].dtype`) and what was wrong."""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from typing import Optional

from ..errors import ManifestError

_SHA256 = re.compile(r"[0-9a-f]{64}")


def read_object(data, path: str, required: tuple) -> dict:
    """`data` as a dict with exactly the `required` keys (nullable ones are still required)."""
    if not isinstance(data, dict):
        raise ManifestError(f"{path or 'manifest'}: expected an object, got {type(data).__name__}")
    for key in data:
        if key not in required:
            raise ManifestError(f"unknown key {key_path(path, key)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ManifestError(f"missing key {key_path(path, missing[0])}" + (
            f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""))
    return data


def key_path(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def type_error(path: str, want: str, value) -> ManifestError:
    return ManifestError(f"{path} must be {want}, got {type(value).__name__} {value!r}")


def read_str(d: dict, key: str, path: str) -> str:
    v = d[key]
    if not isinstance(v, str):
        raise type_error(key_path(path, key), "a string", v)
    return v


def read_opt_str(d: dict, key: str, path: str) -> Optional[str]:
    return None if d[key] is None else read_str(d, key, path)


def read_int(d: dict, key: str, path: str, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise type_error(key_path(path, key), "an integer", v)
    if minimum is not None and v < minimum:
        raise ManifestError(f"{key_path(path, key)} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ManifestError(f"{key_path(path, key)} must be <= {maximum}, got {v}")
    return v


def as_number(v, path: str, nonnegative: bool = False) -> float:
    """A finite JSON number (ints allowed: JSON writes 1.0 as 1 in some tools)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise type_error(path, "a finite number", v)
    if nonnegative and v < 0:
        raise ManifestError(f"{path} must be >= 0, got {v}")
    return float(v)


def read_float(d: dict, key: str, path: str, nonnegative: bool = False) -> float:
    return as_number(d[key], key_path(path, key), nonnegative)


def read_bool(d: dict, key: str, path: str) -> bool:
    v = d[key]
    if not isinstance(v, bool):
        raise type_error(key_path(path, key), "true or false", v)
    return v


def read_choice(d: dict, key: str, path: str, choices) -> str:
    v = read_str(d, key, path)
    if v not in choices:
        raise ManifestError(f"{key_path(path, key)} is {v!r}; expected one of {', '.join(map(str, choices))}")
    return v


def read_sha256(d: dict, key: str, path: str) -> str:
    v = read_str(d, key, path)
    if not _SHA256.fullmatch(v):
        raise ManifestError(f"{key_path(path, key)} must be 64 lowercase hex digits, got {v!r}")
    return v


def read_rel_file(d: dict, key: str, path: str) -> str:
    """A file inside the artifact folder: relative, no '..', forward slashes."""
    v = read_str(d, key, path)
    p = PurePosixPath(v)
    if not v or p.is_absolute() or ".." in p.parts or "\\" in v:
        raise ManifestError(f"{key_path(path, key)} must be a relative path inside the artifact folder, got {v!r}")
    return v


def read_list(d: dict, key: str, path: str) -> list:
    v = d[key]
    if not isinstance(v, list):
        raise type_error(key_path(path, key), "a list", v)
    return v


def read_dict(d: dict, key: str, path: str) -> dict:
    v = d[key]
    if not isinstance(v, dict):
        raise type_error(key_path(path, key), "an object", v)
    return v


def json_copy(v, path: str):
    """A deep copy of free-form JSON data (build options, measurements), checked to be JSON."""
    if isinstance(v, dict):
        out = {}
        for k, item in v.items():
            if not isinstance(k, str):
                raise ManifestError(f"{path}: object keys must be strings, got {k!r}")
            out[k] = json_copy(item, key_path(path, k))
        return out
    if isinstance(v, (list, tuple)):
        return [json_copy(item, f"{path}[{i}]") for i, item in enumerate(v)]
    if isinstance(v, float) and not math.isfinite(v):
        raise ManifestError(f"{path}: NaN/Inf cannot be stored in JSON")
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    raise type_error(path, "JSON data", v)


def read_float_map(d: dict, key: str, path: str) -> dict:
    p = key_path(path, key)
    return {name: as_number(v, key_path(p, name), nonnegative=True) for name, v in read_dict(d, key, path).items()}

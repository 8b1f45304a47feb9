"""Shared pieces of the benchmarks: synthetic requests, error metrics, statistics, machine facts, JSON.

numpy and the standard library only (plus the runtime): importing this costs no torch.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import resource
import statistics
from pathlib import Path
from typing import Callable

import numpy as np

from s3gen_runtime.constants import TOKEN_RATE

Progress = Callable[[str], None]



# ---------------------------------------------------------------- requests

def tokens_for_seconds(seconds: float) -> int:
    return int(round(seconds * TOKEN_RATE))


# ---------------------------------------------------------------- statistics

def median(values) -> float:
    values = [float(v) for v in values]
    return float(statistics.median(values)) if values else float("nan")


def fit_power_law(x, y) -> dict:
    """Least squares of log y = a + k log x: returns exponent k, prefactor exp(a) and r^2."""
    lx, ly = np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64))
    k, a = np.polyfit(lx, ly, 1)
    pred = a + k * lx
    ss_res = float(np.sum((ly - pred) ** 2))
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    return {"exponent": float(k), "prefactor": float(math.exp(a)), "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}


# ---------------------------------------------------------------- process and machine

def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB: VmHWM, the high-water mark of this process image.

    Not ru_maxrss: Linux carries ru_maxrss across fork and exec, so a worker started by a parent
    holding 2.4 GB (after an in-process export) reported 2.4 GB before loading anything."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    rss = _status_mb("VmRSS")
    return rss if rss is not None else float("nan")


def load_average() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return float("nan")


def library_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("numpy", "onnxruntime", "onnx", "torch", "matplotlib", "s3gen-aot"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def machine_info() -> dict:
    from s3gen_runtime.cpu import cpu_info

    from .flops import peak_gflops

    return {
        "cpu_model": cpu_info()["model"],
        "cpu": cpu_info(),               # flags (AVX2/AVX-512/VNNI/BF16/AMX): the machines differ
        "peak_fp32": peak_gflops(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "platform": platform.platform(),
        "versions": library_versions(),
        "date": _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "load_average_at_start": load_average(),
    }


# ---------------------------------------------------------------- JSON

def finite(obj):
    """A JSON-safe deep copy: numpy scalars/arrays to Python, NaN/Inf floats to None."""
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, data) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path

"""What this CPU can do, as far as the graphs' speed and int8 accuracy depend on it.

ONNX Runtime picks its int8 GEMM kernel by CPU: with AVX-512 VNNI / AVX-VNNI / AMX the u8 x s8 dot
products accumulate in 32 bits; on plain AVX2 or AVX-512 they go through VPMADDUBSW, whose 16-bit
pair sums saturate. So the same int8 graph can be accurate on one machine and ~11 dB on another;
the manifest records the features int8 was validated with, and benchmarks record them with every
result.
"""
from __future__ import annotations

import os
import platform
from functools import lru_cache

# /proc/cpuinfo flag names that matter here, in the order they are reported
FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> dict:
    """{'model': str, 'flags': [feature, ...]} from /proc/cpuinfo text (first processor's entry)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"model": model, "flags": [f for f in FEATURES if f in flags]}


def int8_dot_product(flags) -> str:
    """How this CPU's int8 GEMMs accumulate: 'vnni' (32-bit, exact) or 'saturating-16bit' (x86 without
    VNNI) or 'unknown' (no x86 flags seen, e.g. another architecture: ORT uses other kernels there)."""
    flags = set(flags)
    if flags & set(VNNI_FLAGS):
        return "vnni"
    if "avx2" in flags or "avx512f" in flags:
        return "saturating-16bit"
    return "unknown"


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """This machine: model, the FEATURES it has, how its int8 dot products accumulate, cores, arch."""
    info = parse_cpuinfo(_read_cpuinfo())
    return {"model": info["model"] or platform.processor() or platform.machine(),
            "arch": platform.machine(), "cores": os.cpu_count(), "flags": info["flags"],
            "int8_dot_product": int8_dot_product(info["flags"])}


def describe(info: dict) -> str:
    """'Intel Xeon ..., x86_64, flags avx2 fma avx512_vnni, int8 via vnni'."""
    flags = " ".join(info.get("flags", [])) or "none of " + " ".join(FEATURES)
    return f"{info.get('model') or 'unknown CPU'}, {info.get('arch', '?')}, flags {flags}, int8 via {info.get('int8_dot_product', '?')}"


__all__ = ["FEATURES", "cpu_info", "describe", "int8_dot_product", "parse_cpuinfo"]

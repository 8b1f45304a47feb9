"""The fastest matrix multiply this machine runs, measured: the practical ceiling for the estimator.

The clock-based peak (flops.peak_gflops) reads the nominal clock from /proc/cpuinfo; a CPU that boosts
above it (or a VM that reports another clock) makes that figure wrong in either direction, and
achieved rates above "100% of peak" are the sign. What a graph can reach is bounded instead by the
best GEMM the kernels run here: ONNX Runtime's MatMul (MLAS, fp32) and its dynamic int8 MatMul
(quantized exactly as the int8 graphs are), and torch's mm (what eager uses), at the estimator's own
weight shapes and at one large square. A graph that does the estimator's FLOPs cannot run them faster
than the best of these, so rate(ceiling) / rate(eager) bounds the speed-up of any graph of the same
arithmetic.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

# (rows, inner, out): the estimator's weight matmuls at 800 frames x 2 guided rows (q/k/v 256->512,
# attention output 512->256, feed-forward 256->1024->256), and one large square.
SHAPES = ((1600, 256, 512), (1600, 512, 256), (1600, 256, 1024), (1600, 1024, 256), (2048, 2048, 2048))
REPEATS = 7


def _matmul_graph(path: Path, inner: int, out: int, rows: int) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((inner, out)).astype(np.float32) / np.sqrt(inner)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="weight_matmul")], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, inner])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, out])],
        [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def best_seconds(call, repeats: int = REPEATS) -> float:
    """Fastest of `repeats` timed calls after one warm-up: the ceiling is what the kernel can do."""
    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def _ort_rate(path: Path, rows: int, inner: int, out: int) -> float:
    from s3gen_runtime.backends.onnxruntime import import_onnxruntime, session_options

    ort = import_onnxruntime()
    session = ort.InferenceSession(str(path), session_options(ort), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((rows, inner)).astype(np.float32)
    return 2.0 * rows * inner * out / best_seconds(lambda: session.run(None, {"x": x})) / 1e9


def _torch_rate(rows: int, inner: int, out: int) -> float:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)   # as the eager configuration runs
    try:
        a, b = torch.randn(rows, inner), torch.randn(inner, out)
        with torch.inference_mode():
            seconds = best_seconds(lambda: torch.mm(a, b))
    finally:
        torch.set_num_threads(before)
    return 2.0 * rows * inner * out / seconds / 1e9


def measure_gemm_ceiling(shapes=SHAPES, progress=print) -> dict:
    """{'fp32': {'gflops', 'kernel', 'shape'}, 'int8': {...}, 'cases': [...]}: GFLOP/s (int8: fp32-equivalent
    FLOPs, 2 per multiply-add) of each kernel at each shape; the best per precision is the ceiling."""
    from s3gen_export.stages.quantize import quantize_matmuls

    cases = []
    with tempfile.TemporaryDirectory(prefix="s3gen-gemm-") as tmp:
        for rows, inner, out in shapes:
            fp32 = _matmul_graph(Path(tmp) / f"fp32_{inner}x{out}.onnx", inner, out, rows)
            int8 = Path(tmp) / f"int8_{inner}x{out}.onnx"
            quantize_matmuls(fp32, int8)
            shape = [rows, inner, out]
            cases += [{"kernel": "onnxruntime MatMul", "precision": "fp32", "shape": shape,
                       "gflops": _ort_rate(fp32, rows, inner, out)},
                      {"kernel": "onnxruntime dynamic int8 MatMul", "precision": "int8", "shape": shape,
                       "gflops": _ort_rate(int8, rows, inner, out)},
                      {"kernel": "torch.mm", "precision": "fp32", "shape": shape,
                       "gflops": _torch_rate(rows, inner, out)}]
            progress(f"  GEMM {rows}x{inner}x{out}: " + ", ".join(f"{c['kernel']} {c['gflops']:.0f}"
                                                                   for c in cases[-3:]) + " GFLOP/s")
    result = {"cases": cases, "repeats": REPEATS}
    for precision in ("fp32", "int8"):
        best = max((c for c in cases if c["precision"] == precision), key=lambda c: c["gflops"])
        result[precision] = {"gflops": best["gflops"], "kernel": best["kernel"], "shape": best["shape"]}
    return result


def ceiling_of(speed: dict | None, precision: str) -> float | None:
    """The measured GEMM ceiling a speed section recorded (GFLOP/s), or None for older results."""
    return (((speed or {}).get("gemm_ceiling") or {}).get(precision) or {}).get("gflops")

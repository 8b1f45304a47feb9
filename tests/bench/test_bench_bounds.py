"""What stands in the way of a missed speed target: the measured GEMM ceiling (bench/ceiling.py) and the
bounds the summary draws from it and from the profile (bench/report.py)."""
from __future__ import annotations

import logging

import onnx
import pytest

from s3gen_bench.ceiling import _matmul_graph, measure_gemm_ceiling
from s3gen_bench.flops import call_gflops, efficiency_lines
from s3gen_bench.report import targets
from s3gen_export.stages.quantize import quantize_matmuls

FLOPS = {"linear": 1e9, "quadratic": 0.0, "attention_modules": 56}   # 1 GFLOP per frame: rates are easy to read


def _speed(ceiling_fp32=200.0, ceiling_int8=400.0):
    """A speed section at 100 frames: eager 1.0 s per call (100 GFLOP/s), ORT fp32 0.8 s, int8 0.5 s."""
    def row(config, call, e2e):
        return {"config": config, "audio_seconds": 5.0, "mel_frames": 100, "estimator_call_seconds": call,
                "e2e_seconds": e2e, "speedup_vs_eager": 12.0 / e2e, "estimator_speedup_vs_eager": 1.0 / call,
                "encoder_seconds": 0.5, "vocoder_seconds": 1.0, "vs_eager": {"mel_snr_db": 40.0}}
    return {"table": [row("eager", 1.0, 12.0), row("ort-fp32", 0.8, 10.0), row("ort-int8", 0.5, 7.0)],
            "configs": {}, "estimator_flops": FLOPS,
            "gemm_ceiling": {"repeats": 7, "fp32": {"gflops": ceiling_fp32, "kernel": "k32", "shape": [8, 4, 2]},
                             "int8": {"gflops": ceiling_int8, "kernel": "k8", "shape": [8, 4, 2]}}}


def test_the_ceiling_int8_graph_is_quantized_as_the_int8_graphs_are(tmp_path, caplog):
    fp32 = _matmul_graph(tmp_path / "f.onnx", inner=32, out=16, rows=8)
    with caplog.at_level("WARNING"):
        quantize_matmuls(fp32, tmp_path / "q.onnx")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert "MatMul" not in ops and ops & {"MatMulInteger", "DynamicQuantizeMatMul"}
    # onnxruntime's hint to pre-process, logged on every call, is dropped; the filter goes with the call
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
    assert not logging.getLogger().filters


def test_ceiling_is_the_best_kernel_per_precision():
    lines = []
    result = measure_gemm_ceiling(shapes=((64, 32, 16), (32, 64, 32)), progress=lines.append)
    assert len(result["cases"]) == 6 and len(lines) == 2
    assert {c["kernel"] for c in result["cases"]} == {"onnxruntime MatMul", "onnxruntime dynamic int8 MatMul",
                                                      "torch.mm"}
    for precision in ("fp32", "int8"):
        rates = [c["gflops"] for c in result["cases"] if c["precision"] == precision]
        assert all(r > 0 for r in rates) and result[precision]["gflops"] == max(rates)


def test_efficiency_table_compares_each_row_with_its_precisions_ceiling():
    speed = _speed()
    assert call_gflops(FLOPS, speed["table"][0]) == pytest.approx(100.0)
    lines = efficiency_lines(speed, FLOPS, {"gflops": 100.0, "formula": "f"})
    rows = {line.split(" | ")[3]: line for line in lines if line.startswith("| 5 s")}
    assert rows["eager"].endswith("| 100 | 100% | 50% |")      # 100 of the fp32 ceiling's 200
    assert rows["ort-fp32"].endswith("| 125 | 125% | 62% |")
    assert rows["ort-int8"].endswith("| 200 | 200% | 50% |")   # against the int8 ceiling, 400
    assert "fp32 200 GFLOP/s (k32, 8x4x2)" in lines[2]
    # older results without a ceiling keep the table
    del speed["gemm_ceiling"]
    assert efficiency_lines(speed, FLOPS, None)[-2].endswith("| - | - |")


def test_missed_targets_state_the_ceiling_bound():
    rows = {t["target"]: t for t in targets(_speed(), fid=None)}
    fp32 = rows["end-to-end fp32 >= 1.5x eager"]
    assert not fp32["met"] and "fastest fp32 GEMM measured in this run (200 GFLOP/s) is 2.00x eager's call rate" \
        in fp32["detail"]
    int8 = rows["int8 estimator >= 2x eager"]   # 2.00x: met, so nothing stands in the way
    assert int8["met"] and int8["detail"] == ""
    slower = _speed(ceiling_int8=150.0)
    slower["table"][2]["estimator_call_seconds"] = 0.6
    slower["table"][2]["estimator_speedup_vs_eager"] = 1 / 0.6
    int8 = {t["target"]: t for t in targets(slower, fid=None)}["int8 estimator >= 2x eager"]
    assert not int8["met"] and "fastest int8 GEMM measured in this run (150 GFLOP/s) is 1.50x" in int8["detail"]


def test_int8_bound_uses_the_profile_nearest_the_worst_length():
    """Attention's share grows with length, so the free-weight-matmul bound is read at the nearest profile."""
    def profile(frames, weights):
        return {"frames": frames, "groups": {"fp32 weight matmuls": weights, "attention": 1 - weights}}
    scaling = {"profile": {"ort-fp32": [profile(64, 0.6), profile(1300, 0.25)], "ort-int8": [profile(64, 0.1)]}}
    slow = _speed()
    slow["table"][2].update(estimator_call_seconds=0.9, estimator_speedup_vs_eager=1 / 0.9, mel_frames=2000)
    slow["table"][0]["mel_frames"] = 2000
    detail = {t["target"]: t for t in targets(slow, fid=None, scaling=scaling)}["int8 estimator >= 2x eager"]["detail"]
    assert "(ORT profiler, 1300 frames) the weight matmuls that int8 can quantize are 25% of the time" in detail
    assert "at most 1.33x ORT fp32" in detail

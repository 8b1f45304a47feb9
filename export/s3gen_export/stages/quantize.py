"""Selective int8: dynamic quantization (onnxruntime.quantization) of the weight MatMuls of the
encoder and the estimators, keeping the measured-sensitive layers in fp32.

Why these stay fp32: the time-embedding MLPs and the per-block time projections condition every
layer on t (small errors there shift the whole field); attention output projections were the most
sensitive group on the estimator (excluding them: +2.6 dB velocity SNR for ~6% of the speed-up;
q/k/v: +1.4 dB, feed-forward: +2.3 dB for more time). Normalisation, softmax, the vocoder and its
ISTFT path are never quantized (only MatMul with constant weights is).
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np
import onnx

from s3gen_runtime.backends.base import INT8_SUFFIX, METADATA_PREFIX
from s3gen_runtime.cpu import cpu_info
from s3gen_runtime.selftest import probe_snrs, write_probe

from ..components.base import Case, Tolerance
from .graphs import ExportedGraph, ExportError
from .onnx_export import set_metadata
from .onnx_scopes import NAME_SCOPES_KEY, has_name_scopes, module_path
from .validate import CaseResult, ValidationReport, compare, onnx_session

QUANTIZABLE = ("encoder", "estimator", "estimator_cfg")
KEEP_FP32 = (r"time_mlp", r"time_embed_mixer", r"\.mlp\.\d", r"attn1\.to_out", r"self_attn\.linear_out",
             r"encoder_proj", r"spk_embed_affine_layer")
SELFTEST_DIR = "selftest"
SELFTEST_CASE = Case("selftest", ((12, 20),))   # one row, 64 frames: milliseconds at load
# Velocity / mu SNR floors against fp32 for one call; measured on the synthetic checkpoint at 28-35 dB
# (7-bit weights).
INT8_MIN_SNR_DB = {"velocity": 25.0, "mu": 25.0, "spks": 35.0, "mask": 60.0, "cond": 60.0}


def nodes_to_keep(proto: onnx.ModelProto, patterns=KEEP_FP32) -> list[str]:
    """Names of the weight MatMul/Gemm nodes whose torch module matches `patterns` (kept fp32).

    The module comes from the exporter's name-scope metadata. A graph without it on any of these
    nodes (saved by another exporter, or stripped by a tool) would silently quantize every layer,
    the sensitive ones included, so it is refused instead."""
    matmuls = [n for n in proto.graph.node if n.op_type in ("MatMul", "Gemm")]
    if matmuls and not any(has_name_scopes(n) for n in matmuls):
        raise ExportError(f"none of the graph's {len(matmuls)} MatMul/Gemm nodes carries the exporter's "
                          f"name-scope metadata ({NAME_SCOPES_KEY}), so the layers to keep in fp32 cannot be "
                          "found; quantize a graph written by `s3gen-aot export`")
    regex = re.compile("|".join(patterns))
    return [n.name for n in matmuls if regex.search(module_path(n) or "")]


class _NoPreprocessingHint(logging.Filter):
    """quantize_dynamic logs, on the root logger, a hint to run its pre-processing (shape inference and
    ORT's own graph optimisation saved into the model) on every call. Not wanted here: the graphs keep the
    exporter's nodes so the fp32 layers can be found by name scope, and ORT optimises at load anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_matmuls(src: Path, dst: Path, exclude=()) -> None:
    """Dynamic int8 of every MatMul with a constant weight except the nodes named in `exclude`:
    the one setting every int8 graph (and the benchmark's int8 GEMM ceiling) uses."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hint = _NoPreprocessingHint()
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
                         nodes_to_exclude=list(exclude), reduce_range=True, extra_options={"MatMulConstBOnly": True})
    finally:
        logging.getLogger().removeFilter(hint)


def quantize_graph(src: Path, dst: Path, component: str, patterns=KEEP_FP32) -> tuple[int, int]:
    """Write the int8 graph; returns (weight MatMuls quantized, kept in fp32).

    Weights are s8 in 7 bits (reduce_range): on x86 CPUs without VNNI, ONNX Runtime's u8 x s8 kernels
    (VPMADDUBSW) add pairs of products in 16 bits, which full-range weights overflow (velocity SNR
    ~11 dB on such a CPU). 7-bit weights keep every pair sum in range, so the graph is correct on
    every x86-64 CPU. Measured on an AMX/VNNI Xeon (estimator_cfg, 700 frames): full-range s8 33.4 dB
    1.15 s, 7-bit s8 28.3 dB 1.18 s, u8 weights (u8 x u8 kernels, no saturation either) 32.5 dB but
    1.52 s, no faster than fp32 (1.47 s)."""
    proto = onnx.load(str(src), load_external_data=False)
    keep = nodes_to_keep(proto, patterns)
    quantize_matmuls(src, dst, keep)
    out = onnx.load(str(dst))
    ours = {p.key[len(METADATA_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)}
    set_metadata(out, {**ours, "component": component, "precision": "int8"})
    onnx.save_model(out, str(dst))
    quantized = sum(1 for n in out.graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul"))
    return quantized, len(keep)


def int8_floor_db(output: str) -> float:
    return INT8_MIN_SNR_DB.get(output, 25.0)


def validate_int8(spec, fp32_path: Path, int8_path: Path, seed: int = 4321, progress=None,
                  sessions=None) -> ValidationReport:
    """int8 against the fp32 graph it came from, at the spec's validation cases, by SNR.
    `sessions`: (fp32, int8) ONNX Runtime sessions already open on those files."""
    tolerances = {name: Tolerance(atol=0.0, min_snr_db=int8_floor_db(name)) for name in spec.output_names}
    ref_session, q_session = sessions or (onnx_session(fp32_path), onnx_session(int8_path))
    cases = []
    for i, case in enumerate(spec.validation_cases):
        feeds = spec.make_inputs(case, np.random.default_rng(seed + i))
        result = CaseResult(case.name)
        refs = dict(zip(spec.output_names, ref_session.run(spec.output_names, feeds)))
        mask = feeds.get("mask", refs.get("mask"))
        for name, got in zip(spec.output_names, q_session.run(spec.output_names, feeds)):
            ref = refs[name]
            if mask is not None and ref.shape[-1:] == mask.shape[-1:] and ref.ndim == 3:
                # padded frames are don't-care; they only blur the SNR of what the user hears
                got, ref = got * mask, ref * mask
            compare(name, got, ref, tolerances[name], result)
        cases.append(result)
    return ValidationReport(f"{spec.name}{INT8_SUFFIX}", cases, tolerances)


def write_selftest(spec, fp32_path: Path, int8_path: Path, probe_path: Path, seed: int = 97, sessions=None) -> dict:
    """The int8 graph's load-time self-test: one short request's inputs and the fp32 graph's outputs,
    and the int8 graph's SNR against them on this CPU (recorded with the CPU's features).
    `sessions`: (fp32, int8) ONNX Runtime sessions already open on those files."""
    ref_session, q_session = sessions or (onnx_session(fp32_path), onnx_session(int8_path))
    feeds = spec.make_inputs(SELFTEST_CASE, np.random.default_rng(seed))
    refs = dict(zip(spec.output_names, ref_session.run(spec.output_names, feeds)))
    write_probe(probe_path, feeds, refs)
    run = lambda f, names: dict(zip(names, q_session.run(names, f)))  # noqa: E731
    return {"snr_db": probe_snrs(run, feeds, refs), "min_snr_db": {name: int8_floor_db(name) for name in refs},
            "cpu": cpu_info()}


def quantize_one(g: ExportedGraph, out: Path, progress=print) -> ExportedGraph:
    """The int8 copy of one fp32 graph, validated against it and given its load-time self-test probe."""
    start = time.perf_counter()
    name = f"{g.spec.name}{INT8_SUFFIX}"
    dst = Path(out) / f"{name}.onnx"
    quantized, kept = quantize_graph(g.path, dst, name)
    sessions = (onnx_session(g.path), onnx_session(dst))   # opened once for both checks
    report = validate_int8(g.spec, g.path, dst, sessions=sessions)
    selftest = write_selftest(g.spec, g.path, dst, Path(out) / SELFTEST_DIR / f"{name}.npz", sessions=sessions)
    del sessions
    progress(f"int8 {name}: {quantized} MatMuls quantized, {kept} kept fp32, "
             f"{dst.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - start:.1f} s")
    progress(report.table())
    return ExportedGraph(g.spec, dst, precision="int8", report=report, name=name,
                         selftest={"file": f"{SELFTEST_DIR}/{name}.npz", **selftest})


def quantize_graphs(model, graphs, out: Path, progress=print):
    """int8 copies of the quantizable fp32 graphs (quantize_one each)."""
    return [quantize_one(g, out, progress) for g in graphs
            if g.precision == "fp32" and g.spec.name in QUANTIZABLE and not g.spec.fp32_only]

"""Section c: how one estimator call (with CFG) scales with frames, throughput against batch size, and
where the time of one call goes (ONNX Runtime's profiler, kernel time by node group).

ONNX Runtime, fp32 and int8 interleaved call by call; inputs are random (the cost does not depend
on values). The exponent k of time ~ frames^k comes from a least-squares fit in log-log.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from s3gen_runtime.constants import MEL_BINS

from .common import Progress, fit_power_law, load_average, median
from .config import BenchConfig


def estimator_feeds(batch: int, frames: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    f32 = np.float32
    return {"x": rng.standard_normal((batch, MEL_BINS, frames), dtype=f32),
            "mask": np.ones((batch, 1, frames), f32),
            "mu": rng.standard_normal((batch, MEL_BINS, frames), dtype=f32),
            "t": np.full(batch, 0.5, f32),
            "spks": rng.standard_normal((batch, MEL_BINS), dtype=f32),
            "cond": rng.standard_normal((batch, MEL_BINS, frames), dtype=f32),
            "cfg_rate": np.full(batch, 0.7, f32)}


def _group(node, constants: set) -> str:
    """What a node is, for the time breakdown: weight matmuls (fp32 / int8), attention (fused, or its
    activation matmuls and softmax), convolutions, everything else."""
    op = node.op_type
    if op in ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "DynamicQuantizeLinear"):
        return "int8 weight matmuls (incl. activation quantization)"
    if op in ("MatMul", "FusedMatMul", "Gemm"):
        return "fp32 weight matmuls" if any(i in constants for i in node.input) else "attention matmuls (QK^T, AV)"
    if op in ("Conv", "ConvTranspose", "FusedConv"):
        return "convolutions"
    if op in ("Softmax",):
        return "softmax"
    if op == "MultiHeadAttention":
        return ATTENTION
    return "elementwise, norms, reshapes"


ATTENTION = "fused attention (MultiHeadAttention: QK^T, softmax, AV)"
# Nodes that run subgraphs (unpadded_attention.py wraps each attention in an If)
CONTAINER_OPS = frozenset({"If", "Loop", "Scan"})


def op_profiles(graph: Path, frames_list) -> dict:
    """Share of one estimator call's kernel time by node group and by op type (ONNX Runtime's own
    profiler), for each frame count: one profiling session, a warm-up and a measured run per count."""
    import json
    import tempfile

    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(graph), load_external_data=False)
    constants = {i.name for i in proto.graph.initializer}
    nodes = {n.name: n for n in proto.graph.node}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_profiling = True
    windows = []
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "prof")
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        for frames in frames_list:
            feeds = estimator_feeds(1, frames)
            session.run(None, feeds)   # warm-up at this shape
            windows.append(frames)
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    measured = runs[1::2]   # warm-up, measured, warm-up, measured, ...
    out = {}
    for frames, run in zip(windows, measured):
        lo, hi = run["ts"], run["ts"] + run["dur"]
        by_group, by_op = {}, {}
        for e in events:
            if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or not lo <= e["ts"] <= hi:
                continue
            name, op, dur = e["name"][: -len("_kernel_time")], e["args"].get("op_name", "?"), float(e["dur"])
            if op in CONTAINER_OPS:   # its time is its subgraph's nodes, profiled on their own
                continue
            node = nodes.get(name)
            if node is not None:
                group = _group(node, constants)
            elif op == "FusedMatMul":   # ORT's fusion of MatMul with a transpose/scale: attention scores
                group = "attention matmuls (QK^T, AV)"
            else:
                group = _group(onnx.helper.make_node(op, [], []), set())
            by_group[group] = by_group.get(group, 0.0) + dur
            by_op[op] = by_op.get(op, 0.0) + dur
        total = sum(by_op.values())
        out[frames] = {"frames": frames, "call_seconds": run["dur"] / 1e6,
                       "groups": {k: v / total for k, v in sorted(by_group.items(), key=lambda kv: -kv[1])},
                       "ops": {k: v / total for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:12]}}
    return out


def _time(runner, feeds) -> float:
    start = time.perf_counter()
    runner.run(feeds, ["velocity"])
    return time.perf_counter() - start


def run_scaling(cfg: BenchConfig, artifacts: Path, int8: bool, progress: Progress = print) -> dict:
    from s3gen_runtime.manifest import load_manifest
    from s3gen_runtime.backends import open_runner

    start_all = time.perf_counter()
    manifest = load_manifest(artifacts, verify=False)
    names = {"ort-fp32": "estimator_cfg"}
    if int8:
        names["ort-int8"] = "estimator_cfg_int8"
    runners = {k: open_runner(artifacts, manifest, v) for k, v in names.items()}
    for r in runners.values():   # first call allocates; not measured
        _time(r, estimator_feeds(1, min(cfg.scaling_frames)))

    frames_rows = []
    for frames in cfg.scaling_frames:
        feeds = estimator_feeds(1, frames)
        times = {k: [] for k in runners}
        for _ in range(cfg.scaling_repeats):
            for k, r in runners.items():
                times[k].append(_time(r, feeds))
        for k, ts in times.items():
            frames_rows.append({"config": k, "frames": frames, "seconds": median(ts), "samples": ts})
        progress(f"  {frames:>5} frames: " + ", ".join(f"{k} {median(ts):.2f} s" for k, ts in times.items()))
    fits = {}
    for k in runners:
        rows = [r for r in frames_rows if r["config"] == k]
        fits[k] = fit_power_law([r["frames"] for r in rows], [r["seconds"] for r in rows])
        progress(f"  {k}: time ~ frames^{fits[k]['exponent']:.2f} (r^2 {fits[k]['r2']:.3f})")

    batch_rows = []
    for batch in cfg.batch_sizes:
        feeds = estimator_feeds(batch, cfg.batch_frames)
        times = {k: [] for k in runners}
        for _ in range(cfg.batch_repeats):
            for k, r in runners.items():
                times[k].append(_time(r, feeds))
        for k, ts in times.items():
            t = median(ts)
            batch_rows.append({"config": k, "batch": batch, "frames": cfg.batch_frames, "seconds": t,
                               "frames_per_second": batch * cfg.batch_frames / t, "samples": ts})
        progress(f"  batch {batch} x {cfg.batch_frames} frames: " + ", ".join(
            f"{k} {batch * cfg.batch_frames / median(ts):.0f} frames/s" for k, ts in times.items()))
    profiles = {}   # config -> [profile per frame count]
    for k, name in names.items():
        profiles[k] = list(op_profiles(Path(artifacts) / manifest.component(name).file, cfg.profile_frames).values())
        for prof in profiles[k]:
            progress(f"  {k} time by kernel group at {prof['frames']} frames: " + ", ".join(
                f"{g} {100 * v:.0f}%" for g, v in prof["groups"].items()))
    base = {r["config"]: r["frames_per_second"] for r in batch_rows if r["batch"] == cfg.batch_sizes[0]}
    for r in batch_rows:
        r["throughput_vs_batch1"] = r["frames_per_second"] / base[r["config"]]
    return {"settings": {"estimator": "estimator_cfg (one call = the 2B guided batch)", "frames": list(cfg.scaling_frames),
                         "repeats": cfg.scaling_repeats, "batch_sizes": list(cfg.batch_sizes),
                         "batch_frames": cfg.batch_frames},
            "frames": frames_rows, "fit": fits, "batch": batch_rows, "profile": profiles,
            "seconds": time.perf_counter() - start_all, "load_average_after": load_average()}

"""How far the estimator runs from this CPU's arithmetic limit: FLOPs per call and the CPU's peak.

FLOPs per guided call (2 rows: conditional and unconditional) = a T + b T^2. The linear part
(weights, convolutions) is counted by torch's FlopCounterMode on the eager estimator at two small
lengths. The quadratic part is the attention's two matmuls, 2 x (2 T^2 inner) FLOPs per row and
Attention module, computed here because FlopCounterMode does not see CPU SDPA kernels (its own
quadratic term is recorded beside it and is ~0).
"""
from __future__ import annotations

from pathlib import Path

from s3gen_runtime.cpu import cpu_info

from .ceiling import ceiling_of

FIT_FRAMES = (64, 128)
FMA_UNITS = 2      # per core: what current x86 server cores have; the estimate states it


def _count(estimator, frames: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from s3gen_export.model.estimator import GuidedEstimator

    guided = GuidedEstimator(estimator)
    x = torch.zeros(1, 80, frames)
    args = (x, torch.ones(1, 1, frames), x, torch.tensor([0.5]), torch.zeros(1, 80), x, torch.tensor([0.7]))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        guided(*args)
    return float(counter.get_total_flops())


def estimator_flop_model(checkpoint: Path) -> dict:
    """{'linear': a, 'quadratic': b}: FLOPs of one guided call at T frames = a T + b T^2."""
    from s3gen_export.model.s3gen import load_s3gen

    from s3gen_export.model.estimator import Attention

    estimator = load_s3gen(checkpoint).flow.decoder.estimator.eval()
    (t1, t2) = FIT_FRAMES
    f1, f2 = _count(estimator, t1), _count(estimator, t2)
    counted_b = (f2 / t2 - f1 / t1) / (t2 - t1)
    rows = 2   # classifier-free guidance runs the conditional and the unconditional row
    attention = [m for m in estimator.modules() if isinstance(m, Attention)]
    b = sum(rows * 2 * 2 * m.to_q.out_features for m in attention)
    return {"linear": f1 / t1 - counted_b * t1, "quadratic": float(b), "counter_quadratic": counted_b,
            "attention_modules": len(attention), "fit_frames": list(FIT_FRAMES)}


def flops_at(model: dict, frames: int) -> float:
    return model["linear"] * frames + model["quadratic"] * frames ** 2


def _clock_ghz() -> float | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("cpu mhz"):
                return float(line.split(":", 1)[1]) / 1000.0
    except (OSError, ValueError):
        pass
    return None


def peak_gflops(info: dict | None = None, clock_ghz: float | None = None) -> dict:
    """cores x FMA units x fp32 lanes (16 with AVX-512, 8 with AVX2) x 2 FLOPs x clock."""
    info = info or cpu_info()
    clock = clock_ghz if clock_ghz is not None else _clock_ghz()
    lanes = 16 if "avx512f" in info.get("flags", []) else 8
    cores = info.get("cores") or 1
    if clock is None:
        return {"gflops": None, "formula": "clock unknown"}
    return {"gflops": cores * FMA_UNITS * lanes * 2 * clock,
            "formula": f"{cores} cores x {FMA_UNITS} FMA x {lanes} fp32 lanes x 2 x {clock:.2f} GHz"}


def call_gflops(flop_model: dict, row: dict) -> float:
    """Achieved GFLOP/s of one estimator call of a speed-table row (fp32-equivalent FLOPs)."""
    return flops_at(flop_model, row["mel_frames"]) / row["estimator_call_seconds"] / 1e9


def efficiency_lines(speed: dict, flop_model: dict | None, peak: dict | None) -> list[str]:
    """A table of achieved GFLOP/s per estimator call against the clock-based peak and the measured GEMM ceiling."""
    if not flop_model or not speed:
        return []
    peak_g = (peak or {}).get("gflops")
    ceiling = {p: ceiling_of(speed, p) for p in ("fp32", "int8")}
    lines = ["### Distance to the CPU's arithmetic limit", "",
             f"FLOPs of one guided estimator call = {flop_model['linear']:.3g} T + {flop_model['quadratic']:.3g} T^2 "
             f"(T = mel frames; weights and convolutions linear in T, the {flop_model.get('attention_modules')} "
             "attentions' matmuls quadratic). Peak fp32 from the clock: "
             + (f"{peak_g:.0f} GFLOP/s ({peak['formula']})." if peak_g else "unknown (no clock reading).")
             + " int8 rows count the same fp32-equivalent FLOPs."]
    if ceiling["fp32"]:
        g = speed["gemm_ceiling"]
        lines[-1] += (f" Measured GEMM ceiling (the fastest matrix multiply this machine ran in this run, "
                      f"best of {g.get('repeats')}): fp32 {ceiling['fp32']:.0f} GFLOP/s ({g['fp32']['kernel']}, "
                      f"{'x'.join(map(str, g['fp32']['shape']))}), int8 {ceiling['int8']:.0f} GFLOP/s "
                      f"({g['int8']['kernel']}, {'x'.join(map(str, g['int8']['shape']))}). A graph doing these "
                      "FLOPs cannot run them faster than its precision's ceiling; when the clock-based share "
                      "passes 100%, the CPU runs above the clock /proc/cpuinfo reports.")
    lines += ["", "| audio | frames | GFLOP/call | config | s/call | GFLOP/s | % of clock peak | % of GEMM ceiling |",
              "|---|---|---|---|---|---|---|---|"]
    for r in sorted(speed["table"], key=lambda r: (r["audio_seconds"], r["config"])):
        if not r.get("estimator_call_seconds"):
            continue
        rate = call_gflops(flop_model, r)
        share = f"{rate / peak_g:.0%}" if peak_g else "-"
        limit = ceiling["int8" if r["config"].endswith("int8") else "fp32"]
        lines.append(f"| {r['audio_seconds']:g} s | {r['mel_frames']} | {flops_at(flop_model, r['mel_frames']) / 1e9:.0f} | "
                     f"{r['config']} | {r['estimator_call_seconds']:.2f} | {rate:.0f} | {share} | "
                     f"{f'{rate / limit:.0%}' if limit else '-'} |")
    return lines + [""]

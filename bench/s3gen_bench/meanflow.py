"""Section e: the meanflow (Turbo) variant end to end: 2 estimator calls without CFG, so the encoder
and the HiFT vocoder are a large share of the time. Its own synthetic checkpoint and export; the same
worker processes and interleaving as section a (speed.py), with meanflow's upstream setting."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .common import Progress
from .config import BenchConfig
from .setup import ensure_artifacts, ensure_checkpoint


def run_meanflow(cfg: BenchConfig, workdir: Path, progress: Progress = print, checkpoint: Path | None = None,
                 artifacts: Path | None = None) -> dict:
    """`checkpoint` and `artifacts`: a meanflow checkpoint and its export to use as they are (int8 rows only
    when the export has int8 graphs); default: the synthetic one, exported with int8 into `workdir`."""
    from s3gen_runtime.manifest import load_manifest

    from .setup import has_int8
    from .speed import run_speed

    workdir = Path(workdir)
    if artifacts is not None:
        setup = {"folder": str(artifacts), "exported": False, "seconds": 0.0}
        int8 = has_int8(load_manifest(artifacts, verify=True))
    else:
        checkpoint = ensure_checkpoint(workdir / "synthetic_meanflow.safetensors", progress, variant="meanflow")
        setup = ensure_artifacts(checkpoint, workdir / "synthetic_meanflow", int8=True, progress=progress)
        int8 = True
    section = dataclasses.replace(cfg, speed_lengths_s=cfg.meanflow_lengths_s, speed_repeats=cfg.meanflow_repeats,
                                  speed_budget_s=cfg.meanflow_budget_s, compile=False)
    result = run_speed(section, checkpoint, Path(setup["folder"]), workdir / "meanflow", int8=int8,
                       progress=progress, variant="meanflow")
    result["setup"] = setup
    return result


def vocoder_shares(table: list[dict]) -> dict:
    """(config, audio seconds) -> the vocoder's share of the end-to-end time."""
    return {(r["config"], r["audio_seconds"]): r["vocoder_seconds"] / r["e2e_seconds"]
            for r in table if r.get("vocoder_seconds") and r.get("e2e_seconds")}


def vocoder_speedups(table: list[dict]) -> dict:
    """(config, audio seconds) -> eager HiFT's seconds over that configuration's vocoder seconds, same length."""
    eager = {r["audio_seconds"]: r["vocoder_seconds"] for r in table if r["config"] == "eager" and r.get("vocoder_seconds")}
    return {(r["config"], r["audio_seconds"]): eager[r["audio_seconds"]] / r["vocoder_seconds"]
            for r in table if r.get("vocoder_seconds") and r["audio_seconds"] in eager}


def meanflow_section(mf: dict) -> list[str]:
    s = mf["settings"]
    lines = ["## e. Meanflow (Turbo) end to end", "",
             f"Prompt {s['prompt_tokens']} tokens, upstream's meanflow setting ({s['solver']} {s['steps']} steps, no CFG), "
             "identical noise, each configuration in its own process, runs interleaved (as in section a). "
             "vocoder x = eager HiFT's seconds over this row's vocoder seconds at the same length.", "",
             "| audio | config | e2e s | RTF | speedup | encoder s | estimator s/call | vocoder s | vocoder x | vocoder share | "
             "mel SNR dB vs eager | peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    shares, speedups = vocoder_shares(mf["table"]), vocoder_speedups(mf["table"])
    order = {c: i for i, c in enumerate(("eager", "ort-fp32", "ort-int8"))}
    fmt = lambda v, f="{:.2f}": "-" if v is None else f.format(v)  # noqa: E731
    for r in sorted(mf["table"], key=lambda r: (r["audio_seconds"], order.get(r["config"], 9))):
        v = r.get("vs_eager") or {}
        key = (r["config"], r["audio_seconds"])
        lines.append(f"| {r['audio_seconds']:g} s | {r['config']} | {fmt(r.get('e2e_seconds'))} | {fmt(r.get('rtf'))} | "
                     f"{fmt(r.get('speedup_vs_eager'), '{:.2f}x')} | {fmt(r.get('encoder_seconds'))} | "
                     f"{fmt(r.get('estimator_call_seconds'))} | {fmt(r.get('vocoder_seconds'))} | "
                     f"{fmt(speedups.get(key), '{:.2f}x')} | {fmt(shares.get(key), '{:.0%}')} | "
                     f"{fmt(v.get('mel_snr_db'), '{:.1f}')} | {fmt(r.get('peak_rss_mb'), '{:.0f}')} |")
    lines += [""] + [f"- {note}" for note in mf.get("notes", [])] + [""]
    return lines


def _measured(pairs) -> str:
    return ", ".join(f"{x:.2f}x @ {seconds:g} s" for seconds, x in sorted(pairs))


def meanflow_target(mf: dict | None, config: str = "ort-fp32", floor: float = 1.5) -> dict | None:
    """Meanflow end to end of `config` against eager meanflow, at every length; None without such rows."""
    if not mf:
        return None
    rows = [r for r in mf["table"] if r["config"] == config and r.get("speedup_vs_eager")]
    if not rows:
        return None
    worst = min(rows, key=lambda r: r["speedup_vs_eager"])
    share = vocoder_shares(mf["table"]).get((config, worst["audio_seconds"]))
    return {"target": f"meanflow end-to-end ORT {config.removeprefix('ort-')} >= {floor:g}x eager meanflow",
            "measured": _measured((r["audio_seconds"], r["speedup_vs_eager"]) for r in rows),
            "met": all(r["speedup_vs_eager"] >= floor for r in rows),
            "why": f"at {worst['audio_seconds']:g} s ({worst['speedup_vs_eager']:.2f}x) the vocoder is "
                   f"{share:.0%} of the ORT time" if share is not None else ""}


def vocoder_target(mf: dict | None, config: str = "ort-fp32", floor: float = 1.5) -> dict | None:
    """The HiFT vocoder graph against eager HiFT, per length, from the meanflow rows (the same vocoder and
    mel sizes as the standard model); None without both rows at some length."""
    speedups = {seconds: x for (c, seconds), x in vocoder_speedups((mf or {}).get("table", [])).items() if c == config}
    if not speedups:
        return None
    worst = min(speedups, key=speedups.get)
    return {"target": f"HiFT vocoder graph (ORT {config.removeprefix('ort-')}) >= {floor:g}x eager HiFT",
            "measured": _measured(speedups.items()), "met": all(x >= floor for x in speedups.values()),
            "why": f"short by {floor / speedups[worst]:.2f}x at {worst:g} s" if speedups[worst] < floor else ""}


__all__ = ["run_meanflow", "meanflow_section", "meanflow_target", "vocoder_target"]

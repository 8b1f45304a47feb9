"""Section i: how long an export takes, per graph, as a user runs it (`s3gen-aot export` in a process of its own).

Runs, in order, into fresh folders under `workdir`: the standard export (voice graphs and validation
included), `--int8` over it (what int8 adds: the fp32 graphs are reused, their int8 copies made), the same
again unchanged (everything reused), and the meanflow export. Wall seconds are the parent's clock around
the command (interpreter start included); per-graph seconds come from each manifest's export record.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from .common import Progress

RUNS = (  # label, checkpoint variant, folder, extra options
    ("standard", "standard", "standard", ()),
    ("standard --int8 over it", "standard", "standard", ("--int8",)),
    ("unchanged re-export (--int8)", "standard", "standard", ("--int8",)),
    ("meanflow", "meanflow", "meanflow", ()),
)
# Targets on a 2-core CPU (issue: export in CI minutes), seconds.
TARGETS = {"standard": 120.0, "standard --int8 over it": 60.0, "unchanged re-export (--int8)": 15.0, "meanflow": 120.0}


def export_command(checkpoint: Path, folder: Path, options, jobs: int | None) -> list[str]:
    cli = Path(sys.executable).parent / "s3gen-aot"
    command = [str(cli), "export", str(checkpoint), "--out", str(folder), *options]
    return command + (["--jobs", str(jobs)] if jobs else [])


def run_export_time(checkpoints: dict, workdir: Path, progress: Progress = print, jobs: int | None = None) -> dict:
    """checkpoints: variant -> checkpoint path. Returns {"runs": [...], "targets": TARGETS}."""
    from s3gen_runtime.manifest import load_manifest

    workdir = Path(workdir)
    for variant in {v for _, v, _, _ in RUNS}:
        shutil.rmtree(workdir / variant, ignore_errors=True)
    runs = []
    for label, variant, name, options in RUNS:
        folder = workdir / name
        progress(f"  [{len(runs) + 1}/{len(RUNS)}] {label}: s3gen-aot export {' '.join(options)}")
        start = time.perf_counter()
        proc = subprocess.run(export_command(checkpoints[variant], folder, options, jobs), capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"export failed ({label}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        record = load_manifest(folder, verify=True).export
        graphs = {n: {"reused": g.reused, "export_s": g.export_s, "validate_s": g.validate_s}
                  for n, g in sorted(record.graphs.items())}
        made = {n: g for n, g in graphs.items() if not g["reused"]}
        runs.append({"label": label, "variant": variant, "options": list(options), "wall_s": round(wall, 2),
                     "jobs": record.jobs, "graphs": graphs, "made": sorted(made), "target_s": TARGETS[label]})
        progress(f"      {wall:.1f} s wall (target {TARGETS[label]:g} s), {record.jobs} worker(s); made "
                 + (", ".join(f"{n} {g['export_s']:.0f}+{g['validate_s']:.0f} s" for n, g in made.items()) or "nothing"))
    return {"runs": runs, "targets": TARGETS}


def export_time_section(result: dict) -> list[str]:
    """Markdown: one row per run, then per-graph export + validation seconds of the runs that made graphs."""
    lines = ["## i. Export time", "",
             "`s3gen-aot export` in its own process, fresh folders, in this order (wall seconds include the "
             "interpreter's start; the workers export graphs side by side):", "",
             "| run | wall s | target s | workers | graphs made |", "|---|---|---|---|---|"]
    for r in result["runs"]:
        mark = "" if r["wall_s"] <= r["target_s"] else " (missed)"
        lines.append(f"| {r['label']} | {r['wall_s']:.1f}{mark} | {r['target_s']:g} | {r['jobs']} | "
                     f"{', '.join(r['made']) or 'none (all reused)'} |")
    full = [r for r in result["runs"] if r["label"] in ("standard", "meanflow")]
    names = sorted({n for r in full for n in r["graphs"]} | {n for r in result["runs"] for n in r["made"]})
    lines += ["", "Per graph, export + validation seconds in its worker (int8: quantize + validate + self-test):", "",
              "| graph | " + " | ".join(r["label"] for r in result["runs"][:2] + full[1:]) + " |",
              "|---" * (len(full) + 2) + "|"]
    for n in names:
        cells = []
        for r in result["runs"][:2] + full[1:]:
            g = r["graphs"].get(n)
            cells.append("-" if g is None or g["reused"] else f"{g['export_s']:.1f} + {g['validate_s']:.1f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines + [""]


def plot_export_time(result: dict, out: Path) -> list[Path]:
    from .plots import _plt, _save

    plt = _plt()
    full = [r for r in result["runs"] if r["label"] in ("standard", "meanflow")]
    fig, axes = plt.subplots(1, len(full), figsize=(5.5 * len(full), 3.8), squeeze=False)
    for ax, r in zip(axes[0], full):
        names = sorted(r["graphs"], key=lambda n: -r["graphs"][n]["export_s"])
        export = [r["graphs"][n]["export_s"] for n in names]
        validate = [r["graphs"][n]["validate_s"] for n in names]
        ax.barh(names, export, color="#1f77b4", label="export")
        ax.barh(names, validate, left=export, color="#ff7f0e", label="validate")
        ax.invert_yaxis()
        ax.set(xlabel="seconds in its worker", title=f"{r['label']}: {r['wall_s']:.0f} s wall, {r['jobs']} workers")
        ax.legend()
        ax.grid(alpha=0.3, axis="x")
    return [_save(fig, out / "export_time.png")]

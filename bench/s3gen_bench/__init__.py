"""Benchmarks of the exported pipeline against the eager PyTorch reference.

    run_bench(out, quick=False, checkpoint=None, workdir="artifacts/bench")

Sections: a. speed (speed.py), b. solver fidelity and int8 (fidelity.py), c. scaling (scaling.py),
d. memory (memory.py), e. meanflow end to end (meanflow.py), f. voice preparation (voice.py), g. streaming (streaming.py),
h. Vocos vs HiFT (vocos.py), i. export time per graph (export_time.py; not in --quick), j. upstream Chatterbox's
generate() with eager S3Gen vs the drop-in (chatterbox.py; not in --quick: it builds real-size T3s). Each writes <section>.json into `out`; report.py writes summary.md and
plots.py the PNGs. The synthetic checkpoint and its fp32 + int8 export are made once in `workdir`
and reused while current (setup.py).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .common import Progress, load_average, machine_info, write_json
from .config import BenchConfig

SECTIONS = ("speed", "fidelity", "scaling", "memory", "meanflow", "voice", "streaming", "vocos", "export_time",
            "chatterbox")


def section_dates(out: Path, sections, date: str) -> dict:
    """{section: when its JSON in `out` was measured}: this run's sections now, the others as the previous
    machine.json says. A machine.json from before these dates were kept: a section JSON that carries its
    own machine record (streaming) has that date, any other the previous run's."""
    import json

    out = Path(out)
    earlier = {}
    if (out / "machine.json").is_file():
        previous = json.loads((out / "machine.json").read_text())

        def legacy_date(section: str) -> str:
            own = json.loads((out / f"{section}.json").read_text()).get("machine") or {}
            return own.get("date") or previous["date"]

        earlier = previous.get("section_dates") or {s: legacy_date(s) for s in SECTIONS
                                                     if (out / f"{s}.json").is_file()}
    return {s: d for s, d in {**earlier, **{s: date for s in sections}}.items() if s in SECTIONS}


def run_bench(out, quick: bool = False, checkpoint=None, workdir="artifacts/bench", artifacts=None,
              sections=SECTIONS, config: BenchConfig | None = None, progress: Progress = print,
              meanflow=None) -> dict:
    """Run the benchmark sections and write their JSON, summary.md and PNGs into `out`.

    checkpoint: a standard S3Gen checkpoint (default: the synthetic one, written to workdir when absent).
    artifacts: an existing export of that checkpoint to use as is (int8 sections are skipped when it
    has no int8 graphs); default: workdir/synthetic, exported with int8 unless current.
    meanflow: (checkpoint, artifacts) of a meanflow export to use as is in sections e and g; default: the
    synthetic one, exported with int8 into workdir."""
    from .plots import plot_fidelity, plot_memory, plot_scaling, plot_speed
    from .report import write_summary
    from .setup import ensure_artifacts, ensure_checkpoint, has_int8

    cfg = config or (BenchConfig.quick_config() if quick else BenchConfig())
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown sections {unknown}; known: {list(SECTIONS)}")
    out, workdir = Path(out), Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = {"config": cfg.to_dict(), "machine": machine_info()}   # as planned; sections record their budgets
    results["machine"]["section_dates"] = section_dates(out, sections, results["machine"]["date"])
    write_json(out / "machine.json", results["machine"])
    m = results["machine"]
    progress(f"machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB; load average {m['load_average_at_start']}")

    progress("[setup] checkpoint and export")
    if checkpoint is None:
        checkpoint = ensure_checkpoint(workdir / "synthetic.safetensors", progress)
    checkpoint = Path(checkpoint)
    if artifacts is None:
        results["setup"] = ensure_artifacts(checkpoint, workdir / "synthetic", int8=True, progress=progress)
        artifacts = Path(results["setup"]["folder"])
    else:
        results["setup"] = {"folder": str(artifacts), "exported": False, "seconds": 0.0}
    from s3gen_runtime.manifest import load_manifest

    manifest = load_manifest(artifacts, verify=True)
    if not results["setup"].get("checkpoint_sha256"):
        from s3gen_export.model.checkpoint import file_sha256

        results["setup"]["checkpoint_sha256"] = file_sha256(checkpoint)
    if manifest.checkpoint.sha256 != results["setup"]["checkpoint_sha256"]:
        raise ValueError(f"{artifacts} was exported from another checkpoint (sha256 {manifest.checkpoint.sha256[:12]}..., "
                         f"{checkpoint} is {results['setup']['checkpoint_sha256'][:12]}...): the eager baseline must "
                         "run the same weights")
    if manifest.checkpoint.variant != "standard":
        raise ValueError(f"the benchmark needs standard artifacts (eager baseline: Euler + CFG), got "
                         f"{manifest.checkpoint.variant}")
    int8 = has_int8(manifest)
    results["setup"]["int8"] = int8

    def left() -> float:
        return cfg.total_budget_s - (time.perf_counter() - start)

    plots = []
    if "speed" in sections:
        reserve = (cfg.reserve_fidelity_s if "fidelity" in sections else 0) + (
            cfg.reserve_scaling_s if "scaling" in sections else 0)
        cfg = dataclasses.replace(cfg, speed_budget_s=max(0.0, min(cfg.speed_budget_s, left() - reserve)))
        progress("[a] speed: eager vs torch.compile vs ONNX Runtime fp32 / int8 (each in its own process)")
        from .speed import run_speed

        results["speed"] = run_speed(cfg, checkpoint, artifacts, workdir / "speed", int8, progress)
        from .flops import estimator_flop_model

        results["speed"]["estimator_flops"] = estimator_flop_model(checkpoint)
        progress("[a] GEMM ceiling: the fastest fp32 and int8 matrix multiply on this machine, in this run")
        from .ceiling import measure_gemm_ceiling

        results["speed"]["gemm_ceiling"] = measure_gemm_ceiling(progress=progress)
        write_json(out / "speed.json", results["speed"])
        plots += plot_speed(results["speed"], out)
        progress(f"[a] done in {results['speed']['seconds'] / 60:.1f} min")
    if "fidelity" in sections:
        reserve = cfg.reserve_scaling_s if "scaling" in sections else 0
        cfg = dataclasses.replace(cfg, fidelity_budget_s=max(0.0, min(cfg.fidelity_budget_s, left() - reserve)))
        progress("[b] fidelity: solvers x NFE against a converged solution; int8 against fp32")
        from .fidelity import run_fidelity

        results["fidelity"] = run_fidelity(cfg, artifacts, int8, progress)
        write_json(out / "fidelity.json", results["fidelity"])
        plots += plot_fidelity(results["fidelity"], out)
        progress(f"[b] done in {results['fidelity']['seconds'] / 60:.1f} min")
    if "scaling" in sections:
        progress("[c] scaling: estimator time vs frames, throughput vs batch")
        from .scaling import run_scaling

        results["scaling"] = run_scaling(cfg, artifacts, int8, progress)
        write_json(out / "scaling.json", results["scaling"])
        plots += plot_scaling(results["scaling"], out)
        progress(f"[c] done in {results['scaling']['seconds'] / 60:.1f} min")
    if "memory" in sections:
        progress("[d] memory: weights per precision, RSS per configuration")
        from .memory import run_memory

        results["memory"] = run_memory(artifacts, results.get("speed"), progress)
        write_json(out / "memory.json", results["memory"])
        plots += plot_memory(results["memory"], out)
    if "meanflow" in sections:
        progress("[e] meanflow (Turbo): eager vs ONNX Runtime fp32 / int8, 2 steps without CFG")
        from .meanflow import run_meanflow

        results["meanflow"] = run_meanflow(cfg, workdir, progress, *(meanflow or ()))
        results["meanflow"]["machine"] = results["machine"]   # the numbers carry the CPU they came from
        write_json(out / "meanflow.json", results["meanflow"])
        progress(f"[e] done in {results['meanflow']['seconds'] / 60:.1f} min")
    if "voice" in sections:
        progress("[f] voice preparation from a recording (speaker encoder + tokenizer graphs, torch-free)")
        from .voice import run_voice

        results["voice"] = run_voice(artifacts, workdir / "voice", cfg.voice_repeats, progress)
        write_json(out / "voice.json", results["voice"])
    if "streaming" in sections:
        progress("[g] streaming: streamed vs offline synthesis, same seed (quality at seams, time to first audio)")
        from s3gen_runtime.pipeline import S3GenRuntime

        from .plots import plot_streaming
        from .streaming import run_streaming

        others = {"standard int8": S3GenRuntime(artifacts, precision="int8")} if int8 else {}
        meanflow_folder = Path(meanflow[1]) if meanflow else workdir / "synthetic_meanflow"   # section e's export
        if (meanflow_folder / "manifest.json").is_file():
            others["meanflow fp32"] = S3GenRuntime(meanflow_folder)
        results["streaming"] = run_streaming(S3GenRuntime(artifacts), cfg.quick, progress, others)
        results["streaming"]["machine"] = results["machine"]   # the numbers carry the CPU they came from
        write_json(out / "streaming.json", results["streaming"])
        plots += plot_streaming(results["streaming"], out)
        progress(f"[g] done in {results['streaming']['seconds'] / 60:.1f} min")
    if "vocos" in sections:
        progress("[h] Vocos vs HiFT as the vocoder (published Vocos size over S3Gen's mel, torch-free)")
        from .vocos import run_vocos

        results["vocos"] = run_vocos(artifacts, workdir / "vocos", cfg.vocos_lengths_s, cfg.vocos_repeats, progress)
        write_json(out / "vocos.json", results["vocos"])
    if "export_time" in sections and cfg.quick:
        progress("[i] export time: skipped in --quick (it runs four exports, minutes)")
    elif "export_time" in sections:
        progress("[i] export time: s3gen-aot export as a user runs it (standard, + int8, unchanged, meanflow)")
        from .export_time import plot_export_time, run_export_time

        checkpoints = {"standard": checkpoint, "meanflow": ensure_checkpoint(
            workdir / "synthetic_meanflow.safetensors", progress, variant="meanflow")}
        results["export_time"] = run_export_time(checkpoints, workdir / "export_time", progress)
        write_json(out / "export_time.json", results["export_time"])
        plots += plot_export_time(results["export_time"], out)
    if "chatterbox" in sections and cfg.quick:
        progress("[j] Chatterbox generate(): skipped in --quick (it builds real-size T3s)")
    elif "chatterbox" in sections:
        progress("[j] Chatterbox generate(): upstream's eager S3Gen vs the drop-in, same seed, same tokens")
        from .chatterbox import run_chatterbox

        checkpoints, folders = {"standard": checkpoint}, {"standard": artifacts}
        mf_checkpoint, mf_folder = ((Path(meanflow[0]), Path(meanflow[1])) if meanflow else
                                    (workdir / "synthetic_meanflow.safetensors", workdir / "synthetic_meanflow"))
        if (mf_folder / "manifest.json").is_file() and mf_checkpoint.is_file():   # section e's export
            checkpoints["meanflow"], folders["meanflow"] = mf_checkpoint, mf_folder
        results["chatterbox"] = run_chatterbox(checkpoints, folders, cfg.chatterbox_repeats,
                                               cfg.chatterbox_mean_tokens, progress)
        results["chatterbox"]["machine"] = results["machine"]   # the numbers carry the CPU they came from
        write_json(out / "chatterbox.json", results["chatterbox"])
    results["seconds"] = time.perf_counter() - start
    results["load_average_at_end"] = load_average()
    results["machine"]["load_average_at_end"] = results["load_average_at_end"]
    results["machine"]["bench_seconds"] = results["seconds"]
    results["machine"]["setup"] = results["setup"]
    results["machine"]["config"] = results["config"]
    write_json(out / "machine.json", results["machine"])
    summary = write_summary(out, results)
    progress(f"wrote {summary} and {len(plots)} plots in {results['seconds'] / 60:.1f} min")
    results["files"] = [str(p) for p in [summary, *plots]]
    return results


def rebuild_report(out, progress: Progress = print) -> dict:
    """summary.md and the plots again from the JSON files a run left in `out` (no measuring)."""
    import json

    from .export_time import plot_export_time
    from .plots import plot_fidelity, plot_memory, plot_scaling, plot_speed, plot_streaming
    from .report import write_summary

    out = Path(out)
    machine = json.loads((out / "machine.json").read_text())
    results = {"machine": machine, "config": machine.get("config") or BenchConfig().to_dict(),
               "setup": machine.get("setup", {}), "seconds": machine.get("bench_seconds", 0.0),
               "load_average_at_end": machine.get("load_average_at_end")}
    plots = []
    for name, plot in (("speed", plot_speed), ("fidelity", plot_fidelity), ("scaling", plot_scaling),
                       ("memory", plot_memory), ("meanflow", None), ("voice", None),
                       ("streaming", plot_streaming), ("vocos", None), ("export_time", plot_export_time),
                       ("chatterbox", None)):
        if (out / f"{name}.json").is_file():
            results[name] = json.loads((out / f"{name}.json").read_text())
            plots += plot(results[name], out) if plot else []
    summary = write_summary(out, results)
    progress(f"rebuilt {summary} and {len(plots)} plots from the JSON in {out}")
    results["files"] = [str(p) for p in [summary, *plots]]
    return results


__all__ = ["run_bench", "rebuild_report", "BenchConfig", "SECTIONS"]

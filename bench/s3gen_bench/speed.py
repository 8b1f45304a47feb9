"""Section a: speed end to end (tokens -> wav) and per component, each configuration in its own process.

Configurations: eager (the project's PyTorch reference, fp32, upstream's algorithm: 10 Euler steps,
CFG 0.7, torch threads = all cores), compile (the same with torch.compile of the estimator),
ort-fp32 and ort-int8 (S3GenRuntime, same solver setting). All load first; then the runs are
interleaved (length by length, repeat by repeat, configuration order rotated each repeat) so machine
noise hits every configuration alike. Every configuration gets identical noise (draw_noise), so
outputs are compared sample by sample with eager's.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from s3gen_runtime.constants import TOKEN_MEL_RATIO

from s3gen_runtime.metrics import snr_db
from s3gen_runtime.metrics import max_abs

from .common import Progress, load_average, median, tokens_for_seconds
from .config import BenchConfig
from .procs import WorkerError, WorkerProcess
from .worker import upstream_setting

BASELINE = "eager"
TORCH_CONFIGS = ("eager", "compile")
SCALING_GUESS = 1.5    # time ~ frames^k for projecting later lengths: measured 1.0 -> 1.6 from 550 to 2300 frames


def _compile_components(workers, status, components, notes, cfg, prompt, new, seconds, fits, progress,
                        room: float, call_cost: float):
    """Where compile gets no end-to-end run: a few estimator calls, so the length still has a number."""
    why = ("end-to-end runs only at " + ", ".join(f"{s:g} s" for s in cfg.compile_e2e_lengths_s)
           if fits else "its end-to-end run did not fit the time budget")
    if cfg.compile_component_calls * call_cost > room:
        notes.append(f"compile at {seconds:g} s: not measured ({cfg.compile_component_calls} estimator calls, "
                     f"~{cfg.compile_component_calls * call_cost:.0f} s, did not fit the time budget)")
        progress(f"  compile   {seconds:>3} s audio: skipped (did not fit the time budget)")
        return
    try:
        r = workers["compile"].ask({"op": "estimator", "prompt": prompt, "new": new,
                                    "calls": cfg.compile_component_calls}, cfg.worker_timeout_s)
    except WorkerError as e:
        workers.pop("compile").kill()
        status["compile"] = {**status["compile"], "status": "failed", "reason": str(e)}
        progress(f"  compile: {e}")
        return
    components.append({"config": "compile", "audio_seconds": seconds, "calls": r["calls"], "why": why})
    notes.append(f"compile at {seconds:g} s: estimator calls only ({why})")
    progress(f"  compile   {seconds:>3} s audio: estimator only ({why}), {median(r['calls']):.2f} s/call")


def _start_workers(configs, checkpoint, artifacts, logs: Path, cfg: BenchConfig, progress: Progress):
    workers, status = {}, {}
    for name in configs:
        progress(f"  starting {name}")
        env = {"OMP_WAIT_POLICY": cfg.torch_omp_wait_policy} if name in TORCH_CONFIGS and cfg.torch_omp_wait_policy \
            else {}
        if name == "compile":   # a cold compile: an inductor cache left by an earlier run would hide its cost
            env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor_cache_", dir=logs)
        w = WorkerProcess(name, checkpoint=checkpoint, artifacts=artifacts, log_path=logs / f"worker_{name}.log",
                          env=env)
        try:
            ready = w.receive(cfg.worker_timeout_s)
        except WorkerError as e:
            w.kill()
            status[name] = {"status": "failed", "reason": f"could not load: {e}"}
            progress(f"  {name}: {status[name]['reason']}")
            continue
        workers[name] = w
        status[name] = {"status": "ok", "load_seconds": ready["load_seconds"], "rss_after_load_mb": ready["rss_mb"]}
    return workers, status


def _warm_up(workers, status, cfg: BenchConfig, progress: Progress, names=None, timeout=None):
    for name in list(names or workers):
        limit = timeout or (cfg.compile_timeout_s if name == "compile" else cfg.worker_timeout_s)
        start = time.perf_counter()
        try:
            workers[name].ask({"op": "warmup", "prompt": cfg.speed_prompt_tokens,
                               "new": cfg.speed_warmup_new_tokens}, limit)
        except WorkerError as e:
            workers.pop(name).kill()
            what = "torch.compile of the estimator" if name == "compile" else "the warm-up run"
            status[name] = {"status": "failed", "reason": f"{what} failed or took too long: {e}"}
            progress(f"  {name}: {status[name]['reason']}")
            continue
        status[name]["warmup_seconds"] = time.perf_counter() - start
        label = "compile + first call" if name == "compile" else "warm-up (1-step synthesis)"
        progress(f"  {name}: {label} {status[name]['warmup_seconds']:.1f} s")


def _errors(got: dict, ref: dict) -> dict:
    return {"mel_max_abs": max_abs(got["mel"], ref["mel"]), "mel_snr_db": snr_db(got["mel"], ref["mel"]),
            "wav_snr_db": snr_db(got["wav"], ref["wav"])}


def run_speed(cfg: BenchConfig, checkpoint: Path, artifacts: Path, workdir: Path, int8: bool,
              progress: Progress = print, variant: str = "standard") -> dict:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    configs = [BASELINE, "ort-fp32"] + (["ort-int8"] if int8 else []) + (["compile"] if cfg.compile else [])
    not_run = {}
    if not int8:
        not_run["ort-int8"] = {"status": "skipped", "reason": "these artifacts have no int8 graphs"}
    if not cfg.compile:
        not_run["compile"] = {"status": "skipped",
                              "reason": "not attempted in --quick (compiling the estimator takes minutes on 2 cores)"}
    start_all = time.perf_counter()
    workers, status = _start_workers(configs, checkpoint, artifacts, workdir, cfg, progress)
    status.update(not_run)
    try:
        if BASELINE not in workers:
            raise WorkerError(f"the eager baseline could not start: {status[BASELINE]['reason']}")
        _warm_up(workers, status, cfg, progress, names=[n for n in workers if n != "compile"])
        compile_pending = "compile" in workers   # compiled lazily, once its cost is known to fit the budget
        runs, outputs, components, notes = [], {}, [], []
        prompt = cfg.speed_prompt_tokens
        deadline = start_all + cfg.speed_budget_s
        pass_cost = {}   # audio seconds -> seconds of one interleaved pass of the mandatory configs
        compile_e2e = set()   # lengths where compile got its end-to-end run

        def frames(sec):
            return TOKEN_MEL_RATIO * (prompt + tokens_for_seconds(sec))

        def projected(sec):
            """Cost of one mandatory pass at `sec`, from the longest length measured so far."""
            if sec in pass_cost:
                return pass_cost[sec]
            if not pass_cost:
                return 0.0
            known = max(pass_cost)
            return pass_cost[known] * (frames(sec) / frames(known)) ** SCALING_GUESS

        lengths = list(cfg.speed_lengths_s)
        for i, (seconds, repeats) in enumerate(zip(lengths, cfg.speed_repeats)):
            new = tokens_for_seconds(seconds)
            for rep in range(repeats):
                later = sum(projected(s) for s in lengths[i + 1:])
                if rep > 0 and time.perf_counter() + pass_cost[seconds] + later > deadline:
                    notes.append(f"{seconds:g} s: {rep} of {repeats} planned runs (the rest did not fit the "
                                 f"{cfg.speed_budget_s / 60:.0f}-min budget of this section)")
                    progress(f"  {seconds:g} s: stopping after {rep} run(s) to stay within the time budget")
                    break
                names = list(workers)
                names = names[rep % len(names):] + names[:rep % len(names)]
                if "compile" in names:   # optional: measured last, so its cost can be judged from eager's
                    names.remove("compile")
                    names.append("compile")
                pass_start = time.perf_counter()
                for name in names:
                    if name == "compile":
                        # the mandatory pass ends here: its cost must not include compiling
                        pass_cost.setdefault(seconds, time.perf_counter() - pass_start)
                        eager_s = [r["total"] for r in runs if r["config"] == BASELINE and r["audio_seconds"] == seconds]
                        cost = median(eager_s) if eager_s else 0.0
                        if compile_pending:
                            room = deadline - time.perf_counter() - later - cost
                            if room < cfg.compile_expected_s:
                                workers.pop("compile").kill()
                                status["compile"] = {**status["compile"], "status": "skipped", "reason": (
                                    f"not attempted: compiling takes ~{cfg.compile_expected_s / 60:.0f} min on this "
                                    f"machine and only {max(room, 0) / 60:.1f} min of the section's "
                                    f"{cfg.speed_budget_s / 60:.0f}-min budget were left after the mandatory runs")}
                                progress(f"  compile: {status['compile']['reason']}")
                                compile_pending = False
                                continue
                            _warm_up(workers, status, cfg, progress, names=["compile"],
                                     timeout=min(cfg.compile_timeout_s, room))
                            compile_pending = False
                            if "compile" not in workers:
                                continue
                        fits = time.perf_counter() + cost + later <= deadline
                        if rep > 0 and seconds not in compile_e2e:
                            continue   # no end-to-end run at this length's first pass: keep it that way
                        if seconds not in cfg.compile_e2e_lengths_s or not fits:
                            if rep == 0:
                                eager_calls = [c for r in runs if r["config"] == BASELINE and r["audio_seconds"] == seconds
                                               for c in r["calls"]]
                                _compile_components(workers, status, components, notes, cfg, prompt, new, seconds,
                                                    fits, progress, deadline - time.perf_counter() - later,
                                                    median(eager_calls) if eager_calls else 0.0)
                            continue
                        compile_e2e.add(seconds)
                    save = workdir / f"out_{name}_{seconds}s.npz" if rep == 0 else None
                    try:
                        r = workers[name].ask({"op": "e2e", "prompt": prompt, "new": new, "seed": 0,
                                               "save": str(save) if save else None}, cfg.worker_timeout_s)
                    except WorkerError as e:
                        workers.pop(name).kill()
                        status[name] = {**status[name], "status": "failed", "reason": str(e)}
                        progress(f"  {name}: {e}")
                        if name == BASELINE:
                            raise
                        continue
                    runs.append({"config": name, "audio_seconds": seconds, "repeat": rep, **r})
                    if save:
                        with np.load(save) as z:
                            outputs[(name, seconds)] = {"mel": z["mel"], "wav": z["wav"]}
                    progress(f"  {name:<9} {seconds:>3} s audio, run {rep + 1}/{repeats}: {r['total']:7.2f} s "
                             f"(RTF {r['total'] / seconds:.2f}; estimator {median(r['calls']):.2f} s/call)")
                pass_cost.setdefault(seconds, time.perf_counter() - pass_start)
        finals = {name: w.close() for name, w in workers.items()}
        workers = {}
    finally:
        for w in workers.values():
            w.kill()
        for cache in Path(workdir).glob("inductor_cache_*"):
            shutil.rmtree(cache, ignore_errors=True)
    for name, final in finals.items():
        if final:
            status[name]["peak_rss_mb"] = final["peak_rss_mb"]
    table = summarize(cfg, runs, components, outputs, status)
    return {"settings": {"prompt_tokens": prompt, "lengths_s": list(cfg.speed_lengths_s),
                         "repeats": list(cfg.speed_repeats), **upstream_setting(variant), "variant": variant,
                         "eager_threads": "all cores",
                         "torch_omp_wait_policy": cfg.torch_omp_wait_policy or "libgomp default",
                         "onnxruntime_threads": "runtime default (one per physical core)",
                         "noise": "draw_noise(0, P, N), identical for every configuration"},
            "configs": status, "table": table, "runs": runs, "compile_components": components, "notes": notes,
            "budget_seconds": cfg.speed_budget_s,
            "seconds": time.perf_counter() - start_all, "load_average_after": load_average()}


def summarize(cfg: BenchConfig, runs, components, outputs, status) -> list[dict]:
    rows = []
    by = {}
    for r in runs:
        by.setdefault((r["config"], r["audio_seconds"]), []).append(r)
    for c in components:
        by.setdefault((c["config"], c["audio_seconds"]), [])
    base = {s: by.get((BASELINE, s), []) for s in cfg.speed_lengths_s}
    for (name, seconds) in sorted(by, key=lambda k: (k[1], k[0])):
        rs = by[(name, seconds)]
        calls = [c for r in rs for c in r["calls"]] + [c for x in components if (x["config"], x["audio_seconds"]) ==
                                                       (name, seconds) for c in x["calls"]]
        row = {"config": name, "audio_seconds": seconds,
               "mel_frames": TOKEN_MEL_RATIO * (cfg.speed_prompt_tokens + tokens_for_seconds(seconds)),
               "e2e_runs": len(rs), "estimator_call_samples": len(calls),
               "e2e_seconds": median([r["total"] for r in rs]) if rs else None,
               "encoder_seconds": median([r["encoder"] for r in rs]) if rs else None,
               "estimator_call_seconds": median(calls) if calls else None,
               "vocoder_seconds": median([r["vocoder"] for r in rs]) if rs else None,
               "peak_rss_mb": max(r["peak_rss_mb"] for r in rs) if rs else status.get(name, {}).get("peak_rss_mb"),
               # what the process keeps once the request is done (compare rss_after_load_mb)
               "rss_after_run_mb": max(r["rss_after_mb"] for r in rs) if rs else None}
        if rs:
            row["rtf"] = row["e2e_seconds"] / seconds
            row["e2e_min_seconds"], row["e2e_max_seconds"] = min(r["total"] for r in rs), max(r["total"] for r in rs)
        b = base[seconds]
        if b:
            b_calls = [c for r in b for c in r["calls"]]
            if rs:
                row["speedup_vs_eager"] = median([r["total"] for r in b]) / row["e2e_seconds"]
            if calls:
                row["estimator_speedup_vs_eager"] = median(b_calls) / row["estimator_call_seconds"]
        if (name, seconds) in outputs and (BASELINE, seconds) in outputs:
            row["vs_eager"] = _errors(outputs[(name, seconds)], outputs[(BASELINE, seconds)])
        if name == "ort-int8" and ("ort-fp32", seconds) in outputs and (name, seconds) in outputs:
            row["vs_ort_fp32"] = _errors(outputs[(name, seconds)], outputs[("ort-fp32", seconds)])
        rows.append(row)
    return rows

"""Section b: solver fidelity on the network, and int8 against fp32.

For euler, heun, midpoint and dpmpp2m at each NFE, the generated mel's error against a converged
solution of the same ODE (same noise, same conditioning), for several seeds and two lengths, with
the wall time of each solve. int8: mel and waveform SNR against fp32 at the upstream setting
(10 Euler steps, CFG 0.7).

The converged solution is Euler with many steps (256) on every row, shown converged by its
difference to twice as many steps on the shortest row. Why Euler and not a higher-order method: the synthetic network's velocity oscillates in
t (the sinusoidal time embedding has frequencies up to 1000 rad per unit t, and random weights do not
damp them), so until a step resolves that period no method is in its asymptotic regime. Measured on
a 70-frame case: Heun 128 vs 256 steps differ by 0.95% rel RMS, Euler 256 vs 512 steps by 0.28%.
Every length and seed runs as one batch (rows right-padded; the masks keep padding inert, as in the
runtime's batching), so one estimator call per NFE serves all of them. The cost of the reference is
projected from timed calls first; if it exceeds the section's budget, the reference steps are
reduced (never below fidelity_reference_min_steps) and the results say so.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from s3gen_runtime.constants import TOKEN_MEL_RATIO

from s3gen_runtime.metrics import snr_db
from s3gen_export.tuning.synthetic_requests import synthetic_tokens, synthetic_voice

from .common import Progress, load_average, median, tokens_for_seconds
from .config import BenchConfig
from s3gen_export.tuning.flow_problems import STANDARD_SOLVERS, candidates, errors_against, prepare_cases, solve_mel, subproblem

UPSTREAM = ("euler", 10)
PROJECTION_MARGIN = 1.25
CFG_RATE = 0.7


def _int8_vs_fp32(fp32, int8, cases, seeds) -> list[dict]:
    """Both precisions at the upstream setting on every (case, seed), as one batch, identical noise."""
    from s3gen_runtime.batching import Request
    from s3gen_runtime.noise import draw_noise

    keys, requests = [], []
    for seconds, tokens, voice in cases:
        for s in seeds:
            keys.append((seconds, s))
            requests.append(Request(tokens, voice, noise=draw_noise(s, voice.prompt_tokens, len(tokens),
                                                                    voice.prompt_frames)))
    kwargs = {"solver": UPSTREAM[0], "steps": UPSTREAM[1], "cfg_rate": CFG_RATE}
    a, b = fp32.synthesize_batch(requests, **kwargs), int8.synthesize_batch(requests, **kwargs)
    return [{"audio_seconds": sec, "seed": s, "mel_snr_db": snr_db(q.mel, f.mel), "wav_snr_db": snr_db(q.wav, f.wav)}
            for (sec, s), f, q in zip(keys, a, b)]


def _time_calls(problem) -> float:
    velocity, x0 = problem.velocity(), problem.conditioning.x0
    velocity(x0, 0.5, 0.6)   # the first call at a new shape allocates
    start = time.perf_counter()
    for _ in range(2):
        velocity(x0, 0.5, 0.6)
    return (time.perf_counter() - start) / 2


def _plan(cfg: BenchConfig, problem, check_problem, grid: list, progress: Progress) -> tuple[int, list, dict]:
    """Reference steps R (and, if even the fewest do not fit, the grid's largest NFE) that fit the
    budget: the grid and R steps on the whole batch, 2R steps on the check row; projected from timed
    calls, times PROJECTION_MARGIN (a full run measured 1.25x its projection)."""
    cost, check_cost = _time_calls(problem), _time_calls(check_problem)
    ref_nfe = lambda steps: nfe_of(cfg.fidelity_reference_solver, steps)

    def projected(steps, grid):
        return PROJECTION_MARGIN * (cost * (sum(n for _, _, n in grid) + ref_nfe(steps)) + check_cost * ref_nfe(2 * steps))

    steps, planned = cfg.fidelity_reference_steps, list(grid)
    while steps > cfg.fidelity_reference_min_steps and projected(steps, grid) > cfg.fidelity_budget_s:
        steps = max(cfg.fidelity_reference_min_steps, (steps * 3) // 4)
    while projected(steps, grid) > cfg.fidelity_budget_s:
        top = max(n for s, st, n in grid if (s, st) != UPSTREAM)
        if top <= cfg.fidelity_min_nfe_cap:
            break
        grid = [g for g in grid if g[2] < top or (g[0], g[1]) == UPSTREAM]
    plan = {"call_seconds": cost, "check_call_seconds": check_cost, "projected_seconds": projected(steps, grid),
            "budget_seconds": cfg.fidelity_budget_s, "reference_steps": steps,
            "reduced": steps != cfg.fidelity_reference_steps,
            "nfe_dropped": sorted({n for _, _, n in planned} - {n for _, _, n in grid})}
    progress(f"  one call: {cost:.2f} s ({len(problem.conditioning)} rows x {problem.frames} frames), {check_cost:.2f} s "
             f"(check row); projected {projected(steps, grid) / 60:.1f} min with {steps}-step references" + (
                 f" (reduced from {cfg.fidelity_reference_steps} to fit the {cfg.fidelity_budget_s / 60:.1f}-min "
                 "budget)" if plan["reduced"] else "") + (
                 f"; NFE {plan['nfe_dropped']} dropped to fit" if plan["nfe_dropped"] else ""))
    return steps, grid, plan


def _reference(problem, check_problem, check_index: int, steps: int, solver: str, progress: Progress) -> dict:
    """`steps` steps on every row; 2 x `steps` on the check row show how far the reference is from converged."""
    mel, seconds, nfe = solve_mel(problem, solver, steps)
    fine, fine_seconds, fine_nfe = solve_mel(check_problem, solver, 2 * steps)
    check = errors_against([mel[check_index]], fine)
    progress(f"      converged reference: {solver} {steps} steps ({nfe} NFE, {seconds:.1f} s); on row {check_index} "
             f"{solver} {2 * steps} steps differs from it by {check['rel_rms_mean']:.2e} rel RMS "
             f"({check['snr_db_min']:.1f} dB; {fine_seconds:.1f} s)")
    return {"mel": mel, "solver": solver, "steps": steps, "nfe": nfe, "seconds": seconds,
            "check_row": check_index, "check_steps": 2 * steps, "check_nfe": fine_nfe, "check_seconds": fine_seconds,
            "check": check}


def run_fidelity(cfg: BenchConfig, artifacts: Path, int8: bool, progress: Progress = print) -> dict:
    from s3gen_runtime.pipeline import S3GenRuntime

    start_all = time.perf_counter()
    fp32 = S3GenRuntime(artifacts, precision="fp32")
    q8 = S3GenRuntime(artifacts, precision="int8") if int8 else None
    grid = candidates(STANDARD_SOLVERS, cfg.fidelity_nfe)
    if UPSTREAM not in [(s, n) for s, n, _ in grid]:
        grid.append((UPSTREAM[0], UPSTREAM[1], UPSTREAM[1]))
    prompt = cfg.fidelity_prompt_tokens
    voice = synthetic_voice(prompt, seed=99)
    cases = []
    for seconds in cfg.fidelity_lengths_s:
        new = tokens_for_seconds(seconds)
        cases.append((seconds, synthetic_tokens(new, seed=7 + new), voice))
    # every length and seed in one batch (rows right-padded, masks keep padding inert): one call per NFE
    problem = prepare_cases(fp32, [(t, v) for _, t, v in cases], cfg.fidelity_seeds, CFG_RATE)
    row_seconds = [cases[c][0] for c, _ in problem.keys]
    progress(f"  lengths {list(cfg.fidelity_lengths_s)} s generated after a {prompt / 25:g} s prompt, seeds "
             f"{list(cfg.fidelity_seeds)}: {len(problem.keys)} rows in one batch of {problem.frames} frames")
    check_index = min(range(len(problem.keys)), key=lambda i: problem.conditioning.spans[i][1])   # the shortest row
    check_problem = subproblem(problem, check_index)
    ref_steps, grid, plan = _plan(cfg, problem, check_problem, grid, progress)
    ref_solver = cfg.fidelity_reference_solver
    ref = _reference(problem, check_problem, check_index, ref_steps, ref_solver, progress)

    def by_length(err: dict, seconds) -> dict:
        idx = [i for i, s in enumerate(row_seconds) if s == seconds]
        rels, snrs = [err["rel_rms"][i] for i in idx], [err["snr_db"][i] for i in idx]
        return {"rel_rms": rels, "snr_db": snrs, "rel_rms_mean": float(np.mean(rels)),
                "snr_db_mean": float(np.mean(snrs)), "snr_db_min": float(np.min(snrs))}

    mels, points = {}, []
    for solver, steps, nfe in grid:
        mel, seconds_solve, calls = solve_mel(problem, solver, steps)
        mels[(solver, steps)] = mel
        err = errors_against(mel, ref["mel"])
        for seconds in cfg.fidelity_lengths_s:
            points.append({"audio_seconds": seconds, "solver": solver, "steps": steps, "nfe": calls,
                           "seconds_per_utterance": seconds_solve / len(problem.keys), **by_length(err, seconds)})
        progress(f"      {solver:<9} {steps:>3} steps ({calls:>2} NFE): rel RMS {err['rel_rms_mean']:.3f} "
                 f"({seconds_solve:.1f} s)")
    for p in points:
        up = by_length(errors_against(mels[(p["solver"], p["steps"])], mels[UPSTREAM]), p["audio_seconds"])
        p["snr_db_vs_upstream_min"] = up["snr_db_min"]
    check = ref["check"]
    out_cases = [{"audio_seconds": sec, "prompt_tokens": prompt, "new_tokens": len(t),
                  "frames": TOKEN_MEL_RATIO * (prompt + len(t)), "seeds": list(cfg.fidelity_seeds)}
                 for sec, t, _ in cases]
    int8_rows = []
    if q8 is not None:
        int8_rows = _int8_vs_fp32(fp32, q8, cases, cfg.fidelity_seeds)
        progress("  int8 vs fp32 (upstream setting): " + ", ".join(
            f"{r['audio_seconds']:g} s seed {r['seed']}: mel {r['mel_snr_db']:.1f} dB, wav {r['wav_snr_db']:.1f} dB"
            for r in int8_rows))
    table = aggregate(points)
    measured = [r["rel_rms_mean"] for r in table]
    crow = problem.keys[check_index]
    convergence = {"reference": f"{ref_solver} {ref_steps} steps ({nfe_of(ref_solver, ref_steps)} NFE)",
                   "check": f"{ref_solver} {2 * ref_steps} steps on one row ({row_seconds[check_index]:g} s, "
                            f"seed {crow[1]})",
                   "check_rel_rms": check["rel_rms_mean"],
                   "smallest_measured_rel_rms": min(measured),
                   "margin": min(measured) / check["rel_rms_mean"] if check["rel_rms_mean"] > 0 else None,
                   "reference_seconds": ref["seconds"], "plan": plan}
    return {"settings": {"prompt_tokens": prompt, "lengths_s": list(cfg.fidelity_lengths_s),
                         "seeds": list(cfg.fidelity_seeds), "nfe": list(cfg.fidelity_nfe), "cfg_rate": CFG_RATE,
                         "grid": "upstream cosine grid for every solver", "precision": "fp32 (ONNX Runtime)",
                         "batch": f"{len(problem.keys)} rows (every length x seed) right-padded to "
                                  f"{problem.frames} frames, one estimator call per NFE",
                         "error": "generated mel frames only; rel RMS = |mel - ref| / |ref| per row"},
            "cases": out_cases, "points": points, "table": table, "convergence": convergence,
            "int8_vs_fp32": {"rows": int8_rows,
                             "mel_snr_db_min": min((r["mel_snr_db"] for r in int8_rows), default=None),
                             "wav_snr_db_min": min((r["wav_snr_db"] for r in int8_rows), default=None)},
            "seconds": time.perf_counter() - start_all, "load_average_after": load_average()}


def nfe_of(solver: str, steps: int) -> int:
    from s3gen_runtime.solvers import nfe

    return nfe(solver, steps)


def aggregate(points) -> list[dict]:
    """Per (solver, steps): errors pooled over lengths and seeds; time per utterance summed over lengths."""
    by = {}
    for p in points:
        by.setdefault((p["solver"], p["steps"]), []).append(p)
    rows = []
    for (solver, steps), ps in sorted(by.items(), key=lambda kv: (kv[1][0]["nfe"], kv[0][0])):
        rels = [r for p in ps for r in p["rel_rms"]]
        snrs = [s for p in ps for s in p["snr_db"]]
        rows.append({"solver": solver, "steps": steps, "nfe": ps[0]["nfe"], "rel_rms_mean": float(np.mean(rels)),
                     "rel_rms_max": float(np.max(rels)), "snr_db_mean": float(np.mean(snrs)),
                     "snr_db_min": float(np.min(snrs)),
                     "snr_db_vs_upstream_min": float(min(p["snr_db_vs_upstream_min"] for p in ps)),
                     "seconds_per_utterance": float(np.mean([p["seconds_per_utterance"] for p in ps])),
                     "seconds_median_case": median([p["seconds_per_utterance"] for p in ps])})
    return rows

"""The solver-fidelity measurement on an artifact folder's own graphs (numpy + onnxruntime, no torch).

One `FlowProblem` is one or more requests encoded once, each with several noise seeds, all as rows
of one batch (right-padded to the longest; the graphs' masks keep padding inert, as in the
runtime's own batching), so every solve runs every case in one estimator call per NFE.
`solve_mel` integrates the ODE with any solver and step count and returns each row's generated mel
(prompt frames and padding cut off, as upstream does). Used by the benchmark (fidelity section)
and by `s3gen_export.tune`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from s3gen_runtime.buckets import stack_padded
from s3gen_runtime.constants import TOKEN_MEL_RATIO
from s3gen_runtime.noise import draw_noise
from s3gen_runtime.solvers import CountingVelocity, nfe as solver_nfe, solve
from s3gen_runtime.voice import Voice

from s3gen_runtime.metrics import snr_db
from .common import db_from_rel, rel_rms

_F32 = np.float32
STANDARD_SOLVERS = ("euler", "heun", "midpoint", "dpmpp2m")


@dataclass(frozen=True)
class FlowProblem:
    """Requests' ODEs as one batch: row i is (case, seed) = rows[i]; its generated mel is
    x[i, :, slices[i][0]:slices[i][1]]."""

    runner: object            # the estimator Runner (estimator_cfg when guided)
    conditioning: dict        # mask, mu, spks, cond, (B, ., T) right-padded
    x0: np.ndarray            # (B, 80, T), each row's z left-aligned, zeros over its padding
    rows: tuple               # (case index, seed) per row
    slices: tuple             # (first generated frame, end of the row) per row
    cfg_rate: float
    meanflow: bool
    noises: tuple             # per row: the noise dict (z, sine_phase, sine_noise)

    @property
    def frames(self) -> int:
        return int(self.x0.shape[2])

    @property
    def seeds(self) -> tuple:
        return tuple(dict.fromkeys(seed for _, seed in self.rows))


def prepare_cases(runtime, cases, seeds, cfg_rate: float) -> FlowProblem:
    """Encode every (tokens, voice) case for every seed as one batch with the runtime's encoder graph."""
    seeds = tuple(int(s) for s in seeds)
    rows, items = [], []
    for c, (tokens, voice) in enumerate(cases):
        tokens = np.asarray(tokens, dtype=np.int64).reshape(1, -1)
        for seed in seeds:
            rows.append((c, seed))
            items.append((tokens, voice, draw_noise(seed, voice.prompt_tokens, tokens.shape[1])))
    width_p = max(v.prompt_tokens for _, v, _ in items)
    width_n = max(t.shape[1] for t, _, _ in items)
    feeds = {"tokens": stack_padded([t for t, _, _ in items], width_n, 1),
             "token_lengths": np.array([t.shape[1] for t, _, _ in items], dtype=np.int64),
             "prompt_tokens": stack_padded([v.prompt_token for _, v, _ in items], width_p, 1),
             "prompt_lengths": np.array([v.prompt_tokens for _, v, _ in items], dtype=np.int64),
             "prompt_feat": stack_padded([v.prompt_feat for _, v, _ in items], TOKEN_MEL_RATIO * width_p, 1),
             "embedding": np.concatenate([v.embedding for _, v, _ in items], axis=0)}
    enc = runtime.runners["encoder"].run(feeds)
    ends = [TOKEN_MEL_RATIO * (v.prompt_tokens + t.shape[1]) for t, v, _ in items]
    frames = max(ends)
    conditioning = {k: np.ascontiguousarray(enc[k][..., :frames]) if k != "spks" else enc[k]
                    for k in ("mask", "mu", "spks", "cond")}
    x0 = stack_padded([n["z"] for _, _, n in items], frames, 2)
    slices = tuple((TOKEN_MEL_RATIO * v.prompt_tokens, e) for (_, v, _), e in zip(items, ends))
    meanflow = runtime.variant == "meanflow"
    runner = runtime.runners["estimator" if meanflow or cfg_rate == 0.0 else "estimator_cfg"]
    return FlowProblem(runner, conditioning, x0, tuple(rows), slices, float(cfg_rate), meanflow,
                       tuple(n for _, _, n in items))


def prepare_problem(runtime, tokens, voice: Voice, seeds, cfg_rate: float) -> FlowProblem:
    """One request, one row per seed."""
    return prepare_cases(runtime, [(tokens, voice)], seeds, cfg_rate)


def make_velocity(problem: FlowProblem):
    batch = problem.x0.shape[0]
    guided = problem.cfg_rate > 0.0 and not problem.meanflow
    cfg = np.full(batch, problem.cfg_rate, dtype=_F32)

    def velocity(x, t, r):
        feeds = {"x": x, **problem.conditioning, "t": np.full(batch, t, dtype=_F32)}
        if guided:
            feeds["cfg_rate"] = cfg
        if problem.meanflow:
            feeds["r"] = np.full(batch, r, dtype=_F32)
        return problem.runner.run(feeds, ["velocity"])["velocity"]

    return velocity


def solve_mel(problem: FlowProblem, solver: str, steps: int) -> tuple[list, float, int]:
    """(each row's generated mel (80, 2N), wall seconds, NFE) of one solve of the whole batch."""
    velocity = CountingVelocity(make_velocity(problem))
    start = time.perf_counter()
    x1 = solve(solver, velocity, problem.x0, steps)
    seconds = time.perf_counter() - start
    return [np.ascontiguousarray(x1[i, :, a:b]) for i, (a, b) in enumerate(problem.slices)], seconds, velocity.calls


def candidates(solvers, nfes) -> list[tuple[str, int, int]]:
    """(solver, steps, nfe) for every solver and NFE it can reach exactly, cheapest first."""
    out = []
    for n in sorted(set(int(v) for v in nfes)):
        for s in solvers:
            per = solver_nfe(s, 1)
            if n % per == 0:
                out.append((s, n // per, n))
    return out


def errors_against(mel, ref) -> dict:
    """Per-row relative RMS and SNR, plus their mean and worst case (rows: lists of generated mels)."""
    rels = [rel_rms(m, r) for m, r in zip(mel, ref)]
    snrs = [snr_db(m, r) for m, r in zip(mel, ref)]
    return {"rel_rms": rels, "snr_db": snrs, "rel_rms_mean": float(np.mean(rels)),
            "snr_db_mean": float(np.mean(snrs)), "snr_db_min": float(np.min(snrs))}


def converged_reference(problem: FlowProblem, steps: int, progress=None, solver: str = "heun",
                        check: bool = True) -> dict:
    """A converged solution: `solver` (meanflow models: meanflow) with `steps`, checked against
    `steps // 2` steps.

    The difference bounds the reference's own error (first order: the finer solution is about as
    far off as the difference; second order: a third of it); it must be far below every error
    measured against it. check=False skips the coarser solve (its cost) when the convergence was
    shown on another case of the same kind."""
    solver = "meanflow" if problem.meanflow else solver
    fine, t_fine, n_fine = solve_mel(problem, solver, steps)
    if not check:
        if progress:
            progress(f"      converged reference: {solver} {steps} steps ({n_fine} NFE, {t_fine:.1f} s)")
        return {"mel": fine, "solver": solver, "steps": steps, "nfe": n_fine, "seconds": t_fine}
    coarse, t_coarse, n_coarse = solve_mel(problem, solver, max(1, steps // 2))
    check = errors_against(coarse, fine)
    if progress:
        progress(f"      converged reference: {solver} {steps} steps ({n_fine} NFE, {t_fine:.1f} s); "
                 f"{solver} {steps // 2} steps differs by {check['rel_rms_mean']:.2e} rel RMS "
                 f"({check['snr_db_min']:.1f} dB)")
    return {"mel": fine, "solver": solver, "steps": steps, "nfe": n_fine, "seconds": t_fine,
            "check_steps": max(1, steps // 2), "check_nfe": n_coarse, "check": check,
            "summary": f"{solver} {steps} vs {steps // 2} steps: {check['rel_rms_mean']:.2e} rel RMS"}


def subproblem(problem: FlowProblem, index: int) -> FlowProblem:
    """Row `index` alone, cut to its own length (its result equals the row's in the batch, up to
    float32 reassociation: the masks make padding and other rows inert)."""
    end = problem.slices[index][1]
    cond = {k: np.ascontiguousarray(v[index:index + 1, ..., :end]) if k != "spks" else v[index:index + 1]
            for k, v in problem.conditioning.items()}
    return FlowProblem(problem.runner, cond, np.ascontiguousarray(problem.x0[index:index + 1, :, :end]),
                       (problem.rows[index],), (problem.slices[index],), problem.cfg_rate, problem.meanflow,
                       (problem.noises[index],))


__all__ = ["FlowProblem", "prepare_problem", "prepare_cases", "subproblem", "solve_mel", "candidates", "errors_against", "converged_reference",
           "STANDARD_SOLVERS", "db_from_rel"]

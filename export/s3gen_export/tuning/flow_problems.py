"""The solver-fidelity measurement on an artifact folder's own graphs (numpy + onnxruntime, no torch).

One `FlowProblem` is one or more requests encoded once, each with several noise seeds, all as rows
of one batch built by the runtime itself (`S3GenRuntime.prepare` and `encode`: its validation,
seeded noise and padding), so every solve runs every case in one estimator call per NFE.
`solve_mel` integrates the ODE through `S3GenRuntime.solve` with any solver and step count and
returns each row's generated mel (prompt frames and padding cut off, as upstream does). Used by the
benchmark (fidelity section) and by `s3gen_export.tuning.tune`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from s3gen_runtime.batching import Request
from s3gen_runtime.solvers import nfe as solver_nfe
from s3gen_runtime.voice import Voice

from s3gen_runtime.metrics import db_from_rel, rel_rms, snr_db

STANDARD_SOLVERS = ("euler", "heun", "midpoint", "dpmpp2m")


@dataclass(frozen=True)
class FlowProblem:
    """Requests' ODEs as one batch: row i is (case, seed) = keys[i]; its generated mel is
    x[i, :, a:e] with (a, e) = conditioning.spans[i]."""

    runtime: object           # the S3GenRuntime whose graphs and solve are measured
    conditioning: object      # its Conditioning of the batch (x0: each row's seeded noise)
    keys: tuple               # (case index, seed) per row
    cfg_rate: float

    @property
    def frames(self) -> int:
        return self.conditioning.frames

    @property
    def seeds(self) -> tuple:
        return tuple(dict.fromkeys(seed for _, seed in self.keys))

    def settings(self, solver: str | None = None, steps: int | None = None):
        """The runtime's checked Settings for this problem's cfg_rate."""
        return self.runtime.resolve(solver, steps, self.cfg_rate)

    def velocity(self):
        """One estimator call on the whole batch (for timing single calls)."""
        return self.runtime.velocity(self.conditioning, self.settings())


def prepare_cases(runtime, cases, seeds, cfg_rate: float) -> FlowProblem:
    """Every (tokens, voice) case for every seed as one runtime batch, encoded once."""
    seeds = tuple(int(s) for s in seeds)
    keys = tuple((c, seed) for c in range(len(cases)) for seed in seeds)
    requests = [Request(cases[c][0], cases[c][1], seed=seed) for c, seed in keys]
    conditioning = runtime.encode(runtime.prepare(requests))
    return FlowProblem(runtime, conditioning, keys, float(cfg_rate))


def prepare_problem(runtime, tokens, voice: Voice, seeds, cfg_rate: float) -> FlowProblem:
    """One request, one row per seed."""
    return prepare_cases(runtime, [(tokens, voice)], seeds, cfg_rate)


def solve_mel(problem: FlowProblem, solver: str, steps: int) -> tuple[list, float, int]:
    """(each row's generated mel (80, 2N), wall seconds, NFE) of one solve of the whole batch."""
    settings = problem.settings(solver, steps)
    start = time.perf_counter()
    x1 = problem.runtime.solve(problem.conditioning, settings)
    seconds = time.perf_counter() - start
    return problem.conditioning.mels(x1), seconds, settings.nfe


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
    solver = "meanflow" if problem.runtime.variant == "meanflow" else solver
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
    return replace(problem, conditioning=problem.conditioning.row(index), keys=(problem.keys[index],))


__all__ = ["FlowProblem", "prepare_problem", "prepare_cases", "subproblem", "solve_mel", "candidates", "errors_against", "converged_reference",
           "STANDARD_SOLVERS", "db_from_rel"]

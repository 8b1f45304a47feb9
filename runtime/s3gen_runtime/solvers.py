"""ODE solvers for the flow-matching decoder.

The path is x_t = (1 - t) x0 + t x1 (x0 noise, x1 mel); a solver integrates
dx/dt = v from t = 0 to 1. A velocity is a callable

    velocity(x, t, r) -> np.ndarray    (same shape as x)

with t the current time and r the end of the current step. Only meanflow models
use r (they predict the average velocity over [t, r]); CFG is already applied
inside the callable, so one call is one NFE (one estimator run).

All state stays float32 and the Euler update is done op for op as upstream
torch does it (dt = r - t in float32, then x + dt * v), so Euler with the cosine
grid reproduces upstream given the same velocities.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .constants import MAX_STEPS
from .errors import InputError, S3GenError

Velocity = Callable[[np.ndarray, float, float], np.ndarray]

_F32 = np.float32


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be an integer >= 1, got {steps!r}")
    if steps > MAX_STEPS:
        raise InputError(f"steps must be at most {MAX_STEPS} (MAX_STEPS), got {steps}")
    return int(steps)


# ---------------------------------------------------------------- time grids

def linear_grid(n: int) -> np.ndarray:
    """torch.linspace(0, 1, n + 1, dtype=float32), reproduced bit for bit.

    torch's CPU kernel computes start + i*step for the first half and
    end - (steps-1-i)*step for the rest, step = 1/n in float32, each with a fused
    multiply-add (one rounding). float64 holds those products and sums exactly,
    so one cast to float32 is that single rounding (checked against torch 2.13
    for every n up to 3000).
    """
    n = _check_steps(n)
    count = n + 1
    step = np.float64(_F32(1.0) / _F32(n))
    i = np.arange(count, dtype=np.float64)
    head = (step * i).astype(_F32)
    tail = (1.0 - step * (count - 1 - i)).astype(_F32)
    return np.where(np.arange(count) < count // 2, head, tail)


def cosine_grid(n: int) -> np.ndarray:
    """Upstream's schedule 1 - cos(pi/2 * linspace(0, 1, n + 1)) in float32.

    The product and the subtraction are float32 exactly as in torch. The cosine
    is not quite: torch's vectorised float32 cos (MKL/SLEEF) is not correctly
    rounded and cannot be reproduced portably, so we take the correctly rounded
    float32 of the float64 cosine. That equals torch bit for bit for the upstream
    n = 10 (the golden t_span) and for n <= 7 and 9..15; elsewhere a few points
    differ by one float32 ulp of the cosine, <= 6e-8 absolute in t (measured for
    every n <= 3000 against torch 2.13 CPU), far below any output tolerance.
    """
    t = linear_grid(n)
    angle = (t * _F32(0.5)) * _F32(np.pi)
    cos = np.cos(angle.astype(np.float64)).astype(_F32)
    return _F32(1.0) - cos


def _grid(name: str, steps: int, grid) -> np.ndarray:
    """The solver's grid: the default for `name`, or a checked user grid."""
    steps = _check_steps(steps)
    if grid is None:
        return default_grid(name, steps)
    g = np.asarray(grid, dtype=_F32)
    if g.shape != (steps + 1,):
        raise InputError(f"grid for {steps} steps must have shape ({steps + 1},), got {g.shape}")
    if not np.all(np.isfinite(g)) or g[0] < 0 or g[-1] > 1 or np.any(np.diff(g) <= 0):
        raise InputError(f"grid must increase strictly within [0, 1], got {g.tolist()}")
    return g


# ---------------------------------------------------------------- helpers

def _start(x0) -> np.ndarray:
    x = np.array(x0, dtype=_F32)   # a copy: the caller's noise is never modified
    if not np.all(np.isfinite(x)):
        raise InputError("x0 (the starting noise) contains NaN or Inf")
    return x


def _call(velocity: Velocity, x: np.ndarray, t, r) -> np.ndarray:
    # t and r are float32 grid values passed as Python floats (exact).
    v = np.asarray(velocity(x, float(t), float(r)))
    if v.shape != x.shape:
        raise S3GenError(f"velocity returned shape {v.shape} for x of shape {x.shape}")
    return v.astype(_F32, copy=False)


class CountingVelocity:
    """Wraps a velocity and counts its calls: the NFE a solve really cost."""

    def __init__(self, fn: Velocity):
        self.fn = fn
        self.calls = 0

    def __call__(self, x, t, r):
        self.calls += 1
        return self.fn(x, t, r)


# ---------------------------------------------------------------- solvers

def _first_order(velocity: Velocity, x0, g: np.ndarray) -> np.ndarray:
    """x += (r - t) * v(x, t, r) over consecutive grid points, float32 like torch."""
    x = _start(x0)
    for t, r in zip(g[:-1], g[1:]):
        dt = r - t                    # float32 scalar, as torch's (r - t)
        x = x + dt * _call(velocity, x, t, r)
    return x


def euler(velocity: Velocity, x0, steps: int, grid=None) -> np.ndarray:
    """Upstream's solver: 1 NFE per step, cosine grid by default."""
    return _first_order(velocity, x0, _grid("euler", steps, grid))


def meanflow(velocity: Velocity, x0, steps: int = 2, grid=None) -> np.ndarray:
    """Meanflow (Turbo): x += (r - t) * u(x, t, r) with the average velocity u; linear grid."""
    return _first_order(velocity, x0, _grid("meanflow", steps, grid))


def heun(velocity: Velocity, x0, steps: int, grid=None) -> np.ndarray:
    """Trapezoid predictor-corrector: 2 NFE per step, second order."""
    g = _grid("heun", steps, grid)
    x = _start(x0)
    for t, r in zip(g[:-1], g[1:]):
        h = r - t
        k1 = _call(velocity, x, t, r)
        k2 = _call(velocity, x + h * k1, r, r)
        x = x + (h * _F32(0.5)) * (k1 + k2)
    return x


def midpoint(velocity: Velocity, x0, steps: int, grid=None) -> np.ndarray:
    """Explicit midpoint: 2 NFE per step, second order."""
    g = _grid("midpoint", steps, grid)
    x = _start(x0)
    for t, r in zip(g[:-1], g[1:]):
        half = (r - t) * _F32(0.5)
        k1 = _call(velocity, x, t, r)
        k2 = _call(velocity, x + half * k1, t + half, r)
        x = x + (r - t) * k2
    return x


def _lam(t: float) -> float:
    """Log signal-to-noise ratio of the flow path: log(t / (1 - t)); -inf at 0, +inf at 1."""
    if t <= 0.0:
        return -math.inf
    if t >= 1.0:
        return math.inf
    return math.log(t / (1.0 - t))


def dpmpp2m(velocity: Velocity, x0, steps: int, grid=None) -> np.ndarray:
    """DPM-Solver++(2M) in flow form: 1 NFE per step, second order in lambda.

    Data prediction D = x + (1 - t) v. A step s -> t with the previous point u:
        r = (lam_s - lam_u) / (lam_t - lam_s),  D1 = (D_s - D_u) / r,
        x_t = (1-t)/(1-s) x_s + (t-s)/(1-s) (D_s + D1/2).
    Where a lambda is infinite the step is first order: the first step (no history),
    the step whose history is t = 0 (r is infinite, so D1 = 0) and the last step to
    t = 1. The first-order step in data-prediction form equals x + (t - s) v exactly,
    so it is computed as that plain Euler step.
    """
    g = _grid("dpmpp2m", steps, grid).copy()
    if abs(float(g[-1]) - 1.0) <= 1e-6:
        g[-1] = 1.0   # pin: the final step must land on t = 1 exactly (lambda = +inf)
    x = _start(x0)
    d_prev, lam_prev = None, None
    for s, t in zip(g[:-1], g[1:]):
        s64, t64 = float(s), float(t)
        v = _call(velocity, x, s, t)
        d = x + _F32(1.0 - s64) * v
        lam_s, lam_t = _lam(s64), _lam(t64)
        if d_prev is None or not (math.isfinite(lam_prev) and math.isfinite(lam_t)):
            x = x + (t - s) * v
        else:
            ratio = (lam_s - lam_prev) / (lam_t - lam_s)
            d1 = (d - d_prev) * _F32(1.0 / ratio)
            x = _F32((1.0 - t64) / (1.0 - s64)) * x + _F32((t64 - s64) / (1.0 - s64)) * (d + _F32(0.5) * d1)
        d_prev, lam_prev = d, lam_s
    return x


# ---------------------------------------------------------------- registry

SOLVERS: dict[str, Callable] = {
    "euler": euler,
    "heun": heun,
    "midpoint": midpoint,
    "dpmpp2m": dpmpp2m,
    "meanflow": meanflow,
}
_NFE_PER_STEP = {"euler": 1, "heun": 2, "midpoint": 2, "dpmpp2m": 1, "meanflow": 1}


def get_solver(name: str) -> Callable:
    """The solver function named `name`; an unknown name lists the valid ones."""
    if name not in SOLVERS:
        raise InputError(f"unknown solver {name!r}; valid solvers: {', '.join(SOLVERS)}")
    return SOLVERS[name]


def nfe(name: str, steps: int) -> int:
    """Velocity (estimator) calls a solve with `steps` steps makes."""
    get_solver(name)
    return _NFE_PER_STEP[name] * _check_steps(steps)


def default_grid(name: str, steps: int) -> np.ndarray:
    """Linear for meanflow (as trained), upstream's cosine grid for the others."""
    get_solver(name)
    return linear_grid(steps) if name == "meanflow" else cosine_grid(steps)


def solve(name: str, velocity: Velocity, x0, steps: int, grid=None) -> np.ndarray:
    """Run solver `name`: the one entry point the pipeline needs."""
    return get_solver(name)(velocity, x0, steps, grid)

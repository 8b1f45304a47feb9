"""Estimator graphs: the flow-matching U-Net, called once per solver step.

`estimator_cfg` has classifier-free guidance inside (the 2B batch is built with concat, the guided
velocity for B rows comes out); `estimator` is the same network without the unconditional half, for
cfg_rate = 0 and for the meanflow variant (which also takes r). Never pay for CFG that is unused.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from s3gen_runtime.constants import MEL_BINS

from ..model.estimator import GuidedEstimator
from .base import (EXPORT_CASE, VALIDATION_CASES, Case, ComponentSpec, TensorSpec, Tolerance, length_mask, lengths,
                   prompt_frames)


class EstimatorGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.decoder = model.flow.decoder.estimator

    def forward(self, x, mask, mu, t, spks, cond):
        return self.decoder(x, mask, mu, t, spks, cond)


class MeanflowEstimatorGraph(EstimatorGraph):
    def forward(self, x, mask, mu, t, spks, cond, r):
        return self.decoder(x, mask, mu, t, spks, cond, r)


class GuidedEstimatorGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.guided = GuidedEstimator(model.flow.decoder.estimator)

    def forward(self, x, mask, mu, t, spks, cond, cfg_rate):
        return self.guided(x, mask, mu, t, spks, cond, cfg_rate)


def _base_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    frames = lengths(case, "total", scale=2)
    b, t_max = case.batch, int(frames.max())
    mask = length_mask(frames, t_max)[:, None, :]
    cond = rng.standard_normal((b, MEL_BINS, t_max)).astype(np.float32) * length_mask(prompt_frames(case), t_max)[:, None]
    return {
        "x": rng.standard_normal((b, MEL_BINS, t_max)).astype(np.float32),
        "mask": mask,
        "mu": rng.standard_normal((b, MEL_BINS, t_max)).astype(np.float32),
        "t": rng.uniform(0.0, 0.9, b).astype(np.float32),
        "spks": rng.standard_normal((b, MEL_BINS)).astype(np.float32),
        "cond": cond,
    }


def make_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return _base_inputs(case, rng)


def make_meanflow_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = _base_inputs(case, rng)
    feeds["r"] = np.minimum(feeds["t"] + rng.uniform(0.05, 0.5, case.batch), 1.0).astype(np.float32)
    return feeds


def make_guided_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = _base_inputs(case, rng)
    feeds["cfg_rate"] = np.full(case.batch, 0.7, dtype=np.float32)
    return feeds


_FRAMES = ("batch", MEL_BINS, "frames")
_COMMON_INPUTS = (
    TensorSpec("x", "float32", _FRAMES),
    TensorSpec("mask", "float32", ("batch", 1, "frames")),
    TensorSpec("mu", "float32", _FRAMES),
    TensorSpec("t", "float32", ("batch",)),
    TensorSpec("spks", "float32", ("batch", MEL_BINS)),
    TensorSpec("cond", "float32", _FRAMES),
)
_OUTPUTS = (TensorSpec("velocity", "float32", _FRAMES),)
# The velocity of a 71M-parameter U-Net: fp32 reassociation across backends gives ~1e-5 relative.
_TOLERANCES = {"velocity": Tolerance(atol=1e-3, rtol=1e-3)}


def _spec(name, extra_inputs, build, make, description):
    return ComponentSpec(name=name, description=description, inputs=_COMMON_INPUTS + extra_inputs, outputs=_OUTPUTS,
                         tolerances=_TOLERANCES, build_module=build, make_inputs=make, export_case=EXPORT_CASE,
                         validation_cases=VALIDATION_CASES, fused_attention=True)


SPEC = _spec("estimator", (), EstimatorGraph, make_inputs, "velocity without guidance (cfg_rate = 0)")
GUIDED_SPEC = _spec("estimator_cfg", (TensorSpec("cfg_rate", "float32", ("batch",)),), GuidedEstimatorGraph,
                    make_guided_inputs, "velocity with classifier-free guidance inside")
MEANFLOW_SPEC = _spec("estimator", (TensorSpec("r", "float32", ("batch",)),), MeanflowEstimatorGraph,
                      make_meanflow_inputs, "meanflow average velocity over [t, r], no guidance")

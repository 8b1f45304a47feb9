"""Vocoder graph: mel + sine-source noise -> waveform (F0 predictor, NSF source, HiFT, STFT/ISTFT as
convolutions, clamp). The 40 ms fade-in is applied by the runtime (s3gen_runtime.audio)."""
from __future__ import annotations

import numpy as np
from torch import nn

from s3gen_runtime.constants import MEL_BINS, N_HARMONICS, SAMPLES_PER_FRAME

from .base import EXPORT_CASE, VALIDATION_CASES, Case, ComponentSpec, TensorSpec, Tolerance, length_mask, vocoded_frames


class VocoderGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.hift = model.mel2wav

    def forward(self, mel, mel_lengths, sine_phase, sine_noise):
        out = self.hift(mel, mel_lengths, sine_phase, sine_noise)
        return out["wav"], out["f0"]


def make_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    frames = vocoded_frames(case)
    b, f_max = case.batch, int(frames.max())
    mel = (rng.standard_normal((b, MEL_BINS, f_max)) * 2.0 - 5.0).astype(np.float32)
    phase = rng.uniform(-np.pi, np.pi, (b, N_HARMONICS, 1)).astype(np.float32)
    phase[:, 0] = 0.0
    return {
        "mel": mel * length_mask(frames, f_max)[:, None, :],
        "mel_lengths": frames,
        "sine_phase": phase,
        "sine_noise": rng.standard_normal((b, N_HARMONICS, f_max * SAMPLES_PER_FRAME)).astype(np.float32),
    }


SPEC = ComponentSpec(
    name="vocoder",
    description="mel (50 Hz) -> 24 kHz waveform, clamped to +-0.99, zero past each row's length",
    inputs=(
        TensorSpec("mel", "float32", ("batch", MEL_BINS, "mel_frames")),
        TensorSpec("mel_lengths", "int64", ("batch",)),
        TensorSpec("sine_phase", "float32", ("batch", N_HARMONICS, 1)),
        TensorSpec("sine_noise", "float32", ("batch", N_HARMONICS, "samples")),
    ),
    outputs=(
        TensorSpec("wav", "float32", ("batch", "samples")),
        TensorSpec("f0", "float32", ("batch", "mel_frames")),
    ),
    derived_axes={"samples": ("mel_frames", SAMPLES_PER_FRAME)},
    tolerances={"wav": Tolerance(2e-3), "f0": Tolerance(1e-3, 1e-4)},
    build_module=VocoderGraph,
    make_inputs=make_inputs,
    export_case=EXPORT_CASE,
    validation_cases=VALIDATION_CASES,
)

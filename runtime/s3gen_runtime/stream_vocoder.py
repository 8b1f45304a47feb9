"""The vocoder side of a stream: committed mel frames in, seamless waveform pieces out.

Each call vocodes a window of the committed mel: `left` already emitted frames as context (the convs
see real audio-side history instead of zeros), the new frames, and a tail of `hold` frames whose
output is not trusted yet (no right context) and is redone by the next window. The last `XFADE`
frame of trusted output is kept back and crossfaded into the next window's output with weights that
sum to exactly 1, so where both windows agree the result is their common value.

The sine source must not restart its phase per window (a jump at every seam): the phase each harmonic
has at the crossfade frame in the old window is carried over. A window's own phase at that frame
depends on the F0 it predicts over its left context, whose first frames see zero padding and differ
from what the old window predicted there; so a short probe run over the left context (the F0
predictor reaches 5 frames each side) gives exactly those F0 values first, and the window's start
phase is chosen so both windows have the same phase at the crossfade frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .audio import trim_fade_curve
from .constants import N_HARMONICS, SAMPLE_RATE, SAMPLES_PER_FRAME

XFADE = 1                # crossfade length in frames (20 ms): seams fall on frame boundaries
F0_REACH = 5             # the F0 predictor: five k=3 convs, so a frame sees 5 frames each side
_F32 = np.float32


def crossfade_weights(samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade_out, fade_in), float32, fade_out + fade_in == 1 exactly at every sample.

    A raised cosine; fade_out is computed as 1 - fade_in, which is exact in float32 for values in
    [0, 1] (Sterbenz), so where the two windows agree the crossfade leaves the signal unchanged."""
    fade_in = (0.5 - 0.5 * np.cos(np.pi * (np.arange(samples) + 0.5) / samples)).astype(_F32)
    return (_F32(1.0) - fade_in).astype(_F32), fade_in


def harmonic_steps(f0: np.ndarray) -> np.ndarray:
    """f0 (frames,) Hz -> cycles per sample per harmonic (9, frames), float32 as the graph forms it."""
    harmonics = np.arange(1, N_HARMONICS + 1, dtype=_F32)[:, None]
    return (np.asarray(f0, dtype=_F32)[None, :] * harmonics) / _F32(SAMPLE_RATE)


def cycles_over(f0: np.ndarray) -> np.ndarray:
    """Whole-frame phase advance (cycles, mod 1, float64) per harmonic over the given frames' F0."""
    advance = harmonic_steps(f0).astype(np.float64) * SAMPLES_PER_FRAME
    return np.mod(advance.sum(axis=1), 1.0)


def wrap_phase(cycles: np.ndarray) -> np.ndarray:
    """Cycles -> radians in [-pi, pi) as the graph's (1, 9, 1) sine_phase input."""
    wrapped = np.mod(np.asarray(cycles, dtype=np.float64) + 0.5, 1.0) - 0.5
    return (2.0 * math.pi * wrapped).astype(_F32).reshape(1, N_HARMONICS, 1)


def apply_fade_at(piece: np.ndarray, start: int) -> np.ndarray:
    """Upstream's start-of-utterance fade-in on a piece beginning at absolute sample `start`: only
    the stream's first 40 ms are faded, wherever the seams fall."""
    curve = trim_fade_curve()
    end = min(curve.shape[0], start + piece.shape[0])
    if start < end:
        piece[: end - start] *= curve[start:end]
    return piece


@dataclass
class VocoderState:
    """Per stream: frames emitted so far (a frame boundary), the held-back crossfade tail of the last
    window and each harmonic's phase (cycles, phase offset included) at the tail's first frame."""

    emitted: int = 0
    tail: np.ndarray | None = None
    tail_cycles: np.ndarray | None = None
    started: bool = False

    @property
    def emitted_samples(self) -> int:
        return self.emitted * SAMPLES_PER_FRAME


def has_sine_source(runner) -> bool:
    """HiFT: a sine source whose phase a stream must carry (sine_phase in, f0 out). Vocos has none."""
    return "sine_phase" in runner.input_names and "f0" in runner.output_names


def run_window(runner, mel: np.ndarray, phase: np.ndarray, noise: np.ndarray) -> dict:
    """One vocoder run of a single window: mel (80, frames) -> its wav (and f0 where the graph has a
    sine source), cut to the window. Feeds only the inputs the graph declares."""
    frames = mel.shape[1]
    available = {"mel": lambda: np.ascontiguousarray(mel[None], dtype=_F32),
                 "mel_lengths": lambda: np.array([frames], dtype=np.int64),
                 "sine_phase": lambda: phase, "sine_noise": lambda: np.ascontiguousarray(noise)}
    feeds = {name: available[name]() for name in runner.input_names}
    sine = has_sine_source(runner)
    out = runner.run(feeds, ["wav", "f0"] if sine else ["wav"])
    return {"wav": out["wav"][0, : frames * SAMPLES_PER_FRAME], "f0": out["f0"][0, :frames] if sine else None}


def window_start_phase(runner, mel, noise_at, state: VocoderState, start: int, phase0) -> np.ndarray:
    """sine_phase for a window starting at frame `start` such that its phase at frame state.emitted
    equals the old window's there: the F0 over [start, emitted) comes from a probe over the left
    context (exact, since the probe sees the same frames the window does within F0_REACH)."""
    if state.tail_cycles is None:   # the first window, or a vocoder without a sine source
        return phase0
    if start == state.emitted:
        return wrap_phase(state.tail_cycles)
    end = min(mel.shape[1], state.emitted + F0_REACH + 1)
    probe = run_window(runner, mel[:, start:end], phase0, noise_at(start, end))
    advance = cycles_over(probe["f0"][: state.emitted - start])
    return wrap_phase(state.tail_cycles - advance)


def vocode_step(runner, mel: np.ndarray, final: bool, state: VocoderState, *, left: int, hold: int,
                noise_at, phase0: np.ndarray) -> np.ndarray | None:
    """The next waveform piece from the committed mel (80, C) (all frames so far), or None when the
    new frames do not reach past the crossfade yet. noise_at(a, b) -> sine noise (1, 9, 480 (b - a))
    for generated frames [a, b) from the stream's one buffer. Updates `state`."""
    frames = mel.shape[1]
    trusted = frames if final else frames - hold           # frames whose output this window settles
    keep = trusted if final else trusted - XFADE           # emitted up to here; the rest is the tail
    if not final and keep <= state.emitted:
        return None
    start = max(0, state.emitted - left)
    phase = window_start_phase(runner, mel, noise_at, state, start, phase0)
    out = run_window(runner, mel[:, start:frames], phase, noise_at(start, frames))
    wav, offset = out["wav"], start * SAMPLES_PER_FRAME
    piece = np.array(wav[state.emitted_samples - offset: keep * SAMPLES_PER_FRAME - offset], dtype=_F32)
    if state.tail is not None:
        fade_out, fade_in = crossfade_weights(state.tail.shape[0])
        n = state.tail.shape[0]
        piece[:n] = state.tail * fade_out + piece[:n] * fade_in
    piece = apply_fade_at(piece, state.emitted_samples)
    if not final:
        state.tail = np.array(wav[keep * SAMPLES_PER_FRAME - offset: trusted * SAMPLES_PER_FRAME - offset], dtype=_F32)
        if out["f0"] is not None:
            start_cycles = np.asarray(phase, dtype=np.float64).reshape(-1) / (2.0 * math.pi)
            state.tail_cycles = np.mod(start_cycles + cycles_over(out["f0"][: keep - start]), 1.0)
    state.emitted = keep
    state.started = True
    return piece


__all__ = ["VocoderState", "vocode_step", "run_window", "has_sine_source", "crossfade_weights", "apply_fade_at", "cycles_over", "wrap_phase",
           "harmonic_steps", "XFADE", "F0_REACH"]

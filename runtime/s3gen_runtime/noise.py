"""Deterministic noise from a seed.

The graphs contain no random ops: the flow's starting point z and the vocoder's
sine-source randomness are inputs. Drawing them here from numpy's PCG64 makes a
seed reproduce the same audio on every backend and machine.

Draw order is part of the contract (changing it changes every seeded output):
  1. z           (1, 80, 2(P+N))          standard normal
  2. sine_phase  (1, 9, 1)                uniform in [-pi, pi); harmonic 0 then set to 0
  3. sine_noise  (1, 9, 480*(2(P+N)-F))   standard normal: 480*2N, or 480*(2N-1) after an odd prompt
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .io import expected_noise_shapes

# float32(pi) rounds up past pi; cap the phase at the largest float32 below pi.
_PHASE_MAX = np.nextafter(np.float32(np.pi), np.float32(0.0))


def _count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def draw_noise(seed: int, prompt_tokens: int, new_tokens: int, prompt_frames: int | None = None) -> dict:
    """z, sine_phase and sine_noise (float32) for P prompt and N new tokens after a prompt mel of F frames
    (2P by default, or 2P + 1)."""
    seed = _count(seed, "seed", 0)
    if prompt_frames is not None:
        prompt_frames = _count(prompt_frames, "prompt_frames", 0)
    shapes = expected_noise_shapes(_count(prompt_tokens, "prompt_tokens", 0), _count(new_tokens, "new_tokens", 1),
                                   prompt_frames)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(shapes["z"], dtype=np.float32)
    phase = rng.uniform(-np.pi, np.pi, shapes["sine_phase"]).astype(np.float32)
    phase = np.minimum(phase, _PHASE_MAX)
    phase[:, 0, :] = 0.0   # the fundamental starts at phase 0, as upstream SineGen does
    sine_noise = rng.standard_normal(shapes["sine_noise"], dtype=np.float32)
    return {"z": z, "sine_phase": phase, "sine_noise": sine_noise}

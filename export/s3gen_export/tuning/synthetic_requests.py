"""Synthetic requests (random tokens, a random voice) for measuring solvers on an artifact folder's graphs:
tuning and the benchmarks use the same ones. numpy only."""
from __future__ import annotations

import numpy as np

from s3gen_runtime.constants import MEL_BINS, SPEAKER_EMBED_DIM, SPEECH_VOCAB_SIZE, TOKEN_MEL_RATIO
from s3gen_runtime.voice import Voice


def synthetic_voice(prompt_tokens: int, seed: int = 1234) -> Voice:
    """A random voice: prompt tokens, a log-mel-like prompt (mean -5, std 2) and an x-vector."""
    rng = np.random.default_rng(seed)
    return Voice.validated(
        rng.integers(0, SPEECH_VOCAB_SIZE, prompt_tokens),
        (rng.standard_normal((TOKEN_MEL_RATIO * prompt_tokens, MEL_BINS)) * 2.0 - 5.0).astype(np.float32),
        rng.standard_normal(SPEAKER_EMBED_DIM).astype(np.float32),
    )


def synthetic_tokens(new_tokens: int, seed: int = 4321) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, SPEECH_VOCAB_SIZE, new_tokens).astype(np.int64)

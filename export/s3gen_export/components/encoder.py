"""Encoder graph: tokens + voice -> mu, mask, spks, cond (token embedding, prompt concat and
projections inside; dynamic batch, prompt and token lengths)."""
from __future__ import annotations

import numpy as np
from torch import nn

from s3gen_runtime.constants import MEL_BINS, SPEAKER_EMBED_DIM, SPEECH_VOCAB_SIZE

from .base import (EXPORT_CASE, VALIDATION_CASES, Case, ComponentSpec, TensorSpec, Tolerance, lengths,
                   prompt_frames)


class EncoderGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.flow = model.flow

    def forward(self, tokens, token_lengths, prompt_tokens, prompt_lengths, prompt_feat, prompt_feat_lengths,
                embedding):
        out = self.flow.encode(tokens, token_lengths, prompt_tokens, prompt_lengths, prompt_feat,
                               prompt_feat_lengths, embedding)
        return out["mu"], out["mask"], out["spks"], out["cond"]


def make_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random ids and mels everywhere, padding included: padded ids and frames must not change the valid ones."""
    prompt, new, feat = lengths(case, "prompt"), lengths(case, "new"), prompt_frames(case)
    b = case.batch
    return {
        "tokens": rng.integers(0, SPEECH_VOCAB_SIZE, (b, int(new.max()))).astype(np.int64),
        "token_lengths": new,
        "prompt_tokens": rng.integers(0, SPEECH_VOCAB_SIZE, (b, int(prompt.max()))).astype(np.int64),
        "prompt_lengths": prompt,
        "prompt_feat": (rng.standard_normal((b, int(feat.max()), MEL_BINS)) * 2.0 - 5.0).astype(np.float32),
        "prompt_feat_lengths": feat,
        "embedding": rng.standard_normal((b, SPEAKER_EMBED_DIM)).astype(np.float32),
    }


SPEC = ComponentSpec(
    name="encoder",
    description="speech tokens + voice -> estimator conditioning at 50 Hz",
    inputs=(
        TensorSpec("tokens", "int64", ("batch", "tokens")),
        TensorSpec("token_lengths", "int64", ("batch",)),
        TensorSpec("prompt_tokens", "int64", ("batch", "prompt_tokens")),
        TensorSpec("prompt_lengths", "int64", ("batch",)),
        # prompt_frames is its own axis: F = 2P or 2P + 1 per row, and rows are padded to the widest F
        TensorSpec("prompt_feat", "float32", ("batch", "prompt_frames", MEL_BINS)),
        TensorSpec("prompt_feat_lengths", "int64", ("batch",)),
        TensorSpec("embedding", "float32", ("batch", SPEAKER_EMBED_DIM)),
    ),
    outputs=(
        TensorSpec("mu", "float32", ("batch", MEL_BINS, "frames")),
        TensorSpec("mask", "float32", ("batch", 1, "frames")),
        TensorSpec("spks", "float32", ("batch", MEL_BINS)),
        TensorSpec("cond", "float32", ("batch", MEL_BINS, "frames")),
    ),
    tolerances={"mu": Tolerance(1e-4), "mask": Tolerance(0.0), "spks": Tolerance(1e-5), "cond": Tolerance(0.0)},
    build_module=EncoderGraph,
    make_inputs=make_inputs,
    export_case=EXPORT_CASE,
    validation_cases=VALIDATION_CASES,
    head_by_head_attention=True,
)


def valid_frames(case: Case) -> np.ndarray:
    return lengths(case, "total", scale=2)



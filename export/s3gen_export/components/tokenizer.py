"""Tokenizer graph: the S3TokenizerV2 encoder and FSQ projection, 16 kHz log-mel (100 frames/s) ->
pre-rounding FSQ values at 25 Hz. Rounding to token ids is numpy (`s3gen_runtime.fsq.fsq_tokens`), outside
the graph, so callers can see values near a rounding boundary.

Padding is inert for the valid positions (inputs masked before each conv, attention and FSMN masked), so
unequal batches are validated too. Values past a row's `fsq_lengths` are not meaningful.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from s3gen_runtime.fsq import FSQ_DIM

from .base import Case, ComponentSpec, TensorSpec, Tolerance, frame_lengths

TOKENIZER_MELS = 128
EXPORT_CASE = Case("export_b2", ((203,), (150,)))
# lengths not divisible by 4 in each case (37, 421, 7, 333): the stride-2 convs' ceil lengths
VALIDATION_CASES = (
    Case("b1_short", ((37,),)),
    Case("b1_10s", ((1000,),)),
    Case("b2_unequal", ((421,), (250,))),
    Case("b3_mixed", ((90,), (333,), (7,))),
)


class TokenizerGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.tokenizer = model.tokenizer

    def forward(self, mel, mel_lengths):
        return self.tokenizer(mel, mel_lengths)


def make_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Values in the range of the tokenizer's normalised log-mel ((log10 + 4) / 4, floored at max - 8),
    random in the padding too: padding must not change the valid positions."""
    frames = frame_lengths(case)
    mel = rng.uniform(-1.0, 1.5, (case.batch, TOKENIZER_MELS, int(frames.max())))
    return {"mel": mel.astype(np.float32), "mel_lengths": frames}


SPEC = ComponentSpec(
    name="tokenizer",
    description="128-bin log-mel (16 kHz, 100 frames/s) + lengths -> FSQ values before rounding (25 Hz, "
                "ceil(frames / 4) per row) + their lengths; tokens = s3gen_runtime.fsq.fsq_tokens",
    inputs=(
        TensorSpec("mel", "float32", ("batch", TOKENIZER_MELS, "mel_frames")),
        TensorSpec("mel_lengths", "int64", ("batch",)),
    ),
    outputs=(
        TensorSpec("fsq", "float32", ("batch", "tokens", FSQ_DIM)),
        TensorSpec("fsq_lengths", "int64", ("batch",)),
    ),
    tolerances={"fsq": Tolerance(1e-4), "fsq_lengths": Tolerance(0.0)},
    build_module=TokenizerGraph,
    make_inputs=make_inputs,
    export_case=EXPORT_CASE,
    validation_cases=VALIDATION_CASES,
    fp32_only=True,
)

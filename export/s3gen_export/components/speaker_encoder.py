"""Speaker-encoder graph: mean-subtracted Kaldi fbank -> CAMPPlus x-vector (what a voice's `embedding` is).

CAMPPlus pools mean and standard deviation over every frame it is given, so zero-padded frames are not
inert: a row padded to a longer batch gets a different embedding. Callers run one utterance per call or
batch rows of equal length; the validation cases are batch 1 at several lengths and one equal-length
batch, never an unequal batch.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from s3gen_runtime.constants import SPEAKER_EMBED_DIM

from .base import Case, ComponentSpec, TensorSpec, Tolerance, frame_lengths

FBANK_BINS = 80
# batch 2 at export: a batch-1 example would let the exporter specialise the batch axis to 1
EXPORT_CASE = Case("export_b2_equal", ((150,), (150,)))
# 40 frames: short; 257: the segment pooling's last block partial; 998: a 10 s voice (the crop upstream
# applies); three equal rows of 301 frames
VALIDATION_CASES = (
    Case("b1_short", ((40,),)),
    Case("b1_mid", ((257,),)),
    Case("b1_10s", ((998,),)),
    Case("b3_equal", ((301,), (301,), (301,))),
)


class SpeakerEncoderGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.speaker_encoder = model.speaker_encoder

    def forward(self, fbank):
        return self.speaker_encoder(fbank)


def make_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """fbank-like rows (log energies around -5 with a few units of spread), mean-subtracted over frames
    as the real input is. Rows must have equal lengths (padding is not inert, see the module doc)."""
    frames = frame_lengths(case)
    if len(set(frames.tolist())) != 1:
        raise ValueError(f"{case.name}: speaker-encoder cases need rows of equal length, got {frames.tolist()}")
    fbank = rng.standard_normal((case.batch, int(frames[0]), FBANK_BINS)) * 2.0 - 5.0
    fbank -= fbank.mean(axis=1, keepdims=True)
    return {"fbank": fbank.astype(np.float32)}


SPEC = ComponentSpec(
    name="speaker_encoder",
    description="mean-subtracted 80-bin Kaldi fbank (16 kHz, 100 frames/s) -> 192-d x-vector; pools over "
                "all frames, so validated at batch 1 and equal-length batches only",
    inputs=(TensorSpec("fbank", "float32", ("batch", "fbank_frames", FBANK_BINS)),),
    outputs=(TensorSpec("embedding", "float32", ("batch", SPEAKER_EMBED_DIM)),),
    tolerances={"embedding": Tolerance(1e-5)},
    build_module=SpeakerEncoderGraph,
    make_inputs=make_inputs,
    export_case=EXPORT_CASE,
    validation_cases=VALIDATION_CASES,
    fp32_only=True,
)

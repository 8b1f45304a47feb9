"""The export specs, one per graph, and which graphs each checkpoint variant gets."""
from __future__ import annotations

from .base import Case, ComponentSpec, TensorSpec, Tolerance
from . import encoder, estimator, speaker_encoder, tokenizer, vocoder

# Made when the checkpoint has the voice models (speaker_encoder.*, tokenizer.*); the same for both variants.
VOICE_SPECS = (speaker_encoder.SPEC, tokenizer.SPEC)


def specs_for_variant(variant: str, voice: bool = False) -> tuple[ComponentSpec, ...]:
    """standard: encoder, guided and unguided estimators, vocoder; meanflow: no guided estimator.
    With `voice`, the speaker encoder and the tokenizer follow."""
    if variant == "meanflow":
        specs = (encoder.SPEC, estimator.MEANFLOW_SPEC, vocoder.SPEC)
    elif variant == "standard":
        specs = (encoder.SPEC, estimator.GUIDED_SPEC, estimator.SPEC, vocoder.SPEC)
    else:
        raise ValueError(f"unknown S3Gen variant {variant!r}; known: standard, meanflow")
    return specs + VOICE_SPECS if voice else specs


__all__ = ["Case", "ComponentSpec", "TensorSpec", "Tolerance", "VOICE_SPECS", "specs_for_variant"]

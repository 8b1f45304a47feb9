"""The export specs, one per graph, and which graphs each checkpoint variant gets."""
from __future__ import annotations

from .base import Case, ComponentSpec, TensorSpec, Tolerance
from . import encoder, estimator, vocoder


def specs_for_variant(variant: str) -> tuple[ComponentSpec, ...]:
    """standard: encoder, guided and unguided estimators, vocoder; meanflow: no guided estimator."""
    if variant == "meanflow":
        return (encoder.SPEC, estimator.MEANFLOW_SPEC, vocoder.SPEC)
    if variant == "standard":
        return (encoder.SPEC, estimator.GUIDED_SPEC, estimator.SPEC, vocoder.SPEC)
    raise ValueError(f"unknown S3Gen variant {variant!r}; known: standard, meanflow")


__all__ = ["Case", "ComponentSpec", "TensorSpec", "Tolerance", "specs_for_variant"]

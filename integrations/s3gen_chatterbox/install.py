"""install(tts, artifacts): the drop-in in place of an upstream TTS object's S3Gen, after checking that the
upstream release is one this drop-in was tested against and that the artifacts hold the S3Gen variant the
class runs (standard for ChatterboxTTS, multilingual and VC; meanflow for Turbo)."""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch

from s3gen_runtime.errors import InputError
from s3gen_runtime.manifest import load_manifest
from s3gen_runtime.pipeline import S3GenRuntime
from .drop_in import S3GenDropIn

# Releases whose S3Gen call contract and random draws the tests check (tests/integrations/).
SUPPORTED_VERSIONS = {"chatterbox-tts": ("0.1.6", "0.1.7")}
DISTRIBUTIONS = {"chatterbox": "chatterbox-tts", "chatterbox_vllm": "chatterbox-vllm"}
TURBO_CLASSES = ("ChatterboxTurboTTS",)


class UnsupportedUpstream(InputError):
    """The TTS object comes from an upstream release (or project) the drop-in does not support."""


def upstream_version(tts) -> tuple[str, str]:
    """(distribution, version) of the package the TTS object's class comes from."""
    cls = type(tts)
    package = cls.__module__.split(".")[0]
    dist = DISTRIBUTIONS.get(package)
    if dist is None:
        raise UnsupportedUpstream(f"{cls.__qualname__} (module {cls.__module__}) is not an upstream Chatterbox class; "
                                  f"supported: {supported_text()}")
    try:
        return dist, importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise UnsupportedUpstream(f"{cls.__qualname__} comes from {package}, but no installed {dist} distribution "
                                  f"says which release it is; supported: {supported_text()}") from None


def supported_text() -> str:
    return "; ".join(f"{dist} {', '.join(versions)}" for dist, versions in SUPPORTED_VERSIONS.items())


def variant_of(tts, replaced) -> str:
    """The S3Gen variant the TTS object runs: the replaced model's own flag, else the class."""
    meanflow = getattr(replaced, "meanflow", None)
    if meanflow is None:
        meanflow = type(tts).__name__ in TURBO_CLASSES
    return "meanflow" if meanflow else "standard"


def install(tts, artifacts, **runtime_options) -> S3GenDropIn:
    """Replace `tts.s3gen` with an S3GenDropIn over `artifacts` (a folder, or an S3GenRuntime to share);
    runtime_options go to S3GenRuntime (backend, precision, ...). T3, the watermarker, the voice encoder and
    cached conditionals stay as they are. Returns the drop-in."""
    dist, version = upstream_version(tts)
    if version not in SUPPORTED_VERSIONS.get(dist, ()):
        raise UnsupportedUpstream(f"{type(tts).__qualname__} comes from {dist} {version}, which the drop-in does not "
                                  f"support; supported: {supported_text()}")
    replaced = getattr(tts, "s3gen", None)
    if replaced is None:
        raise InputError(f"{type(tts).__qualname__} has no s3gen to replace")
    wanted = variant_of(tts, replaced)
    if isinstance(artifacts, S3GenRuntime):
        if runtime_options:
            raise InputError("runtime options go with an artifact folder, not with an S3GenRuntime already made")
        folder, variant = artifacts.folder, artifacts.variant
    else:   # the manifest alone says the variant: refuse before loading a GB of graphs
        folder = Path(artifacts)
        variant = load_manifest(folder, verify=False).checkpoint.variant
    if variant != wanted:
        raise InputError(f"{folder} holds the {variant} S3Gen, but {type(tts).__qualname__} runs the {wanted} one: "
                         f"export {'s3gen_meanflow' if wanted == 'meanflow' else 's3gen'}.safetensors for it")
    runtime = artifacts if isinstance(artifacts, S3GenRuntime) else S3GenRuntime(folder, **runtime_options)
    fixed = getattr(getattr(getattr(replaced, "flow", None), "decoder", None), "rand_noise", None)
    drop_in = S3GenDropIn(runtime, device=replaced.device, dtype=replaced.dtype,
                          fixed_noise=fixed if torch.is_tensor(fixed) else None)
    tts.s3gen = drop_in
    return drop_in


__all__ = ["install", "upstream_version", "UnsupportedUpstream", "SUPPORTED_VERSIONS", "variant_of"]

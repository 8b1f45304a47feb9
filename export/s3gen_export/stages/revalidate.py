"""Validate an existing artifact folder against a checkpoint (the `validate` stage on its own)."""
from __future__ import annotations

from pathlib import Path

from s3gen_runtime.errors import ArtifactError
from s3gen_runtime.manifest import load_manifest

from ..model.checkpoint import file_sha256
from ..components import specs_for_variant
from ..model.s3gen import load_s3gen
from ..rewrites.transforms import prepare_for_export
from .validate import validate_component


def revalidate(artifacts: Path, checkpoint: Path, progress=print) -> bool:
    manifest = load_manifest(artifacts)
    sha = file_sha256(checkpoint)
    if sha != manifest.checkpoint.sha256:
        raise ArtifactError(f"{checkpoint} (sha256 {sha[:12]}...) is not the checkpoint these artifacts were "
                            f"exported from ({manifest.checkpoint.file}, {manifest.checkpoint.sha256[:12]}...)")
    model = prepare_for_export(load_s3gen(checkpoint))
    ok = True
    for spec in specs_for_variant(model.variant, voice=model.has_voice):
        if spec.name == "vocoder" and manifest.vocoder.kind != "hift":
            progress(f"vocoder: skipped (a {manifest.vocoder.kind} model from {manifest.vocoder.source}, "
                     "not the checkpoint's; it was validated against the vocos package at export)")
            continue
        component = manifest.component(spec.name)
        if component.spec_hash != spec.spec_hash():
            raise ArtifactError(f"{spec.name}: exported with spec {component.spec_hash}, this tool has "
                                f"{spec.spec_hash()}; re-export")
        report = validate_component(model, spec, Path(artifacts) / component.file, progress=progress)
        progress(report.table())
        ok = ok and report.passed
    return ok

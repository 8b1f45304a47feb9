"""The benchmark's inputs: the synthetic checkpoint and its fp32 + int8 export, made once and reused.

An export is reused when its manifest loads with every file's sha256 checked, names the same
checkpoint sha256, and (when int8 is wanted) holds the int8 graphs.
"""
from __future__ import annotations

import time
from pathlib import Path

from s3gen_runtime.backends.base import INT8_SUFFIX
from s3gen_runtime.errors import S3GenError
from s3gen_runtime.manifest import load_manifest

from .common import Progress


def ensure_checkpoint(path: Path, progress: Progress = print, variant: str = "standard") -> Path:
    from s3gen_export.model.synthetic import ensure_synthetic_checkpoint

    return ensure_synthetic_checkpoint(path, variant, progress)


def has_int8(manifest) -> bool:
    return any(name.endswith(INT8_SUFFIX) for name in manifest.components)


def export_is_current(folder: Path, checkpoint_sha: str, int8: bool) -> bool:
    try:
        manifest = load_manifest(folder, verify=True)
    except S3GenError:
        return False
    return manifest.checkpoint.sha256 == checkpoint_sha and (has_int8(manifest) or not int8)


def ensure_artifacts(checkpoint: Path, folder: Path, int8: bool = True, progress: Progress = print) -> dict:
    """Export unless a current export is there; returns what was done and how long it took."""
    from s3gen_export.model.checkpoint import file_sha256

    folder = Path(folder)
    sha = file_sha256(checkpoint)
    if export_is_current(folder, sha, int8):
        progress(f"artifacts in {folder} match the checkpoint (sha256 {sha[:12]}...), reusing them")
        return {"folder": str(folder), "exported": False, "seconds": 0.0, "checkpoint_sha256": sha}
    from s3gen_export.exporter import export_checkpoint

    progress(f"exporting {checkpoint} to {folder} (fp32{' + int8' if int8 else ''}; a few minutes on 2 cores)")
    start = time.perf_counter()
    export_checkpoint(checkpoint, folder, force=True, int8=int8, progress=lambda m: progress("    " + m))
    return {"folder": str(folder), "exported": True, "seconds": time.perf_counter() - start, "checkpoint_sha256": sha}

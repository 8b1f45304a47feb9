"""The artifact folder on disk: file hashes, the atomic manifest write, the checked load."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import ArtifactError
from .document import MANIFEST_NAME, Manifest


def sha256_file(path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (engines and graphs can be GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_size)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def tampered(where: str, rel: str, actual: str, expected: str) -> ArtifactError:
    return ArtifactError(f"{where}: file {rel} is tampered or corrupt: sha256 {actual[:12]}... "
                         f"but the manifest expects {expected[:12]}...; re-export the artifacts")


def read_verified_file(folder, where: str, rel: str, expected: str) -> bytes:
    """The file's bytes, hashed in memory: the bytes checked are the bytes used (no second read)."""
    p = Path(folder) / rel
    if not p.is_file():
        raise ArtifactError(f"{where}: file {rel} is missing from {folder}")
    data = p.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise tampered(where, rel, actual, expected)
    return data


def verify_file(folder, where: str, rel: str, expected: str) -> Path:
    """The file's path, once it exists and has the recorded sha256 (read in chunks: nothing stays resident)."""
    p = Path(folder) / rel
    if not p.is_file():
        raise ArtifactError(f"{where}: file {rel} is missing from {folder}")
    actual = sha256_file(p)
    if actual != expected:
        raise tampered(where, rel, actual, expected)
    return p


def verify_files(folder, manifest: Manifest) -> None:
    """Every component and engine file exists and has its recorded sha256."""
    for where, rel, expected in manifest.files():
        verify_file(folder, where, rel, expected)


def write_manifest(folder, manifest: Manifest) -> Path:
    """Write folder/manifest.json atomically (a reader never sees half a file).

    The text is parsed back with the strict reader first, so the export side can
    never write a manifest that the runtime would refuse.
    """
    folder = Path(folder)
    manifest.check_validated()
    text = manifest.dumps()
    Manifest.loads(text)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / MANIFEST_NAME
    tmp = folder / (MANIFEST_NAME + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target


def load_manifest(folder, verify: bool = True) -> Manifest:
    """Read and check folder/manifest.json; with verify, check every file's sha256 too."""
    p = Path(folder) / MANIFEST_NAME
    if not p.is_file():
        raise ArtifactError(f"no {MANIFEST_NAME} in {folder}: not an s3gen-aot artifact folder")
    manifest = Manifest.loads(p.read_text(encoding="utf-8"))
    manifest.audio.check_runtime()
    manifest.check_validated()
    if verify:
        verify_files(folder, manifest)
    return manifest

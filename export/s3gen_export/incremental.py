"""Incremental, all-or-nothing export into an artifact folder.

Each graph gets a key: sha256 over everything the export of that graph reads (the tensors of the module it
exports, its spec hash, its precision, the exporter's source code and the library versions). A re-export
reuses a graph of the folder whose recorded key is the same (the file is linked, not rewritten).

The export writes into a staging folder beside the target and swaps the two in one rename when everything
has validated, so a run killed at any point leaves the target as it was: a folder the runtime accepted
stays one, and an empty or new target never holds a manifest.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
from pathlib import Path

import torch

from s3gen_runtime import __version__ as runtime_version
from s3gen_runtime.errors import S3GenError
from s3gen_runtime.manifest import MANIFEST_NAME, Manifest, load_manifest

PACKAGE = Path(__file__).resolve().parent
STAGING_PREFIX = ".staging-"
RENAME_EXCHANGE = 2   # renameat2 flag: swap two paths atomically (Linux)


def library_versions() -> dict:
    import onnx
    import onnxruntime
    import onnxscript
    return {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__}


def exporter_source_hash() -> str:
    """sha256 of the export package's code (the benchmarks aside) and the runtime constants it bakes in:
    any edit to a model, transform or exporter makes every graph new."""
    h = hashlib.sha256()
    files = sorted(p for p in PACKAGE.rglob("*.py") if "bench" not in p.relative_to(PACKAGE).parts)
    files.append(PACKAGE.parent.parent / "runtime" / "s3gen_runtime" / "constants.py")
    for path in files:
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def weights_hash(module) -> str:
    """sha256 of a module's tensors (names, dtypes, shapes, bytes), parameters and buffers alike."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict(keep_vars=False).items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def graph_key(weights: str, spec_hash: str, precision: str, context: str) -> str:
    """The key of one graph file: equal keys mean the export would write the same graph."""
    return hashlib.sha256(f"{weights}|{spec_hash}|{precision}|{context}".encode()).hexdigest()


def export_context() -> str:
    """What every graph of an export shares: the tool, its code and the libraries that trace and check it."""
    versions = sorted(library_versions().items())
    return f"{runtime_version}|{exporter_source_hash()}|{versions}"


def previous_manifest(out: Path) -> Manifest | None:
    """The folder's manifest when it is complete and untampered (every file's sha256 checked), else None."""
    if not (Path(out) / MANIFEST_NAME).is_file():
        return None
    try:
        return load_manifest(out, verify=True)
    except S3GenError:
        return None


def reusable(previous: Manifest | None, name: str, key: str) -> bool:
    return (previous is not None and previous.export is not None and name in previous.components
            and name in previous.export.graphs and previous.export.graphs[name].key == key)


def staging_folder(out: Path) -> Path:
    """A fresh staging folder beside `out` (same file system, so the final swap is a rename); staging folders
    of runs that were killed are removed first."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}{STAGING_PREFIX}*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    staging = out.parent / f".{out.name}{STAGING_PREFIX}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False   # an earlier run of this very process that failed: its leftovers are stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def link_into(src: Path, dst: Path) -> None:
    """`src` at `dst` without copying its bytes (a hard link; a copy where links are not possible)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def owned_files(out: Path) -> set[str]:
    """The files an earlier export of `out` wrote (graphs and self-test probes, as its manifest records them)."""
    try:
        manifest = load_manifest(out, verify=False)
    except S3GenError:
        return set()
    return {c.file for c in manifest.components.values()} | {
        c.selftest.file for c in manifest.components.values() if c.selftest is not None}


def carry_over(out: Path, staging: Path) -> list[str]:
    """Link into `staging` what the old folder holds that no export wrote (engines, the user's files), so
    that the swap loses only what the export replaces. Returns what was carried."""
    out = Path(out)
    if not out.is_dir():
        return []
    skip = owned_files(out) | {MANIFEST_NAME}
    carried = []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if path.is_file() and not path.is_symlink() and rel.as_posix() not in skip and not (staging / rel).exists():
            link_into(path, staging / rel)
            carried.append(rel.as_posix())
    return carried


def swap_in(staging: Path, out: Path) -> None:
    """Make `staging` the folder at `out` in one step, then delete what was there."""
    out = Path(out)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(staging, out)
        return
    if _exchange(staging, out):
        shutil.rmtree(staging)
        return
    # No atomic exchange here (not Linux, or a file system without it): the old folder moves aside first;
    # a run killed between the two renames leaves it at `.{name}.previous`, next to no folder at `out`.
    aside = out.parent / f".{out.name}.previous"
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(out, aside)
    os.replace(staging, out)
    shutil.rmtree(aside)


def _exchange(a: Path, b: Path) -> bool:
    if platform.system() != "Linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE) == 0

"""Which engine serves a call: bucket sizing from input shapes, engine choice, profile limits (pure)."""

from __future__ import annotations

import numpy as np

from ...buckets import pick_bucket
from ...constants import SAMPLES_PER_FRAME, TOKEN_MEL_RATIO
from ...errors import ArtifactError, InputError
from ...manifest import Component, Engine, Manifest
from .compat import format_compute_capability, parse_compute_capability

ENGINE_PRECISIONS = ("fp32", "fp16", "bf16")


def axis_sizes(component: Component, shapes: dict) -> dict[str, int]:
    """Named axis -> size, read from input shapes (`shapes`: input name -> shape tuple)."""
    axes: dict[str, int] = {}
    for spec in component.inputs:
        shape = shapes[spec.name]
        for dim, size in zip(spec.shape, shape):
            if isinstance(dim, str):
                axes.setdefault(dim, int(size))
    return axes


def bucket_frames(axes: dict) -> int:
    """The mel frames a call needs, the measure buckets are sized in.

    estimator: `frames`; vocoder: `mel_frames`; encoder: 2 * (prompt_tokens + tokens) (the two
    are padded separately and their sum must fit the bucket).
    """
    if "frames" in axes:
        return int(axes["frames"])
    if "mel_frames" in axes:
        return int(axes["mel_frames"])
    if "samples" in axes:
        return -(-int(axes["samples"]) // SAMPLES_PER_FRAME)
    if "tokens" in axes or "prompt_tokens" in axes:
        return TOKEN_MEL_RATIO * (int(axes.get("tokens", 0)) + int(axes.get("prompt_tokens", 0)))
    raise InputError(f"cannot tell the bucket of a call with axes {sorted(axes)}")


def frames_range(engine: Engine) -> tuple[int, int] | None:
    """(lowest, highest) bucket frames the engine's profile covers, as recorded at build time."""
    r = engine.build_options.get("frames_range")
    if isinstance(r, list) and len(r) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in r):
        return int(r[0]), int(r[1])
    return None


def check_precision(precision) -> str:
    if precision not in ENGINE_PRECISIONS:
        raise InputError(f"engine precision must be one of {', '.join(ENGINE_PRECISIONS)}, got {precision!r}")
    return precision


def engines_for(manifest: Manifest, graph: str, precision: str, compute_capability=None) -> list[Engine]:
    """The engines of one graph and precision (for one GPU architecture if given), smallest bucket first."""
    check_precision(precision)
    sizes = {b.name: b.mel_frames for b in manifest.buckets}
    found = [e for e in manifest.engines if e.graph == graph and e.precision == precision]
    if compute_capability is not None:
        want = parse_compute_capability(compute_capability)
        found = [e for e in found if parse_compute_capability(e.compute_capability) == want]
    return sorted(found, key=lambda e: sizes[e.bucket])


def select_engine(manifest: Manifest, graph: str, frames: int, batch: int, precision: str, *,
                  compute_capability=None, folder=None) -> Engine:
    """The engine record of the smallest bucket that holds `frames` mel frames at `batch` rows.

    Too long for every engine: BucketError naming both lengths. A batch outside the engine's
    [min_batch, max_batch]: InputError naming the limits. No engine at all: ArtifactError with
    the command that builds them.
    """
    for value, what in ((frames, "frames"), (batch, "batch")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{what} must be a positive integer, got {value!r}")
    frames, batch = int(frames), int(batch)
    candidates = engines_for(manifest, graph, precision, compute_capability)
    if not candidates:
        have = sorted({f"{e.graph}/{e.precision}/sm{e.compute_capability}" for e in manifest.engines}) or ["none"]
        cc = "" if compute_capability is None else f" for compute capability {format_compute_capability(compute_capability)}"
        raise ArtifactError(f"no {precision} TensorRT engine for {graph!r}{cc} in these artifacts (engines: "
                            f"{', '.join(have)}); build them: s3gen-aot build-engines "
                            f"{folder if folder is not None else 'DIR'} --precision {precision}")
    buckets = [b for b in manifest.buckets if b.name in {e.bucket for e in candidates}]
    bucket = pick_bucket(buckets, frames)   # BucketError past the largest engine's bucket
    chosen = [e for e in candidates if e.bucket == bucket.name]
    engine = chosen[0]
    covered = frames_range(engine)
    if covered is not None and not covered[0] <= frames <= covered[1]:
        raise ArtifactError(
            f"no {graph} engine covers {frames} mel frames: the {bucket.name} engine's profile takes "
            f"{covered[0]}..{covered[1]} (a bucket below it was not built); rebuild with every bucket: "
            f"s3gen-aot build-engines {folder if folder is not None else 'DIR'} --precision {precision}")
    if not engine.min_batch <= batch <= engine.max_batch:
        raise InputError(f"batch of {batch} is outside the {graph} {bucket.name} engine's batch range "
                         f"{engine.min_batch}..{engine.max_batch}; split the batch or rebuild with --max-batch {batch}")
    return engine


def check_profile_shapes(where: str, component: Component, profile: dict, shapes: dict) -> None:
    """Every input dim inside [min, max] of the profile; the error names the axis and the limits."""
    for spec in component.inputs:
        if spec.name not in profile:
            continue
        lo, _, hi = profile[spec.name]
        shape = tuple(shapes[spec.name])
        if len(shape) != len(lo):
            raise InputError(f"{where}: input {spec.name!r} has rank {len(shape)}, the engine takes rank {len(lo)}")
        for axis, (size, a, b) in enumerate(zip(shape, lo, hi)):
            if not a <= size <= b:
                dim = spec.shape[axis] if axis < len(spec.shape) else axis
                label = f"axis {dim!r}" if isinstance(dim, str) else f"axis {axis}"
                raise InputError(f"{where}: input {spec.name!r} {label} is {size} but this engine takes "
                                 f"{a}..{b} (profile {lo}..{hi}); pick the bucket that fits, split the batch, "
                                 "or rebuild the engines with the limits you need")


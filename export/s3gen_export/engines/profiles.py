"""Engine planning (pure): optimization profiles, validation shapes, bucket choice and file names.

`plan_profiles` gives every dynamic axis a range inside one bucket only (min just above the
previous bucket, opt = max = the bucket), so each engine's profile stays tight;
`engine_file_name` names the file after graph, bucket, precision and GPU architecture.
"""
from __future__ import annotations

import re

import numpy as np

from s3gen_runtime.backends.tensorrt.compat import sm_tag
from s3gen_runtime.backends.tensorrt.selection import ENGINE_PRECISIONS
from s3gen_runtime.buckets import Bucket
from s3gen_runtime.constants import SAMPLES_PER_FRAME, TOKEN_MEL_RATIO
from s3gen_runtime.errors import InputError
from s3gen_runtime.manifest import VOICE_COMPONENTS, Manifest


def check_precision(precision) -> str:
    if precision not in ENGINE_PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(ENGINE_PRECISIONS)}, got {precision!r}")
    return precision


def check_batches(min_batch, opt_batch, max_batch) -> tuple[int, int, int]:
    """Positive integers with min <= opt <= max, or an InputError saying which rule broke."""
    values = []
    for name, v in (("min_batch", min_batch), ("opt_batch", opt_batch), ("max_batch", max_batch)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
        values.append(int(v))
    lo, opt, hi = values
    if not lo <= opt <= hi:
        raise InputError(f"batch sizes must satisfy min_batch <= opt_batch <= max_batch, got "
                         f"{lo} <= {opt} <= {hi}")
    return lo, opt, hi


def _check_buckets(bucket, prev_bucket) -> None:
    if not isinstance(bucket, Bucket):
        raise InputError(f"bucket must be a s3gen_runtime.buckets.Bucket, got {type(bucket).__name__}")
    if prev_bucket is not None:
        if not isinstance(prev_bucket, Bucket):
            raise InputError(f"prev_bucket must be a Bucket or None, got {type(prev_bucket).__name__}")
        if prev_bucket.mel_frames >= bucket.mel_frames:
            raise InputError(f"the previous bucket {prev_bucket.name} ({prev_bucket.mel_frames} frames) must be "
                             f"smaller than {bucket.name} ({bucket.mel_frames} frames)")


def _split_tokens(total: int) -> tuple[int, int]:
    """(prompt, new) tokens adding up to `total` (each >= 1): a typical prompt takes a quarter."""
    total = max(int(total), 2)
    prompt = max(1, total // 4)
    return prompt, total - prompt


def axis_ranges(bucket: Bucket, prev_bucket: Bucket | None, min_batch: int = 1, opt_batch: int = 1,
                max_batch: int = 4) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) of every named axis for one bucket.

    frames / mel_frames: just above the previous bucket .. the bucket (so the buckets' engines tile
    the lengths without overlap); samples = 480 x mel_frames; tokens and prompt_tokens: each
    1 .. the bucket's token capacity (they are padded separately and only their sum is bounded:
    the full capacity for both, opt half of it each); prompt_frames = 2 x prompt_tokens (an odd prompt's
    2P + 1 frames fit too: every row has a new token, so P < capacity and 2P + 1 < 2 x capacity).
    """
    _check_buckets(bucket, prev_bucket)
    b = check_batches(min_batch, opt_batch, max_batch)
    top = bucket.mel_frames
    low = prev_bucket.mel_frames + 1 if prev_bucket is not None else 1
    frames = (low, top, top)
    cap = bucket.tokens
    tokens = (1, max(1, cap // 2), cap)
    return {
        "batch": b,
        "frames": frames,
        "mel_frames": frames,
        "samples": tuple(SAMPLES_PER_FRAME * v for v in frames),
        "tokens": tokens,
        "prompt_tokens": tokens,
        "prompt_frames": tuple(TOKEN_MEL_RATIO * v for v in tokens),
    }


def plan_profiles(component, bucket: Bucket, prev_bucket: Bucket | None, min_batch: int = 1, opt_batch: int = 1,
                  max_batch: int = 4) -> dict[str, tuple[tuple, tuple, tuple]]:
    """input name -> (min_shape, opt_shape, max_shape) for one engine's optimization profile.

    `component` is an export ComponentSpec or the manifest's Component (both have `.inputs` with
    `.name` and `.shape`, strings naming the dynamic axes). Fixed sizes stay fixed.
    """
    ranges = axis_ranges(bucket, prev_bucket, min_batch, opt_batch, max_batch)
    out = {}
    for spec in component.inputs:
        dims = ([], [], [])
        for axis in spec.shape:
            if isinstance(axis, str):
                if axis not in ranges:
                    raise InputError(f"input {spec.name!r}: no profile rule for axis {axis!r} "
                                     f"(known: {', '.join(sorted(ranges))})")
                triple = ranges[axis]
            else:
                triple = (int(axis),) * 3
            for k in range(3):
                dims[k].append(int(triple[k]))
        out[spec.name] = tuple(tuple(d) for d in dims)
    return out


def profile_to_json(profiles: dict) -> dict:
    return {name: {"min": list(lo), "opt": list(opt), "max": list(hi)} for name, (lo, opt, hi) in profiles.items()}


def validation_shapes(component, bucket: Bucket, prev_bucket: Bucket | None, min_batch: int = 1, opt_batch: int = 1,
                      max_batch: int = 4) -> dict[str, dict[str, tuple]]:
    """case ('min', 'opt', 'max') -> input name -> shape: real requests at the bucket's edges.

    Unlike the profile's corners, each case is a shape a request can have: the encoder's prompt
    and new tokens add up to the bucket's capacity (its positional table is bounded), and derived
    axes keep their ratios.
    """
    ranges = axis_ranges(bucket, prev_bucket, min_batch, opt_batch, max_batch)
    cases = {}
    for k, case in enumerate(("min", "opt", "max")):
        frames = ranges["frames"][k]
        prompt, new = _split_tokens(-(-frames // TOKEN_MEL_RATIO))
        axes = {"batch": ranges["batch"][k], "frames": frames, "mel_frames": frames,
                "samples": SAMPLES_PER_FRAME * frames, "tokens": new, "prompt_tokens": prompt,
                "prompt_frames": TOKEN_MEL_RATIO * prompt}
        shapes = {}
        for spec in component.inputs:
            shape = []
            for axis in spec.shape:
                if isinstance(axis, str) and axis not in axes:
                    raise InputError(f"input {spec.name!r}: no validation rule for axis {axis!r}")
                shape.append(axes[axis] if isinstance(axis, str) else int(axis))
            shapes[spec.name] = tuple(shape)
        cases[case] = shapes
    return cases


_NAME_OK = re.compile(r"[A-Za-z0-9_\-]+")


def engine_file_name(graph: str, bucket, precision: str, sm) -> str:
    """'estimator_cfg.mel1024.fp16.sm90.engine': graph, bucket, precision and GPU architecture."""
    bucket_name = bucket.name if isinstance(bucket, Bucket) else bucket
    for what, value in (("graph", graph), ("bucket", bucket_name)):
        if not isinstance(value, str) or not _NAME_OK.fullmatch(value):
            raise InputError(f"{what} name must be letters, digits, '_' or '-', got {value!r}")
    check_precision(precision)
    return f"{graph}.{bucket_name}.{precision}.{sm_tag(sm)}.engine"


def profiles_frames_low(bucket: Bucket, prev: Bucket | None) -> int:
    return prev.mel_frames + 1 if prev is not None else 1


# ---------------------------------------------------------------- what to build

def resolve_buckets(manifest: Manifest, buckets=None) -> list[tuple[Bucket, Bucket | None]]:
    """(bucket, previous chosen bucket) pairs, smallest first. `buckets`: None (all of the manifest's),
    or names ('mel1024') / sizes (1024) from the manifest's table. Profiles tile the chosen ones."""
    table = list(manifest.buckets)
    if buckets is None:
        chosen = table
    else:
        if isinstance(buckets, (str, int)):
            buckets = [buckets]
        chosen = []
        for b in buckets:
            match = [x for x in table if (isinstance(b, Bucket) and x == b) or x.name == b or
                     (isinstance(b, str) and b.isdigit() and x.mel_frames == int(b)) or
                     (isinstance(b, (int, np.integer)) and not isinstance(b, bool) and x.mel_frames == b)]
            if not match:
                raise InputError(f"bucket {b!r} is not in these artifacts' table: "
                                 f"{', '.join(f'{x.name} ({x.mel_frames})' for x in table)}")
            if match[0] not in chosen:
                chosen.append(match[0])
        if not chosen:
            raise InputError("no buckets chosen")
        chosen.sort(key=lambda x: x.mel_frames)
    return [(b, chosen[i - 1] if i else None) for i, b in enumerate(chosen)]


def buildable_graphs(manifest: Manifest, graphs=None) -> list[str]:
    """The fp32 ONNX components (int8 graphs are for ONNX Runtime on CPU: TensorRT gets fp32), except the
    voice graphs: they run once per voice, on ONNX Runtime, and have no bucket profile rules."""
    names = [n for n, c in manifest.components.items()
             if c.format == "onnx" and c.precision == "fp32" and n not in VOICE_COMPONENTS]
    if graphs is None:
        return names
    graphs = [graphs] if isinstance(graphs, str) else list(graphs)
    unknown = [g for g in graphs if g not in names]
    if unknown:
        raise InputError(f"cannot build engines for {unknown}: buildable graphs are {names}")
    return [n for n in names if n in graphs]

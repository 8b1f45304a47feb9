"""Length buckets: a few fixed mel lengths that requests are padded up to.

Engines get one tight shape profile per bucket instead of one wide profile
(a 4..3000 profile wastes memory), and batched requests share a length. A bucket
counts mel frames of prompt and new tokens together: T = 2 (P + N).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import MAX_MEL_FRAMES, MEL_RATE, TOKEN_MEL_RATIO
from .errors import BucketError, InputError

# Powers of two up to the largest one below the encoder's 5000-frame positional table.
DEFAULT_BUCKETS = (256, 512, 1024, 2048, 4096)


def _frames_ok(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{what} must be an integer number of mel frames, got {value!r}")
    value = int(value)
    if value <= 0 or value % TOKEN_MEL_RATIO:
        raise InputError(f"{what} must be a positive multiple of {TOKEN_MEL_RATIO} mel frames, got {value}")
    if value > MAX_MEL_FRAMES:
        raise InputError(
            f"{what} is {value} mel frames, over the encoder's positional table of {MAX_MEL_FRAMES}"
        )
    return value


def bucket_name(mel_frames: int) -> str:
    """The canonical name of a bucket, used in file names: 'mel1024'."""
    return f"mel{mel_frames}"


@dataclass(frozen=True)
class Bucket:
    """A padded length: `mel_frames` frames, i.e. `tokens` prompt + new tokens."""

    name: str
    mel_frames: int

    def __post_init__(self):
        _frames_ok(self.mel_frames, f"bucket {self.name!r}")
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"bucket name must be a non-empty string, got {self.name!r}")

    @property
    def tokens(self) -> int:
        """Token capacity (prompt + new tokens together)."""
        return self.mel_frames // TOKEN_MEL_RATIO

    @property
    def seconds(self) -> float:
        return self.mel_frames / MEL_RATE


def make_buckets(sizes=DEFAULT_BUCKETS) -> tuple[Bucket, ...]:
    """Buckets for the given mel lengths, smallest first; duplicates and bad sizes are refused."""
    sizes = [_frames_ok(s, "bucket size") for s in sizes]
    if not sizes:
        raise InputError("need at least one bucket size")
    if len(set(sizes)) != len(sizes):
        raise InputError(f"bucket sizes must be unique, got {sizes}")
    return tuple(Bucket(bucket_name(s), s) for s in sorted(sizes))


def pick_bucket(buckets, mel_frames: int) -> Bucket:
    """The smallest bucket holding `mel_frames`; too long for all -> BucketError."""
    if isinstance(mel_frames, bool) or not isinstance(mel_frames, (int, np.integer)) or mel_frames <= 0:
        raise InputError(f"mel_frames must be a positive integer, got {mel_frames!r}")
    ordered = sorted(buckets, key=lambda b: b.mel_frames)
    if not ordered:
        raise InputError("no buckets to choose from")
    for b in ordered:
        if mel_frames <= b.mel_frames:
            return b
    largest = ordered[-1]
    raise BucketError(
        f"request needs {mel_frames} mel frames ({mel_frames / MEL_RATE:.1f} s of prompt + speech at "
        f"{MEL_RATE} frames/s) but the largest bucket {largest.name!r} holds {largest.mel_frames} "
        f"({largest.seconds:.1f} s, {largest.tokens} tokens); shorten the text or the prompt, or split it"
    )


def pad_to(arr, length: int, axis: int, value=0) -> np.ndarray:
    """Right-pad `arr` along `axis` to `length` with `value`; longer input is an error."""
    a = np.asarray(arr)
    ax = axis if axis >= 0 else axis + a.ndim
    if not 0 <= ax < a.ndim:
        raise InputError(f"axis {axis} is out of range for an array of rank {a.ndim}")
    have = a.shape[ax]
    if have > length:
        raise InputError(f"cannot pad axis {axis} of length {have} down to {length}")
    if have == length:
        return a
    widths = [(0, 0)] * a.ndim
    widths[ax] = (0, length - have)
    return np.pad(a, widths, mode="constant", constant_values=value)


def stack_padded(arrays, length: int, axis: int) -> np.ndarray:
    """Right-pad each (1, ...) array with zeros along `axis` to `length` and stack them on axis 0."""
    return np.concatenate([pad_to(a, length, axis) for a in arrays], axis=0)

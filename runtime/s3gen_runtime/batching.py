"""Requests -> validated rows -> one padded batch, and the graphs' feeds for it. Pure: no graph runs here.

Every check (tokens, voice, noise, seed, lengths against the buckets) happens in `make_batch`, so a
bad request costs nothing and leaves nothing half done. Rows are right-padded; the graphs' masks make
padding inert, so a row gets (to float32 reassociation) what it gets alone.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .buckets import Bucket, pick_bucket, stack_padded
from .constants import SAMPLES_PER_FRAME, TOKEN_MEL_RATIO
from .errors import BucketError, InputError
from .io import check_noise_shapes, validate_tokens
from .noise import draw_noise
from .voice import Voice

_F32 = np.float32


@dataclass(frozen=True)
class Request:
    """One utterance: speech tokens (N,) or (1, N), a voice, and a seed or explicit noise."""

    tokens: Any
    voice: Voice
    seed: int | None = None
    noise: dict | None = None


@dataclass(frozen=True)
class Row:
    """One validated request: its tokens, voice, noise and the seed it came from (None: given noise)."""

    tokens: np.ndarray      # (N,) int64
    voice: Voice
    noise: dict             # z (1, 80, 2(P+N)), sine_phase (1, 9, 1), sine_noise (1, 9, 480 (2(P+N) - F)), float32
    seed: int | None

    @property
    def prompt(self) -> int:
        return self.voice.prompt_tokens

    @property
    def new(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def prompt_frames(self) -> int:
        """F: the voice's prompt mel frames, 2P or 2P + 1."""
        return self.voice.prompt_frames

    @property
    def frames(self) -> int:
        """Mel frames the solver generates for this row, prompt included: T = 2 (P + N) whatever F is."""
        return TOKEN_MEL_RATIO * (self.prompt + self.new)

    @property
    def span(self) -> tuple:
        """(first generated frame, end of the row) in the solver's frames: the prompt mel's F frames are
        cut off (upstream cuts at F, so an odd prompt leaves 2N - 1 frames to vocode)."""
        return self.prompt_frames, self.frames

    @property
    def vocoded_frames(self) -> int:
        """T - F: 2N, or 2N - 1 after an odd prompt."""
        return self.frames - self.prompt_frames


@dataclass(frozen=True)
class Layout:
    """Padded sizes of one batch: encoder input widths (prompt tokens, new tokens, prompt mel frames),
    solver frames, vocoder frames."""

    prompt_width: int
    token_width: int
    prompt_feat_width: int
    frames: int
    vocoder_frames: int
    bucket: Bucket = field(compare=False)


@dataclass(frozen=True)
class Batch:
    """Validated rows in request order and their padded layout: what every later stage takes."""

    rows: tuple
    layout: Layout

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def seeds(self) -> tuple:
        return tuple(r.seed for r in self.rows)


# ---------------------------------------------------------------- validation

def check_seed(seed) -> int:
    """A usable seed; None draws a fresh one (returned so the caller can replay it)."""
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0 or None, got {seed!r}")
    return int(seed)


def check_noise(noise, prompt: int, new: int, prompt_frames: int | None = None) -> dict:
    """Explicit noise as float32 arrays of the request's shapes (prompt mel of F frames, default 2P), finite."""
    if not isinstance(noise, dict):
        raise InputError(f"noise must be a dict with z, sine_phase and sine_noise, got {type(noise).__name__}")
    check_noise_shapes(noise, prompt, new, prompt_frames)
    out = {}
    for key in ("z", "sine_phase", "sine_noise"):
        a = np.asarray(noise[key])
        if not np.issubdtype(a.dtype, np.floating):
            raise InputError(f"noise '{key}' must be floating point, got dtype {a.dtype}")
        if not np.all(np.isfinite(a)):
            raise InputError(f"noise '{key}' contains NaN or Inf")
        out[key] = a.astype(_F32)
    return out


def check_voice(voice) -> Voice:
    """Re-validated: a Voice built without Voice.validated may hold anything."""
    if not isinstance(voice, Voice):
        raise InputError(f"voice must be a s3gen_runtime.voice.Voice (load_voice or Voice.validated), "
                         f"got {type(voice).__name__}")
    return Voice.validated(voice.prompt_token, voice.prompt_feat, voice.embedding)


def validate_request(request, buckets) -> Row:
    if not isinstance(request, Request):
        raise InputError(f"expected a Request, got {type(request).__name__}")
    tokens = validate_tokens(request.tokens)
    voice = check_voice(request.voice)
    prompt, new, feat = voice.prompt_tokens, int(tokens.shape[0]), voice.prompt_frames
    # the solver runs on T = 2 (P + N) frames for F = 2P and 2P + 1 alike: that is what a bucket holds
    pick_bucket(buckets, TOKEN_MEL_RATIO * (prompt + new))   # BucketError names the frames and the limit
    if request.noise is not None:
        return Row(tokens, voice, check_noise(request.noise, prompt, new, feat), None)
    seed = check_seed(request.seed)
    return Row(tokens, voice, draw_noise(seed, prompt, new, feat), seed)


def validate_requests(requests, buckets) -> list[Row]:
    """Every request checked; in a batch the message says which one failed."""
    if not isinstance(requests, (list, tuple)) or not requests:
        raise InputError("requests must be a non-empty list of Request")
    rows = []
    for i, request in enumerate(requests):
        try:
            rows.append(validate_request(request, buckets))
        except InputError as e:
            if len(requests) == 1:
                raise
            raise type(e)(f"request {i}: {e}") from e
    return rows


def plan_layout(rows, buckets, pad_to_bucket: bool) -> Layout:
    """Padded sizes. The encoder sees prompt and tokens padded separately, so its length is
    2 (longest prompt + longest tokens); that is what must fit a bucket. The prompt mels are padded to
    the longest F (at most 2 x longest prompt + 1, below the encoder's frames since every row has N >= 1)."""
    prompt_width = max(r.prompt for r in rows)
    token_width = max(r.new for r in rows)
    feat_width = max(r.prompt_frames for r in rows)
    encoder_frames = TOKEN_MEL_RATIO * (prompt_width + token_width)
    try:
        bucket = pick_bucket(buckets, encoder_frames)
    except BucketError as e:
        raise BucketError(f"the batch pads to {encoder_frames} mel frames (longest prompt {prompt_width} + longest "
                          f"tokens {token_width}, times {TOKEN_MEL_RATIO}): {e}; split the batch") from e
    if pad_to_bucket:
        return Layout(prompt_width, bucket.tokens - prompt_width, feat_width, bucket.mel_frames, bucket.mel_frames,
                      bucket)
    # No work on frames no row has: solve over the longest row, vocode the longest new part.
    return Layout(prompt_width, token_width, feat_width, max(r.frames for r in rows),
                  max(r.vocoded_frames for r in rows), bucket)


def make_batch(requests, buckets, pad_to_bucket: bool) -> Batch:
    rows = validate_requests(requests, buckets)
    return Batch(tuple(rows), plan_layout(rows, buckets, pad_to_bucket))


def split_rows(batch: Batch, buckets, pad_to_bucket: bool) -> list[Batch]:
    """Each validated row as a batch of its own (its seed and noise as they are)."""
    return [Batch((row,), plan_layout([row], buckets, pad_to_bucket)) for row in batch.rows]


# ---------------------------------------------------------------- feeds

def encoder_feeds(batch: Batch) -> dict[str, np.ndarray]:
    rows, layout = batch.rows, batch.layout
    return {
        "tokens": stack_padded([r.tokens[None] for r in rows], layout.token_width, 1),
        "token_lengths": np.array([r.new for r in rows], dtype=np.int64),
        "prompt_tokens": stack_padded([r.voice.prompt_token for r in rows], layout.prompt_width, 1),
        "prompt_lengths": np.array([r.prompt for r in rows], dtype=np.int64),
        "prompt_feat": stack_padded([r.voice.prompt_feat for r in rows], layout.prompt_feat_width, 1),
        "prompt_feat_lengths": np.array([r.prompt_frames for r in rows], dtype=np.int64),
        "embedding": np.concatenate([r.voice.embedding for r in rows], axis=0),
    }


def initial_noise(batch: Batch) -> np.ndarray:
    """x0: each row's own z, left-aligned, zeros over its padding."""
    return stack_padded([r.noise["z"] for r in batch.rows], batch.layout.frames, 2)


def check_mels(mels, batch: Batch) -> list:
    """One (80, T - F) float32 mel per row (2N, or 2N - 1 after an odd prompt): what its sine noise was drawn for."""
    if not isinstance(mels, (list, tuple)) or len(mels) != len(batch):
        raise InputError(f"vocode needs one mel per row ({len(batch)}), got "
                         f"{len(mels) if isinstance(mels, (list, tuple)) else type(mels).__name__}")
    out = []
    for i, (mel, row) in enumerate(zip(mels, batch.rows)):
        mel = np.asarray(mel)
        want = (80, row.vocoded_frames)
        if mel.shape != want:
            raise InputError(f"mel {i} has shape {mel.shape}; row {i} ({row.new} new tokens after "
                             f"{row.prompt_frames} prompt frames) needs {want}")
        if not np.issubdtype(mel.dtype, np.floating) or not np.all(np.isfinite(mel)):
            raise InputError(f"mel {i} must be finite floating point values")
        out.append(np.ascontiguousarray(mel, dtype=_F32))
    return out


def vocoder_feeds(mels, batch: Batch, names=("mel", "mel_lengths", "sine_phase", "sine_noise")) -> dict[str, np.ndarray]:
    """The feeds the vocoder graph declares (`names`): HiFT takes the rows' sine-source noise, Vocos
    only the mels and their lengths."""
    rows, frames = batch.rows, batch.layout.vocoder_frames
    makers = {
        "mel": lambda: stack_padded([m[None] for m in mels], frames, 2),
        "mel_lengths": lambda: np.array([m.shape[1] for m in mels], dtype=np.int64),
        "sine_phase": lambda: np.concatenate([r.noise["sine_phase"] for r in rows], axis=0),
        "sine_noise": lambda: stack_padded([r.noise["sine_noise"] for r in rows], SAMPLES_PER_FRAME * frames, 2),
    }
    return {name: makers[name]() for name in names}


__all__ = ["Request", "Row", "Layout", "Batch", "make_batch", "validate_request", "validate_requests", "plan_layout",
           "check_seed", "check_noise", "check_voice", "check_mels", "encoder_feeds", "initial_noise",
           "vocoder_feeds"]

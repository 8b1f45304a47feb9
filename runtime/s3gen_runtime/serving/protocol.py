"""The `s3gen` model's wire contract and the pure steps between it and the runtime (no server here).

One request = one utterance (batch dimension 1 on every tensor, as KServe v2 clients send it):
    speech_tokens INT64 [1, N], prompt_token INT64 [1, P], prompt_feat FP32 [1, F, 80],
    embedding FP32 [1, 192], seed INT64 [1, 1]; optional steps INT64 [1, 1], cfg_rate FP32 [1, 1],
    solver BYTES [1, 1].
    -> wav FP32 [1, S], sample_rate INT64 [1, 1].

Triton checks dtypes, ranks and required inputs against these specs before a request is queued; what
it cannot know (empty tensors, token ids, NaN and magnitudes, lengths against the buckets, solver names)
is checked here, per request, before any graph runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..batching import Request, validate_request
from ..buckets import pick_bucket
from ..constants import MEL_BINS, SAMPLE_RATE, SPEAKER_EMBED_DIM, TOKEN_MEL_RATIO
from ..errors import InputError
from ..io import as_token_ids
from ..voice import Voice

MODEL_NAME = "s3gen"
# prompt_feat is a natural-log mel (real voices lie within about -13..5). Far larger finite values pass
# every shape check but overflow the estimator to Inf (seen at 3e38; 1e8 still gave a finite wav).
MAX_ABS_PROMPT_FEAT = 1e4


@dataclass(frozen=True)
class Spec:
    """One tensor without its batch dimension (-1: any length)."""

    name: str
    dtype: type
    shape: tuple
    optional: bool = False


INPUTS = (
    Spec("speech_tokens", np.int64, (-1,)),
    Spec("prompt_token", np.int64, (-1,)),
    Spec("prompt_feat", np.float32, (-1, MEL_BINS)),
    Spec("embedding", np.float32, (SPEAKER_EMBED_DIM,)),
    Spec("seed", np.int64, (1,)),
    Spec("steps", np.int64, (1,), optional=True),
    Spec("cfg_rate", np.float32, (1,), optional=True),
    Spec("solver", np.bytes_, (1,), optional=True),
)
OUTPUTS = (Spec("wav", np.float32, (-1,)), Spec("sample_rate", np.int64, (1,)))


class ClientError(InputError):
    """A request the server refuses; the message names the input and the problem."""


@dataclass(frozen=True)
class Decoded:
    """One validated request: what the runtime takes, the solver overrides, and its batching key."""

    request: Request
    settings: object      # the runtime's resolved Settings (solver, steps, cfg_rate): part of the batching key
    bucket: str
    prompt: int
    new: int


def _one(inputs: dict, name: str):
    """A scalar input [1, 1] -> its value; None when the optional input is absent."""
    value = inputs.get(name)
    if value is None:
        return None
    a = np.asarray(value)
    if a.size != 1:
        raise ClientError(f"input '{name}' must hold one value (shape [1, 1]), got shape {list(a.shape)}")
    item = a.reshape(-1)[0]
    if not isinstance(item, bytes):
        return item.item()
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError:
        raise ClientError(f"input '{name}' must be UTF-8 text, got bytes {item[:20]!r}") from None


def check_not_empty(inputs: dict) -> None:
    """A tensor with a zero in its shape holds no values: refused by name (Triton lets [1, 0] through)."""
    for name, value in inputs.items():
        shape = list(np.shape(value))
        if 0 in shape:
            raise ClientError(f"input '{name}' has no values (shape {shape}): every input needs at least one value")


def check_prompt_feat_range(feat: np.ndarray) -> None:
    """Finite but huge log-mel values overflow the graphs: refused with the limit and the first offender."""
    over = np.flatnonzero(np.abs(feat.reshape(-1)) > MAX_ABS_PROMPT_FEAT)
    if over.size:
        where = [int(i) for i in np.unravel_index(over[0], feat.shape)]
        raise ClientError(f"input 'prompt_feat' values must lie within +-{MAX_ABS_PROMPT_FEAT:g} (a log-mel); "
                          f"{over.size} value(s) do not, the first {feat.reshape(-1)[over[0]]:g} at {where}")


def _batch_of_one(inputs: dict, name: str) -> np.ndarray:
    """The request's tensor with its batch dimension removed; a batch other than 1 is refused."""
    a = np.asarray(inputs[name])
    if a.ndim < 1 or a.shape[0] != 1:
        raise ClientError(f"input '{name}' must have batch dimension 1 (one utterance per request), "
                          f"got shape {list(a.shape)}")
    return a[0]


def decode(inputs: dict, buckets, resolve) -> Decoded:
    """A request's named arrays -> a validated runtime Request; ClientError names the bad input.
    resolve(solver, steps, cfg_rate) -> Settings is the runtime's (S3GenRuntime.resolve).

    The runtime's own checks run here (token ids, voice shapes, NaN/Inf, bucket lengths), so a request
    that passes cannot fail later for its input."""
    missing = [s.name for s in INPUTS if not s.optional and s.name not in inputs]
    if missing:
        raise ClientError(f"missing input(s): {', '.join(missing)}")
    check_not_empty(inputs)
    try:
        tokens = as_token_ids(_batch_of_one(inputs, "speech_tokens"), "speech_tokens")   # named as on the wire
        voice = Voice.validated(*(_batch_of_one(inputs, k)[None] for k in ("prompt_token", "prompt_feat", "embedding")))
        check_prompt_feat_range(voice.prompt_feat)
        seed = _one(inputs, "seed")
        request = Request(tokens, voice, seed=seed)
        row = validate_request(request, buckets)   # tokens, seed, and the length against the largest bucket
        settings = resolve(_one(inputs, "solver"), _one(inputs, "steps"), _one(inputs, "cfg_rate"))
    except ClientError:
        raise
    except InputError as e:
        raise ClientError(str(e)) from None
    bucket = pick_bucket(buckets, TOKEN_MEL_RATIO * (row.prompt + row.new)).name
    return Decoded(Request(row.tokens, voice, seed=row.seed), settings, bucket, row.prompt, row.new)


def plan_groups(decoded, buckets) -> list[list[int]]:
    """Indices of the requests that run as one runtime batch: same bucket, same solver settings, and
    a padded length (prompts and tokens are padded separately) that still fits that bucket.

    Requests of different buckets never share a batch: a short request would pay a long one's frames."""
    frames = {b.name: b.mel_frames for b in buckets}
    groups: list[dict] = []
    for i, d in enumerate(decoded):
        key = (d.bucket, d.settings)
        for g in groups:
            fits = TOKEN_MEL_RATIO * (max(g["prompt"], d.prompt) + max(g["new"], d.new)) <= frames[d.bucket]
            if g["key"] == key and fits:
                g["members"].append(i)
                g["prompt"], g["new"] = max(g["prompt"], d.prompt), max(g["new"], d.new)
                break
        else:
            groups.append({"key": key, "members": [i], "prompt": d.prompt, "new": d.new})
    return [g["members"] for g in groups]


def encode_result(wav: np.ndarray) -> dict:
    """One response: wav [1, S] float32 and the sample rate [1, 1]."""
    return {"wav": np.ascontiguousarray(wav, dtype=np.float32)[None],
            "sample_rate": np.array([[SAMPLE_RATE]], dtype=np.int64)}


def request_arrays(tokens, voice: Voice, seed: int, steps=None, cfg_rate=None, solver=None) -> dict:
    """The client side of the contract: one utterance as the named arrays the server takes (copies: a
    caller may change them without touching its tokens or voice)."""
    arrays = {
        "speech_tokens": np.array(tokens, dtype=np.int64).reshape(1, -1),
        "prompt_token": voice.prompt_token.astype(np.int64).reshape(1, -1),
        "prompt_feat": voice.prompt_feat.astype(np.float32).reshape(1, -1, MEL_BINS),
        "embedding": voice.embedding.astype(np.float32).reshape(1, SPEAKER_EMBED_DIM),
        "seed": np.array([[seed]], dtype=np.int64),
    }
    if steps is not None:
        arrays["steps"] = np.array([[steps]], dtype=np.int64)
    if cfg_rate is not None:
        arrays["cfg_rate"] = np.array([[cfg_rate]], dtype=np.float32)
    if solver is not None:
        arrays["solver"] = np.array([[solver.encode()]], dtype=np.object_)
    return arrays

"""The decoupled `s3gen_stream` model: one request -> one response per stream chunk (no server import here).

Wire contract: the inputs of `s3gen` (protocol.INPUTS) plus optional first_chunk_tokens and chunk_tokens
INT64 [1, 1]; each response holds wav FP32 [1, S_chunk], start_sample INT64 [1, 1] (the chunk's first
sample in the utterance) and final BOOL [1, 1]. Decoupled models answer over gRPC streaming only.

The request is checked as an `s3gen` request is (protocol.decode), and the chunk schedule by
S3GenRuntime.stream before its first graph runs, so a bad request fails before any audio is sent.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError
from .model import requests_as_dicts
from .protocol import INPUTS, ClientError, Spec, _one, decode

LOG = logging.getLogger("s3gen_runtime.serving")

STREAM_MODEL_NAME = "s3gen_stream"
STREAM_INPUTS = INPUTS + (
    Spec("first_chunk_tokens", np.int64, (1,), optional=True),
    Spec("chunk_tokens", np.int64, (1,), optional=True),
)
STREAM_OUTPUTS = (
    Spec("wav", np.float32, (-1,)),
    Spec("start_sample", np.int64, (1,)),
    Spec("final", np.bool_, (1,)),
)


def encode_chunk(chunk) -> dict:
    """One StreamChunk -> one response (batch dimension 1 on every output)."""
    return {"wav": np.ascontiguousarray(chunk.wav, dtype=np.float32).reshape(1, -1),
            "start_sample": np.array([[chunk.start_sample]], dtype=np.int64),
            "final": np.array([[chunk.final]], dtype=np.bool_)}


def open_stream(runtime, inputs: dict):
    """A request's arrays -> the runtime's chunk generator, every input and option already checked
    (S3GenRuntime.stream checks its options when called, before any graph runs)."""
    decoded = decode(inputs, runtime.buckets, runtime.resolve)
    # the raw overrides, not decoded.settings: stream() resolves them itself, as synth does
    options = {name: _one(inputs, name) for name in ("solver", "steps", "cfg_rate", "first_chunk_tokens",
                                                      "chunk_tokens")}
    request = decoded.request
    try:
        return runtime.stream(request.tokens, request.voice, seed=request.seed, **options)
    except ClientError:
        raise
    except InputError as e:
        raise ClientError(str(e)) from None


class S3GenStreamModel:
    """PyTriton's callable for the decoupled model: a generator, so each yield is sent as it is made.

    It shares the `s3gen` model's runtime (stateless; a stream's state lives in its generator)."""

    def __init__(self, runtime):
        self.runtime = runtime

    def __call__(self, requests):
        # The model is bound with max_batch_size 1 and no dynamic batcher, so Triton hands over one
        # request per call; every yield must answer all requests of the call, which a stream cannot.
        inputs = requests_as_dicts(requests)
        if len(inputs) != 1:
            raise ClientError(f"{STREAM_MODEL_NAME} takes one request per call, got {len(inputs)}")
        chunks = open_stream(self.runtime, inputs[0])
        count = 0
        for chunk in chunks:
            count += 1
            yield [encode_chunk(chunk)]
        LOG.info("streamed %d chunk(s)", count)

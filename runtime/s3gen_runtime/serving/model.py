"""The `s3gen` model's inference callable: a batch of Triton requests -> one wav each. No server import here.

Triton's dynamic batcher hands over the requests it gathered (ragged: each keeps its own lengths); they
are decoded and checked one by one, split into runtime batches by bucket and solver setting
(protocol.plan_groups), and each group runs as one padded `synthesize_batch` (the runtime makes the
padding inert, so a row's wav is its single-request wav to float32 reassociation).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..batching import Request
from ..voice import Voice
from .protocol import ClientError, decode, encode_result, plan_groups

LOG = logging.getLogger("s3gen_runtime.serving")


def requests_as_dicts(requests) -> list[dict]:
    """PyTriton's Request objects (or plain dicts, as in tests) -> {input name: array}."""
    return [dict(getattr(r, "data", r)) for r in requests]


def check_all(inputs, runtime) -> list:
    """Decode every request first, so a bad one fails before any graph runs. PyTriton answers a batch
    with one error or one result per request, so the message names which request of the batch failed."""
    decoded, problems = [], []
    for i, one in enumerate(inputs):
        try:
            decoded.append(decode(one, runtime.buckets, runtime.resolve))
        except ClientError as e:
            problems.append(str(e) if len(inputs) == 1 else f"request {i + 1} of a batch of {len(inputs)}: {e}")
    if problems:
        raise ClientError("; ".join(problems))
    return decoded


class S3GenModel:
    """Binds one S3GenRuntime (it holds no per-call state, so every instance shares it) to Triton."""

    def __init__(self, runtime):
        self.runtime = runtime

    def __call__(self, requests) -> list[dict]:
        """PyTriton's callable: one result per request, or one error for the batch."""
        return self._synthesize(check_all(requests_as_dicts(requests), self.runtime))

    def run_each(self, inputs: list[dict]) -> list:
        """For backends that answer requests separately (the Python backend): each request's result, or
        the ClientError that refused it; the good ones are synthesised together as usual."""
        outcomes: list = []
        for one in inputs:
            try:
                outcomes.append(decode(one, self.runtime.buckets, self.runtime.resolve))
            except ClientError as e:
                outcomes.append(e)
        good = [i for i, o in enumerate(outcomes) if not isinstance(o, ClientError)]
        for i, result in zip(good, self._synthesize([outcomes[i] for i in good]) if good else []):
            outcomes[i] = result
        return outcomes

    def _synthesize(self, decoded: list) -> list[dict]:
        results: list = [None] * len(decoded)
        groups = plan_groups(decoded, self.runtime.buckets)
        for members in groups:
            settings = decoded[members[0]].settings
            out = self.runtime.synthesize_batch([decoded[i].request for i in members], solver=settings.solver,
                                                steps=settings.steps, cfg_rate=settings.cfg_rate)
            for i, result in zip(members, out):
                results[i] = encode_result(result.wav)
        LOG.info("served %d request(s) in %d runtime batch(es)", len(decoded), len(groups))
        return results

    def warm_up(self, prompt_tokens: int = 10, new_tokens: int = 10) -> float:
        """One synthesis of the smallest shapes before the server says it is ready, so the first client does
        not pay ONNX Runtime's first-run costs. Returns the seconds it took."""
        voice = Voice.validated(np.zeros((1, prompt_tokens), np.int64),
                                np.zeros((1, 2 * prompt_tokens, 80), np.float32),
                                np.zeros((1, 192), np.float32))
        start = time.perf_counter()
        self.runtime.synthesize_batch([Request(np.zeros(new_tokens, np.int64), voice, seed=0)])
        return time.perf_counter() - start

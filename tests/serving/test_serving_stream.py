"""The decoupled `s3gen_stream` model on a real server (conftest starts it on loopback): its chunks over gRPC
are the runtime's own stream, a bad request is refused by name, and the server goes on serving."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from s3gen_runtime.constants import SPEECH_VOCAB_SIZE
from s3gen_runtime.serving.options import ServeOptions
from s3gen_runtime.serving.client import get_json, stream, stream_arrays
from s3gen_runtime.serving.protocol import request_arrays

from server_helpers import STEPS

TOL = 2e-3
SCHEDULE = {"first_chunk_tokens": 10, "chunk_tokens": 5}   # 35 tokens -> chunks at 10, 15, 35


def grpc_url(server) -> str:
    return f"127.0.0.1:{server.grpc}"


@pytest.fixture(scope="module")
def direct_stream(direct_runtime, utterance):
    """chunks_for(seed): (wav, start_sample, final) of each chunk of runtime.stream, called directly."""
    tokens, voice = utterance

    def chunks_for(seed: int) -> list:
        return [(c.wav, c.start_sample, c.final)
                for c in direct_runtime.stream(tokens, voice, seed=seed, steps=STEPS, **SCHEDULE)]

    return chunks_for


def assert_same_stream(got: list, expected: list) -> None:
    assert len(got) == len(expected) > 1
    assert [c.start_sample for c in got] == [start for _, start, _ in expected]
    assert [c.final for c in got] == [False] * (len(got) - 1) + [True]
    # the chunks tile the utterance: each starts where the one before ended
    assert all(a.start_sample + len(a.wav) == b.start_sample for a, b in zip(got, got[1:]))
    wav = np.concatenate([c.wav for c in got])
    reference = np.concatenate([w for w, _, _ in expected])
    assert wav.shape == reference.shape
    assert np.max(np.abs(wav - reference)) < TOL


def test_chunks_over_grpc_are_the_runtime_stream(server, utterance, direct_stream):
    tokens, voice = utterance
    got = list(stream(grpc_url(server), tokens, voice, seed=3, steps=STEPS, **SCHEDULE))
    assert_same_stream(got, direct_stream(3))


def test_two_streams_run_side_by_side_on_two_instances(server, utterance, direct_stream):
    """A stream holds its model instance until its last chunk; with two instances (conftest) two streams
    overlap in time, and each is still its own runtime stream."""
    tokens, voice = utterance
    got, arrivals, barrier = {}, {}, threading.Barrier(2)

    def one(seed):
        barrier.wait(timeout=60)
        got[seed], arrivals[seed] = [], []
        for chunk in stream(grpc_url(server), tokens, voice, seed=seed, steps=STEPS, **SCHEDULE):
            got[seed].append(chunk)
            arrivals[seed].append(time.monotonic())

    threads = [threading.Thread(target=one, args=(seed,)) for seed in (11, 12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for seed in (11, 12):
        assert_same_stream(got[seed], direct_stream(seed))
    # one instance would have made the second stream wait for the first one's last chunk
    first, second = sorted((11, 12), key=lambda s: arrivals[s][0])
    assert arrivals[second][0] < arrivals[first][-1], arrivals


def test_stream_model_is_decoupled_and_unbatched(server):
    config = get_json(server.url, "/v2/models/s3gen_stream/config")
    assert config["model_transaction_policy"]["decoupled"] is True
    assert config["max_batch_size"] == 1      # a batcher of batches of one, there for the bounded queue
    assert config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == ServeOptions.max_queue_size


def test_http_gets_an_error_not_a_hang(server, utterance):
    """A decoupled model has no HTTP answer; the client must be told so rather than wait."""
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    tokens, voice = utterance
    client = http.InferenceServerClient(server.url, network_timeout=60)
    inputs = []
    for name, value in request_arrays(tokens, voice, 1, steps=STEPS).items():
        inputs.append(http.InferInput(name, list(value.shape), {"int64": "INT64", "float32": "FP32"}[str(value.dtype)]))
        inputs[-1].set_data_from_numpy(value)
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.infer("s3gen_stream", inputs)
    finally:
        client.close()
    assert "decoupled" in str(caught.value).lower(), str(caught.value)


def _arrays(utterance, **schedule):
    tokens, voice = utterance
    arrays = request_arrays(tokens, voice, 4, steps=STEPS)
    arrays.update({k: np.array([[v]], dtype=np.int64) for k, v in schedule.items()})
    return arrays


@pytest.mark.parametrize("problem, arrays_for, words", [
    ("token out of range", lambda u: {**_arrays(u), "speech_tokens": np.array([[1, 2, SPEECH_VOCAB_SIZE + 5] * 5])},
     ["outside the vocabulary", str(SPEECH_VOCAB_SIZE + 5)]),
    ("first chunk too small", lambda u: _arrays(u, first_chunk_tokens=2), ["first_chunk_tokens", "2"]),
])
def test_bad_stream_request_is_refused_by_name_and_the_server_goes_on(server, utterance, direct_stream, problem,
                                                                       arrays_for, words):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as caught:
        list(stream_arrays(grpc_url(server), arrays_for(utterance), timeout_s=120))
    for word in words:
        assert word in str(caught.value), f"{problem}: {word!r} not in {caught.value!s}"
    assert "Traceback" not in str(caught.value)   # the reason alone
    tokens, voice = utterance
    assert_same_stream(list(stream(grpc_url(server), tokens, voice, seed=5, steps=STEPS, **SCHEDULE)),
                       direct_stream(5))

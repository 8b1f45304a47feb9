"""Hostile input and overload against a real server (its own: one instance, a queue of 2, on loopback).

Every client error is an HTTP 400 naming the input (and the limit where there is one), before any graph
runs; a burst past the queue is refused at once with HTTP 503; a property-based fuzz over the shapes,
dtypes and values of every input never gets a 5xx. After each, the server is ready and answers a good
request with the single-request wav."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings

from s3gen_runtime.serving.client import get_json, infer_arrays, is_ready, synthesize
from s3gen_runtime.serving.protocol import MAX_ABS_PROMPT_FEAT, request_arrays

from hostile_requests import (INPUT_NAMES, SAMPLES_PER_TOKEN, binary_body, expected_samples, json_body,
                             json_inputs, post, requests)
from server_helpers import STEPS, start_server

TOL = 2e-3
QUEUE = 2


@pytest.fixture(scope="module")
def small_server(standard_artifacts, tmp_path_factory):
    """One instance, batches of one, at most QUEUE requests waiting: a burst overflows it at once."""
    srv = start_server(standard_artifacts, tmp_path_factory.mktemp("hostile"), "--instances", "1", "--max-batch", "1",
                       "--max-queue-delay-ms", "0", "--max-queue-size", str(QUEUE))
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.terminate()


def _good(utterance, seed=1) -> dict:
    tokens, voice = utterance
    return request_arrays(tokens, voice, seed, steps=STEPS)


def _refusal(url: str, arrays: dict) -> tuple[str, str]:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as caught:
        infer_arrays(url, arrays, timeout_s=60)
    return caught.value.status(), caught.value.message()


def _still_serves(server, utterance, direct) -> None:
    tokens, voice = utterance
    assert is_ready(server.url)
    wav = synthesize(server.url, tokens, voice, seed=2, steps=STEPS).wav
    assert np.max(np.abs(wav - direct(tokens, voice, 2))) < TOL


def _emptied(arrays: dict, name: str) -> dict:
    a = np.asarray(arrays[name])
    arrays[name] = a[:, :0] if a.ndim == 2 else a[:, :0, :]
    return arrays


@pytest.mark.parametrize("name", INPUT_NAMES)
def test_an_empty_input_is_refused_by_name(small_server, utterance, name):
    arrays = _good(utterance)
    arrays.update(cfg_rate=np.array([[0.7]], np.float32), solver=np.array([[b"euler"]], dtype=object))
    status, message = _refusal(small_server.url, _emptied(arrays, name))
    assert status == "400" and name in message, message   # was a 500 from PyTriton's tensor store


WRONG_DTYPE = {"speech_tokens": np.int32, "prompt_token": np.float32, "prompt_feat": np.float64,
               "embedding": np.int64, "seed": np.float32, "steps": np.int32, "cfg_rate": np.float64}


@pytest.mark.parametrize("name", sorted(WRONG_DTYPE))
def test_a_wrong_dtype_is_refused_naming_the_expected_one(small_server, utterance, name):
    arrays = _good(utterance)
    arrays.update(cfg_rate=np.array([[0.7]], np.float32))
    arrays[name] = arrays[name].astype(WRONG_DTYPE[name])
    status, message = _refusal(small_server.url, arrays)
    assert status == "400" and name in message and "expects" in message, message


@pytest.mark.parametrize("name, value, words", [
    ("prompt_feat", np.nan, ["prompt_feat", "NaN"]),
    ("prompt_feat", -np.inf, ["prompt_feat", "Inf"]),
    ("embedding", np.inf, ["embedding", "Inf"]),
    ("cfg_rate", np.nan, ["cfg_rate", "finite"]),
    ("prompt_feat", 3e38, ["prompt_feat", f"+-{MAX_ABS_PROMPT_FEAT:g}", "3e+38"]),   # finite, but overflows
    ("cfg_rate", 1e30, ["cfg_rate", "at most"]),
    ("steps", 2**40, ["steps", "at most 1000"]),
    ("seed", -1, ["seed", "-1"]),
    ("speech_tokens", 2**62, ["speech_tokens", "outside the vocabulary"]),
])
def test_non_finite_and_extreme_values_are_refused_with_the_limit(small_server, utterance, name, value, words):
    arrays = _good(utterance)
    dtype = np.int64 if name in ("steps", "seed", "speech_tokens") else np.float32
    arrays[name] = np.array(arrays.get(name, [[0]]), dtype=dtype)
    arrays[name].reshape(-1)[0] = value
    status, message = _refusal(small_server.url, arrays)
    assert status == "400", message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_extreme_values_that_are_harmless_give_a_finite_wav(small_server, utterance):
    """The embedding is normalised inside the graph and the seed only picks the noise: no limit needed."""
    arrays = _good(utterance)
    arrays["embedding"][:] = 3e38
    arrays["seed"][:] = 2**63 - 1
    wav = infer_arrays(small_server.url, arrays, timeout_s=120).wav
    assert wav.shape == (arrays["speech_tokens"].shape[1] * SAMPLES_PER_TOKEN,) and np.isfinite(wav).all()


@pytest.mark.parametrize("word, expected", [(b"", "unknown solver ''"), (b"\xff\xfe", "UTF-8"),
                                            (b"rk45", "valid solvers")])
def test_odd_solver_strings_are_refused(small_server, utterance, word, expected):
    arrays = _good(utterance)
    arrays["solver"] = np.array([[word]], dtype=object)
    status, message = _refusal(small_server.url, arrays)
    assert status == "400" and expected in message, message


@pytest.mark.parametrize("change, words", [
    (lambda a: a.update(speech_tokens=np.zeros((1, 3000), np.int64)), ["largest bucket"]),
    (lambda a: a.update(prompt_token=np.zeros((1, 3000), np.int64), prompt_feat=np.zeros((1, 6000, 80), np.float32)),
     ["largest bucket"]),
    (lambda a: a.update(embedding=np.zeros((1, 193), np.float32)), ["embedding", "193"]),
    (lambda a: a.update(prompt_feat=a["prompt_feat"][:, :7]), ["prompt_feat", "7 frames"]),
    (lambda a: a.update(speech_tokens=np.zeros((2, 5), np.int64)), ["speech_tokens", "batch size"]),
])
def test_oversized_and_mismatched_shapes_are_refused(small_server, utterance, change, words):
    arrays = _good(utterance)
    change(arrays)
    status, message = _refusal(small_server.url, arrays)
    assert status == "400", message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_binary_data_shorter_than_its_shape_is_refused(small_server, utterance):
    body, headers = binary_body(_good(utterance), cut={"speech_tokens": 80})
    status, text = post(small_server.url, body, headers)
    assert status == 400 and "speech_tokens" in text and "80 bytes" in text and "needs 280" in text, text


def test_the_json_form_is_served_too(small_server, utterance):
    """The raw JSON body the malformed cases start from is itself a good request."""
    status, text = post(small_server.url, json_body(json_inputs(_good(utterance))))
    assert status == 200 and '"sample_rate"' in text and "24000" in text, text


def _spoil(index: int, **changes):
    def change(inputs):
        inputs[index].update(changes)
    return change


# Each of these was an HTTP 500 from tritonserver's own HTTP front end (the huge shape: an abort that took
# the server down); the front (front.py) now refuses them with the reason.
@pytest.mark.parametrize("body, words, code", [
    (b"hello{", ["not valid JSON"], 400),
    (b"", ["not valid JSON"], 400),
    (b"[1, 2]", ["'inputs' list"], 400),
    (b'{"inputs": [{"name": 5}]}', ["'name' string"], 400),
    (b'{"inputs": [{"name": "seed", "datatype": "INT64", "shape": [1, 1], "data": [NaN]}]}', ["NaN"], 400),
    (b"\xff\xfe{}", ["not UTF-8"], 400),
    (_spoil(0, data=[1, 2, 3]), ["speech_tokens", "holds 3 value(s)", "needs 35"], 400),
    (_spoil(0, data=["a"] * 35), ["speech_tokens", "not a INT64"], 400),
    (_spoil(4, data=[2**63]), ["seed", "not a INT64"], 400),
    (_spoil(0, shape=[1, -3]), ["speech_tokens", "non-negative"], 400),
    (_spoil(0, shape=[1, 10**12]), ["speech_tokens", "over the request size limit"], 413),
    (_spoil(0, datatype="INT128"), ["speech_tokens", "unknown datatype"], 400),
])
def test_malformed_bodies_are_refused_in_front_of_tritonserver(small_server, utterance, body, words, code):
    if callable(body):
        inputs = json_inputs(_good(utterance))
        body(inputs)
        body = json_body(inputs)
    status, text = post(small_server.url, body)
    assert status == code, text
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"
    assert is_ready(small_server.url)


def test_a_body_over_the_size_limit_is_refused_unread(small_server):
    """16 MiB by default (--max-request-mb): the front answers 413 from the Content-Length alone."""
    status, text = post(small_server.url, b" " * (16 * 2**20 + 1))
    assert status == 413 and "over the limit of 16777216 bytes" in text, text


def test_a_burst_past_the_queue_is_refused_at_once_and_the_rest_are_exact(small_server, utterance, direct):
    """1 instance + QUEUE waiting: of 8 requests sent at once, at least 8 - 1 - QUEUE get 503 promptly."""
    from tritonclient.utils import InferenceServerException

    for model in ("s3gen", "s3gen_stream"):     # the options reach both models' queue policy
        policy = get_json(small_server.url, f"/v2/models/{model}/config")["dynamic_batching"]["default_queue_policy"]
        assert (policy["max_queue_size"], policy["timeout_action"]) == (QUEUE, "REJECT"), policy
        assert int(policy["default_timeout_microseconds"]) == 30_000_000
    tokens, voice = utterance
    steps, count = STEPS, 8          # all sent within milliseconds, while the first (about a second) runs
    outcomes, barrier = {}, threading.Barrier(count)

    def one(seed):
        barrier.wait(timeout=60)
        start = time.perf_counter()
        try:
            outcomes[seed] = ("wav", synthesize(small_server.url, tokens, voice, seed=seed, steps=steps).wav)
        except InferenceServerException as e:
            outcomes[seed] = (e.status(), e.message(), time.perf_counter() - start)

    threads = [threading.Thread(target=one, args=(30 + i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    busy = [o for o in outcomes.values() if o[0] != "wav"]
    assert len(outcomes) == count and len(busy) >= count - 1 - QUEUE, outcomes
    for status, message, seconds in busy:
        assert status == "503" and f"server busy: {QUEUE} requests are already waiting" in message, message
        assert f"--max-queue-size {QUEUE}" in message
        assert seconds < 5.0, f"a busy refusal took {seconds:.1f} s"
    for seed, outcome in outcomes.items():
        if outcome[0] == "wav":
            assert np.max(np.abs(outcome[1] - direct(tokens, voice, seed, steps=steps))) < TOL


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(arrays=requests())
def test_fuzz_every_input_gets_a_400_or_a_finite_wav_of_the_right_length(small_server, arrays):
    from tritonclient.utils import InferenceServerException

    try:
        wav = infer_arrays(small_server.url, arrays, timeout_s=120).wav
    except InferenceServerException as e:
        assert e.status() == "400", f"HTTP {e.status()}: {e.message()}"
        assert "Traceback" not in e.message()
        event("refused")     # --hypothesis-show-statistics shows the share of each outcome
        return
    event("synthesised")
    assert wav.shape == (expected_samples(arrays),)
    assert np.isfinite(wav).all()


def test_after_all_of_it_the_server_is_ready_and_exact(small_server, utterance, direct):
    _still_serves(small_server, utterance, direct)
    assert small_server.proc.poll() is None


def test_the_log_holds_no_request_values(small_server):
    """Refusals are logged as one line without their reason: the reasons above quoted the requests' values."""
    log = small_server.text()
    assert "refused a request" in log
    for quoted in (str(2**62), "outside the vocabulary", "rk45", "3e+38", "Traceback"):
        assert quoted not in log, quoted

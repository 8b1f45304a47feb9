"""The real server (started by conftest on loopback): parity with `synth`, health, client errors,
a client that disconnects, and batching across concurrent requests of different lengths."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from s3gen_runtime.constants import SAMPLE_RATE, SPEECH_VOCAB_SIZE
from s3gen_runtime.serving.client import get_json, infer_arrays, model_stats, stats_delta, synthesize
from s3gen_runtime.serving.protocol import request_arrays

from server_helpers import STEPS

TOL = 2e-3


def server_error(url: str, arrays: dict) -> tuple[str, str]:
    """The HTTP status and message of the error the server answers `arrays` with (it must answer with one)."""
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as caught:
        infer_arrays(url, arrays, timeout_s=60)
    return caught.value.status(), caught.value.message()


def test_wav_equals_the_synth_command(server, utterance, golden, standard_artifacts, tmp_path):
    tokens, voice = utterance
    reply = synthesize(server.url, tokens, voice, seed=5, steps=STEPS)
    out = tmp_path / "synth.npz"
    path = golden("s3gen_p25_n35_seed0.npz")
    cli = Path(sys.executable).with_name("s3gen-aot")
    subprocess.run([str(cli), "synth", "--artifacts", str(standard_artifacts), "--tokens", str(path), "--voice",
                    str(path), "--seed", "5", "--steps", str(STEPS), "--threads", "1", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    expected = np.load(out)["wav"].reshape(-1)
    assert reply.sample_rate == SAMPLE_RATE
    assert reply.wav.shape == expected.shape
    assert np.max(np.abs(reply.wav - expected)) < TOL


def test_grpc_answers_like_http(server, utterance, direct):
    import tritonclient.grpc as grpc

    tokens, voice = utterance
    client = grpc.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    inputs = []
    for name, value in request_arrays(tokens, voice, 6, steps=STEPS).items():
        dtype = {"int64": "INT64", "float32": "FP32"}[str(value.dtype)]
        inputs.append(grpc.InferInput(name, list(value.shape), dtype))
        inputs[-1].set_data_from_numpy(value)
    result = client.infer("s3gen", inputs, client_timeout=120)
    client.close()
    assert int(result.as_numpy("sample_rate")[0, 0]) == SAMPLE_RATE
    assert np.max(np.abs(result.as_numpy("wav")[0] - direct(tokens, voice, 6))) < TOL


def test_ready_only_after_warm_up_and_config_is_ragged(server):
    log = server.text()
    assert log.index("warm-up synthesis") < log.index("ready: model 's3gen'")
    config = get_json(server.url, "/v2/models/s3gen/config")
    assert all(t["allow_ragged_batch"] for t in config["input"])
    assert config["max_batch_size"] == 4


def _good(utterance, seed=1):
    tokens, voice = utterance
    return request_arrays(tokens, voice, seed, steps=STEPS)


@pytest.mark.parametrize("problem, change, words", [
    ("wrong dtype", lambda a: a.update(speech_tokens=a["speech_tokens"].astype(np.float32)),
     ["speech_tokens", "FP32"]),
    ("wrong shape", lambda a: a.update(prompt_feat=a["prompt_feat"][:, :, :79]), ["prompt_feat"]),
    ("missing input", lambda a: a.pop("embedding"), ["embedding"]),
    ("token out of range", lambda a: a["speech_tokens"].__setitem__((0, 3), SPEECH_VOCAB_SIZE + 5),
     ["outside the vocabulary", str(SPEECH_VOCAB_SIZE + 5)]),
    ("too long", lambda a: a.update(speech_tokens=np.zeros((1, 2100), np.int64)), ["largest bucket"]),
    ("NaN in the voice", lambda a: a["embedding"].__setitem__((0, 7), np.nan), ["embedding", "NaN"]),
    ("unknown solver", lambda a: a.update(solver=np.array([[b"rk45"]], dtype=object)), ["rk45"]),
])
def test_malformed_request_is_refused_by_name_and_the_server_goes_on(server, utterance, direct, problem, change,
                                                                     words):
    arrays = _good(utterance)
    change(arrays)
    status, message = server_error(server.url, arrays)
    assert status == "400", f"{problem}: HTTP {status}: {message}"   # the client's fault, not the model's
    for word in words:
        assert word in message, f"{problem}: {word!r} not in {message!r}"
    assert "Traceback" not in message   # the reason alone
    tokens, voice = utterance
    reply = synthesize(server.url, tokens, voice, seed=2, steps=STEPS)
    assert np.max(np.abs(reply.wav - direct(tokens, voice, 2))) < TOL


def test_a_client_that_disconnects_harms_no_other_request(server, utterance, direct):
    from tritonclient.utils import InferenceServerException

    tokens, voice = utterance
    outcome = {}

    def patient():
        outcome["wav"] = synthesize(server.url, tokens, voice, seed=7, steps=STEPS).wav

    def impatient():   # 10 steps take seconds; it hangs up after 0.5 s
        try:
            infer_arrays(server.url, request_arrays(tokens, voice, 8, steps=10), timeout_s=0.5)
            outcome["impatient"] = "answered"
        except (InferenceServerException, OSError) as e:
            outcome["impatient"] = type(e).__name__

    threads = [threading.Thread(target=impatient), threading.Thread(target=patient)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert outcome["impatient"] != "answered"
    assert np.max(np.abs(outcome["wav"] - direct(tokens, voice, 7))) < TOL
    # and the server still answers afterwards
    assert np.max(np.abs(synthesize(server.url, tokens, voice, seed=9, steps=STEPS).wav
                         - direct(tokens, voice, 9))) < TOL


def test_concurrent_requests_of_different_lengths_share_one_batch(server, utterance, direct):
    tokens, voice = utterance
    lengths = (35, 20, 28)          # one bucket (mel256): 2 (25 + 35) = 120 frames at most
    before = model_stats(server.url)
    wavs, barrier = {}, threading.Barrier(len(lengths))

    def one(n, seed):
        barrier.wait(timeout=60)
        wavs[seed] = synthesize(server.url, tokens[:n], voice, seed=seed, steps=STEPS).wav

    threads = [threading.Thread(target=one, args=(n, 20 + i)) for i, n in enumerate(lengths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    delta = stats_delta(before, model_stats(server.url))
    assert delta["success"] == len(lengths)
    assert max(delta["batch_sizes"]) >= 2, delta          # 300 ms of queue delay gathers them
    for i, n in enumerate(lengths):
        assert np.max(np.abs(wavs[20 + i] - direct(tokens[:n], voice, 20 + i))) < TOL


@pytest.mark.slow   # a load test (~25 s); the round trips above stay in make test
def test_load_test_checks_every_response_and_reports_batches(server, utterance, standard_artifacts):
    from s3gen_runtime.serving.loadtest import LoadTest, make_jobs, markdown_table, run_load_test

    tokens, voice = utterance
    report = run_load_test(server.url, tokens, voice, levels=(1, 3), jobs=3, requests_per_client=1,
                           max_seconds_per_level=60, steps=STEPS, say=lambda m: None, artifacts=standard_artifacts,
                           threads=1)
    assert report["direct_p50_s"] > 0 and report["direct_precision"] == "fp32"
    assert report["server_overhead_p50"] == pytest.approx(report["levels"][0]["latency_p50_s"] / report["direct_p50_s"] - 1)
    one, three = report["levels"]
    assert (one["requests"], three["requests"]) == (3, 3)
    assert one["errors"] == three["errors"] == 0 and one["mismatches"] == three["mismatches"] == 0
    assert one["batch_sizes"] == {1: 3} and sum(s * n for s, n in three["batch_sizes"].items()) == 3
    assert "| 3 | 3 | 0 | 0 |" in markdown_table(report)
    # a wrong reference is caught: the check compares, it does not only count
    test = LoadTest(server.url, tokens, voice, make_jobs(len(tokens), 1), steps=STEPS)
    test.take_references()
    job = test.jobs[0]
    test.references[job] = test.references[job] + 0.01
    assert test.level(1, 1, 60)["mismatches"] == 1


def test_load_test_baseline_runs_at_the_servers_precision(monkeypatch, utterance):
    """The overhead of an int8 server is measured against the int8 runtime, not the fp32 one."""
    import s3gen_runtime.pipeline as pipeline
    from s3gen_runtime.serving.loadtest import direct_seconds, make_jobs

    opened = []

    class Recording:
        def __init__(self, folder, **options):
            opened.append(options)

        def synthesize(self, *args, **kwargs):
            return None

    monkeypatch.setattr(pipeline, "S3GenRuntime", Recording)
    tokens, voice = utterance
    assert len(direct_seconds("art", tokens, voice, make_jobs(len(tokens), 2), 1, 2, "int8")) == 2
    assert opened == [{"precision": "int8", "intra_op_threads": 2}]


def _spinning_entry(session) -> str | None:
    try:
        return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:   # not set: ORT's default, spinning
        return None


@pytest.mark.parametrize("spinning", [True, False])
def test_serve_options_set_ort_thread_spinning(standard_artifacts, spinning):
    """--no-spinning reaches every ONNX Runtime session the server opens (the loaded model, warmed up)."""
    from s3gen_runtime.serving.server import ServeOptions, load_model

    model = load_model(standard_artifacts, ServeOptions(threads=1, allow_spinning=spinning), say=lambda m: None)
    runners = model.runtime.runners
    entries = {role: _spinning_entry(runners[role]._session) for role in runners.opened()}
    assert entries and set(entries.values()) == ({None} if spinning else {"0"}), entries

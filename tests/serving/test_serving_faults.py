"""Faults on a real server, each on its own (these tests end it): SIGTERM under load drains every accepted
request and exits 0; a model instance's stub killed mid-request fails that request with a clear error,
the server reports not ready and stops with exit 1 for its supervisor to restart it. Either way
PyTriton's model store (its workspace) is gone afterwards: nothing is left half-written."""
from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from s3gen_runtime.serving.client import synthesize
from s3gen_runtime.serving.processes import stub_models

from hostile_requests import post
from server_helpers import start_server

STEPS = 4          # seconds of work per request, so the fault lands while requests run


def _workspace(log: str) -> Path:
    found = re.search(r"(/\S+/pytriton/workspace_[A-Za-z0-9_]+)", log)
    assert found, "the server log names no PyTriton workspace"
    return Path(found.group(1))


def _clients(server, utterance, seeds, outcomes):
    from tritonclient.utils import InferenceServerException

    tokens, voice = utterance

    def one(seed):
        try:
            outcomes[seed] = ("wav", synthesize(server.url, tokens, voice, seed=seed, steps=STEPS).wav)
        except InferenceServerException as e:
            outcomes[seed] = (e.status(), e.message())

    threads = [threading.Thread(target=one, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    return threads


@pytest.mark.slow   # ~40 s: its own server, four requests of several seconds on two instances
def test_sigterm_under_load_drains_every_accepted_request_then_exits_0(standard_artifacts, utterance, direct,
                                                                      tmp_path):
    server = start_server(standard_artifacts, tmp_path, "--instances", "2", "--max-queue-delay-ms", "0")
    try:
        server.wait_ready()
        outcomes: dict = {}
        threads = _clients(server, utterance, (41, 42, 43, 44), outcomes)   # two run, two wait in the queue
        time.sleep(1.5)
        assert not outcomes, "requests finished before SIGTERM: make them longer"
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        status, text = post(server.url, b"{}")          # after SIGTERM: no new work, said at once
        assert status == 503 and "stopping" in text, (status, text)
        code = server.proc.wait(timeout=120)
        for t in threads:
            t.join(timeout=60)
    finally:
        if server.proc.poll() is None:
            server.terminate()
    tokens, voice = utterance
    assert sorted(outcomes) == [41, 42, 43, 44]
    for seed, outcome in outcomes.items():
        assert outcome[0] == "wav", outcome
        assert np.max(np.abs(outcome[1] - direct(tokens, voice, seed, steps=STEPS))) < 2e-3
    assert code == 0, server.text()[-3000:]
    assert not _workspace(server.text()).exists()


@pytest.mark.slow   # ~45 s: a dead stub makes tritonserver wait its whole exit timeout (25 s) for the model
def test_a_killed_stub_fails_its_request_and_the_server_stops_not_ready(standard_artifacts, utterance, tmp_path):
    import os

    server = start_server(standard_artifacts, tmp_path, "--instances", "1", "--max-queue-delay-ms", "0")
    try:
        server.wait_ready()
        stubs = {pid: model for pid, model in stub_models(server.proc.pid).items() if model == "s3gen"}
        assert len(stubs) == 1, stub_models(server.proc.pid)
        outcomes: dict = {}
        threads = _clients(server, utterance, (51,), outcomes)
        time.sleep(1.5)
        assert not outcomes, "the request finished before the kill: make it longer"
        os.kill(next(iter(stubs)), signal.SIGKILL)
        for t in threads:
            t.join(timeout=60)
        status, message = outcomes[51]
        assert status == "500" and "Stub process 's3gen_0_0' is not healthy" in message, outcomes[51]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:       # the server notices within its 0.5 s watch
            status, text = post(server.url, b"{}")
            if status == 503:
                break
            time.sleep(0.2)
        assert status == 503 and "a model instance of 's3gen' died" in text, (status, text)
        code = server.proc.wait(timeout=120)
    finally:
        if server.proc.poll() is None:
            server.terminate()
    assert code == 1
    log = server.text()
    assert "error: a model instance of 's3gen' died" in log and "stopped" in log
    assert not _workspace(log).exists()

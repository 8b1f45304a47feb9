"""SIGTERM on a real server: the request in flight is answered in full, then the process exits 0.
Its own server (two model instances over one runtime): this test ends it."""
from __future__ import annotations

import threading
import time

import numpy as np

from s3gen_runtime.serving.client import get_json, synthesize

from server_helpers import start_server

IN_FLIGHT_STEPS = 6     # several seconds of work, so SIGTERM lands while it runs


def test_sigterm_finishes_the_request_in_flight_then_exits_0(standard_artifacts, utterance, direct, tmp_path):
    tokens, voice = utterance
    server = start_server(standard_artifacts, tmp_path, "--max-queue-delay-ms", "0", "--instances", "2")
    try:
        server.wait_ready()
        assert get_json(server.url, "/v2/models/s3gen/config")["instance_group"][0]["count"] == 2
        outcome = {}

        def client():
            try:
                outcome["wav"] = synthesize(server.url, tokens, voice, seed=11, steps=IN_FLIGHT_STEPS).wav
            except Exception as e:   # noqa: BLE001 - the test reports whatever the client saw
                outcome["error"] = repr(e)

        thread = threading.Thread(target=client)
        thread.start()
        time.sleep(1.0)      # sent and being computed: the request takes several seconds
        assert "wav" not in outcome, "the request finished before SIGTERM: make it longer"
        code = server.terminate()
        thread.join(timeout=120)
    finally:
        if server.proc.poll() is None:
            server.terminate()
    assert "error" not in outcome, outcome.get("error")
    assert np.max(np.abs(outcome["wav"] - direct(tokens, voice, 11, steps=IN_FLIGHT_STEPS))) < 2e-3
    assert code == 0, server.text()[-3000:]
    assert "stopped" in server.text()

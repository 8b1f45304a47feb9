"""`s3gen-aot triton-repo` and the nvidia-pytriton wheel's own tritonserver started on the repository
(CPU, loopback, free ports): parity with the runtime, per-request errors beside a good request, exit 0."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from s3gen_runtime.serving.client import get_json, infer_arrays, is_ready, synthesize
from s3gen_runtime.serving.launch import free_ports
from s3gen_runtime.serving.protocol import request_arrays
from s3gen_runtime.serving.triton_repo import config_text, prepare_tritonserver, server_command, server_environment

from server_helpers import START_TIMEOUT_S, STEPS, STOP_TIMEOUT_S


def test_config_text_declares_the_contract():
    text = config_text({"artifacts": "/a"}, max_batch=4, max_queue_delay_ms=2.5, instances=2)
    assert 'name: "s3gen"' in text and 'backend: "python"' in text and "max_batch_size: 4" in text
    assert text.count("allow_ragged_batch: true") == 8 and text.count("optional: true") == 3
    assert "max_queue_delay_microseconds: 2500" in text and "count: 2 kind: KIND_CPU" in text
    assert 'key: "artifacts" value: { string_value: "/a" }' in text
    assert "max_queue_size: 0 " in text     # no bound unless asked for
    bounded = config_text({"artifacts": "/a"}, max_batch=4, max_queue_delay_ms=2.5, instances=2, max_queue_size=6,
                          queue_timeout_ms=1500)
    assert ("default_queue_policy { timeout_action: REJECT max_queue_size: 6 default_timeout_microseconds: 1500000 }"
            in bounded)


def test_a_failed_write_leaves_no_half_repository(standard_artifacts, tmp_path, monkeypatch):
    """All or nothing: a write that fails midway leaves the previous model folder as it was, and no other."""
    import s3gen_runtime.serving.triton_repo as triton_repo

    repo = triton_repo.write_repository(standard_artifacts, tmp_path / "repo", max_batch=2)
    before = (repo / "s3gen" / "config.pbtxt").read_text()

    def broken_copy(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(triton_repo.shutil, "copyfile", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        triton_repo.write_repository(standard_artifacts, repo, max_batch=6)
    assert sorted(p.name for p in repo.iterdir()) == ["s3gen"]
    assert (repo / "s3gen" / "config.pbtxt").read_text() == before and (repo / "s3gen" / "1" / "model.py").is_file()
    monkeypatch.undo()
    triton_repo.write_repository(standard_artifacts, repo, max_batch=6)      # and a rewrite replaces it whole
    assert "max_batch_size: 6" in (repo / "s3gen" / "config.pbtxt").read_text()
    assert sorted(p.name for p in repo.iterdir()) == ["s3gen"]


def test_stock_tritonserver_serves_the_generated_repository(standard_artifacts, utterance, direct, tmp_path):
    from tritonclient.utils import InferenceServerException

    repo = tmp_path / "repo"
    cli = Path(sys.executable).with_name("s3gen-aot")
    subprocess.run([str(cli), "triton-repo", str(standard_artifacts), "--out", str(repo), "--threads", "1",
                    "--max-batch", "4", "--max-queue-delay-ms", "300", "--max-queue-size", "5"], check=True, capture_output=True, timeout=120)
    http, grpc, metrics = free_ports(3)
    command = server_command(prepare_tritonserver(tmp_path), repo, "127.0.0.1", http, grpc, metrics)
    log = tmp_path / "tritonserver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=server_environment(dict(os.environ)))
    url = f"127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not is_ready(url):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
            time.sleep(0.5)
        config = get_json(url, "/v2/models/s3gen/config")
        assert all(t["allow_ragged_batch"] for t in config["input"])
        assert config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 5   # the pbtxt parses
        tokens, voice = utterance
        outcome = {}

        def good():
            outcome["good"] = synthesize(url, tokens, voice, seed=4, steps=STEPS).wav

        def bad():
            arrays = request_arrays(tokens, voice, 5, steps=STEPS)
            arrays["embedding"][0, 3] = np.nan
            try:
                infer_arrays(url, arrays, timeout_s=120)
            except InferenceServerException as e:
                outcome["bad"] = (e.status(), str(e))

        threads = [threading.Thread(target=good), threading.Thread(target=bad)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert outcome["bad"][0] == "400" and "embedding contains NaN" in outcome["bad"][1]
        assert np.max(np.abs(outcome["good"] - direct(tokens, voice, 4))) < 2e-3
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=STOP_TIMEOUT_S)
    assert code == 0, log.read_text(errors="replace")[-3000:]

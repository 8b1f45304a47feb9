"""Graphs by role, opened on first use: the unguided estimator costs no memory until cfg_rate = 0."""
import threading
import time

import numpy as np
import pytest
from pipeline_helpers import TINY, linked_copy, tiny

from s3gen_runtime.errors import ArtifactError
from s3gen_runtime.pipeline import S3GenRuntime
from s3gen_runtime.runner_set import RunnerSet


def test_eager_roles_open_now_lazy_ones_once_under_concurrency():
    opened, started = [], threading.Barrier(4)

    def opener(role):
        opened.append(role)
        time.sleep(0.05)   # a slow open: the other threads must wait for it, not open again
        return f"runner:{role}"

    runners = RunnerSet(opener, ("encoder", "estimator"), eager=("encoder",))
    assert opened == ["encoder"] and runners.opened() == ("encoder",)
    assert list(runners) == ["encoder", "estimator"] and len(runners) == 2
    got = []

    def use():
        started.wait()
        got.append(runners["estimator"])

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert opened == ["encoder", "estimator"] and got == ["runner:estimator"] * 4
    with pytest.raises(KeyError):
        runners["vocoder"]


def test_unguided_estimator_opens_on_first_cfg_free_request(exported):
    runtime = S3GenRuntime(exported("standard"))
    assert runtime.runners.opened() == ("encoder", "estimator_cfg", "vocoder")
    tokens, voice = tiny()
    guided = runtime.synthesize(tokens, voice, seed=2, **TINY)
    assert "estimator" not in runtime.runners.opened()
    free = runtime.synthesize(tokens, voice, seed=2, cfg_rate=0.0, **TINY)
    assert "estimator" in runtime.runners.opened()
    assert not np.array_equal(guided.wav, free.wav)


def test_lazily_opened_graph_is_still_verified(exported, tmp_path):
    folder = linked_copy(exported("standard"), tmp_path / "art", skip=("estimator.onnx",))
    (folder / "estimator.onnx").write_bytes(b"not the graph")
    runtime = S3GenRuntime(folder)   # the tampered graph is not needed yet
    tokens, voice = tiny()
    with pytest.raises(ArtifactError, match="components.estimator: file estimator.onnx is tampered or corrupt"):
        runtime.synthesize(tokens, voice, seed=2, cfg_rate=0.0, **TINY)

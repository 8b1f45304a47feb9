"""The pure parts of serving: decoding and checking requests, grouping them into runtime batches, the
environment fixes and the statistics arithmetic. No server, no graphs."""
from __future__ import annotations

import numpy as np
import pytest

from s3gen_runtime.buckets import make_buckets
from s3gen_runtime.pipeline import Settings
from s3gen_runtime.serving.client import stats_delta
from s3gen_runtime.serving.environment import check_numpy, with_libpython
from s3gen_runtime.serving.protocol import ClientError, decode, plan_groups, request_arrays
from s3gen_runtime.voice import Voice

BUCKETS = make_buckets((256, 512))


def resolve(solver=None, steps=None, cfg_rate=None):
    return Settings(solver or "euler", 10 if steps is None else int(steps), 0.7 if cfg_rate is None else cfg_rate)


def voice(prompt: int) -> Voice:
    return Voice.validated(np.ones((1, prompt), np.int64), np.zeros((1, 2 * prompt, 80), np.float32),
                           np.zeros((1, 192), np.float32))


def arrays(prompt=10, new=20, seed=0, **overrides):
    return request_arrays(np.arange(new) % 100, voice(prompt), seed, **overrides)


def test_decode_keeps_seed_settings_and_bucket():
    d = decode(arrays(prompt=10, new=20, seed=4, steps=3), BUCKETS, resolve)
    assert d.request.seed == 4 and d.settings == Settings("euler", 3, 0.7)
    assert (d.bucket, d.prompt, d.new) == ("mel256", 10, 20)
    assert decode(arrays(prompt=100, new=100), BUCKETS, resolve).bucket == "mel512"


@pytest.mark.parametrize("change, words", [
    (lambda a: a.pop("seed"), ["missing", "seed"]),
    (lambda a: a.update(seed=np.array([[1, 2]])), ["seed", "one value"]),
    (lambda a: a.update(speech_tokens=np.zeros((2, 5), np.int64)), ["speech_tokens", "batch dimension 1"]),
    (lambda a: a["speech_tokens"].__setitem__((0, 0), -1), ["speech_tokens", "-1 at index 0"]),
    (lambda a: a["prompt_feat"].__setitem__((0, 0, 0), np.inf), ["prompt_feat", "NaN or Inf"]),
    (lambda a: a.update(speech_tokens=np.zeros((1, 300), np.int64)), ["largest bucket", "mel512"]),
    (lambda a: a.update(seed=np.array([[-3]])), ["seed", "-3"]),
])
def test_decode_names_the_problem(change, words):
    a = arrays()
    change(a)
    with pytest.raises(ClientError) as caught:
        decode(a, BUCKETS, resolve)
    for word in words:
        assert word in str(caught.value)


def _decoded(prompt, new, steps=None):
    return decode(arrays(prompt=prompt, new=new, steps=steps), BUCKETS, resolve)


def test_groups_never_mix_buckets_or_settings():
    ds = [_decoded(10, 20), _decoded(100, 100), _decoded(10, 30), _decoded(10, 20, steps=2), _decoded(90, 90)]
    assert plan_groups(ds, BUCKETS) == [[0, 2], [1, 4], [3]]


def test_a_group_is_split_when_separate_padding_overflows_its_bucket():
    # each fits mel256 alone (2 (100 + 20) = 240), but padded together 2 (100 + 100) = 400 does not
    ds = [_decoded(100, 20), _decoded(20, 100)]
    assert [d.bucket for d in ds] == ["mel256", "mel256"]
    assert plan_groups(ds, BUCKETS) == [[0], [1]]


def test_libpython_goes_first_once():
    env = with_libpython({"LD_LIBRARY_PATH": "/a:/lib/py:/b"}, "/lib/py")
    assert env["LD_LIBRARY_PATH"] == "/lib/py:/a:/b"
    assert with_libpython({}, None) == {}


def test_numpy_2_is_refused_with_the_fix():
    check_numpy("1.26.4")
    with pytest.raises(RuntimeError, match="numpy < 2"):
        check_numpy("2.1.0")


def test_stats_delta():
    before = {"requests": 2, "executions": 2, "success": 2, "fail": 0, "queue_ns": 10, "compute_ns": 100,
              "batch_sizes": {1: 2}}
    after = {"requests": 6, "executions": 4, "success": 6, "fail": 0, "queue_ns": 30, "compute_ns": 400,
             "batch_sizes": {1: 3, 3: 1}}
    assert stats_delta(before, after) == {"requests": 4, "executions": 2, "success": 4, "fail": 0, "queue_ns": 20,
                                          "compute_ns": 300, "batch_sizes": {1: 1, 3: 1}}


def test_load_test_summary():
    from s3gen_runtime.serving.loadtest import make_jobs, summarize

    assert [(j.new_tokens, j.seed) for j in make_jobs(40, 4)] == [(40, 100), (30, 101), (20, 102), (40, 103)]
    records = [{"error": None, "seconds": s, "audio_s": 1.0, "diff": 0.0, "matches": True} for s in (1.0, 2.0, 3.0)]
    records.append({"error": "boom", "seconds": float("nan"), "audio_s": 0})
    server = {"requests": 3, "executions": 2, "success": 3, "fail": 1, "queue_ns": 3e6, "compute_ns": 6e9,
              "batch_sizes": {1: 1, 2: 1}}
    r = summarize(2, records, wall_s=2.0, server=server)
    assert (r["requests"], r["errors"], r["mismatches"]) == (4, 1, 0)
    assert r["audio_s_per_s"] == 1.5 and r["latency_p50_s"] == 2.0 and r["mean_batch"] == 1.5
    assert r["server_queue_ms"] == 1.0 and r["server_compute_ms"] == 2000.0


def test_serve_without_the_extra_names_it_in_one_line(tmp_path):
    import subprocess
    import sys

    # pytriton made unimportable in a child process: what a runtime-only install sees
    code = ("import sys; sys.modules['pytriton'] = None; from s3gen_cli.main import main; "
            f"main(['serve', {str(tmp_path)!r}])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: this command needs the serve extra (pytriton is not installed): pip install 's3gen-aot[serve]'"]

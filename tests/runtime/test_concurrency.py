"""One runtime object serves many threads: concurrent calls give exactly the serial outputs."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from s3gen_runtime.pipeline import S3GenRuntime
from s3gen_runtime.voice import Voice

THREADS, CALLS_PER_THREAD = 4, 2


@pytest.fixture(scope="module")
def runtime(exported):
    return S3GenRuntime(exported("standard"))


def job(i: int):
    """Call i: its own voice, tokens and seed, and lengths that differ between calls."""
    rng = np.random.default_rng(100 + i)
    prompt, new = 2 + i % 3, 3 + i % 4
    voice = Voice.validated(rng.integers(0, 6561, prompt), rng.standard_normal((2 * prompt, 80)).astype(np.float32),
                            rng.standard_normal(192).astype(np.float32))
    return rng.integers(0, 6561, new), voice, 1000 + i


def synth(runtime, i):
    tokens, voice, seed = job(i)
    return runtime.synthesize(tokens, voice, seed=seed, steps=2)


def test_threads_give_exactly_the_serial_outputs(runtime):
    n = THREADS * CALLS_PER_THREAD
    serial = [synth(runtime, i) for i in range(n)]

    def worker(w):
        return [(i, synth(runtime, i)) for i in range(w, n, THREADS)]   # 2 calls per thread

    with ThreadPoolExecutor(THREADS) as pool:
        threaded = dict(pair for chunk in pool.map(worker, range(THREADS)) for pair in chunk)
    assert sorted(threaded) == list(range(n))
    for i in range(n):
        assert np.array_equal(threaded[i].wav, serial[i].wav), f"call {i}: wav differs from the serial run"
        assert np.array_equal(threaded[i].mel, serial[i].mel), f"call {i}: mel differs from the serial run"
        assert threaded[i].seed == serial[i].seed == 1000 + i
    assert len({r.wav.tobytes() for r in serial}) == n   # the calls really differ

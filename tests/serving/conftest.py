"""Fixtures of the serving tests: artifacts, the golden utterance, the runtime called directly, and one
real server per test module (server_helpers.py starts and stops it)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="the serve extra (nvidia-pytriton) is not installed")

from s3gen_runtime.io import load_tokens  # noqa: E402
from s3gen_runtime.voice import load_voice  # noqa: E402
from server_helpers import STEPS, start_server  # noqa: E402


@pytest.fixture(scope="session")
def standard_artifacts(exported):
    return exported("standard")


@pytest.fixture(scope="module")
def server(standard_artifacts, tmp_path_factory):
    """One server per test module: two instances, each batching up to 4 requests that arrive within 300 ms."""
    srv = start_server(standard_artifacts, tmp_path_factory.mktemp("serve"), "--instances", "2", "--max-batch", "4",
                       "--max-queue-delay-ms", "300")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.terminate()


@pytest.fixture(scope="session")
def utterance(golden):
    """The golden file's tokens and voice (25 prompt tokens, 35 new)."""
    path = golden("s3gen_p25_n35_seed0.npz")
    return load_tokens(path), load_voice(path)


@pytest.fixture(scope="session")
def direct_runtime(standard_artifacts):
    """The runtime called directly in this process, as `synth` calls it (one thread, as the servers run)."""
    from s3gen_runtime.pipeline import S3GenRuntime

    return S3GenRuntime(standard_artifacts, intra_op_threads=1)


@pytest.fixture(scope="session")
def direct(direct_runtime):
    """wav_for(tokens, voice, seed): the runtime's offline synthesis, called directly."""
    runtime = direct_runtime

    def wav_for(tokens, voice, seed: int, steps: int = STEPS) -> np.ndarray:
        return runtime.synthesize(tokens, voice, seed=seed, steps=steps).wav

    return wav_for

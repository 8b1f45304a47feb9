"""A server on meanflow (Turbo) artifacts: the same models, with the variant's own default solver and
steps (manifest), answering as the runtime called directly does, offline and streamed."""
from __future__ import annotations

import numpy as np
import pytest

from s3gen_runtime.serving.client import stream, synthesize

from server_helpers import start_server

TOL = 2e-3


@pytest.fixture(scope="module")
def meanflow_artifacts(exported):
    return exported("meanflow")


def test_meanflow_server_answers_like_the_runtime(meanflow_artifacts, utterance, tmp_path_factory):
    from s3gen_runtime.pipeline import S3GenRuntime

    tokens, voice = utterance
    direct = S3GenRuntime(meanflow_artifacts, intra_op_threads=1)
    assert direct.variant == "meanflow"
    server = start_server(meanflow_artifacts, tmp_path_factory.mktemp("meanflow"))
    try:
        server.wait_ready()
        reply = synthesize(server.url, tokens, voice, seed=4)
        expected = direct.synthesize(tokens, voice, seed=4).wav
        assert reply.wav.shape == expected.shape
        assert np.max(np.abs(reply.wav - expected)) < TOL
        chunks = list(stream(f"127.0.0.1:{server.grpc}", tokens, voice, seed=4, first_chunk_tokens=10,
                             chunk_tokens=10))
        streamed = [c.wav for c in direct.stream(tokens, voice, seed=4, first_chunk_tokens=10, chunk_tokens=10)]
        assert len(chunks) == len(streamed) > 1
        assert np.max(np.abs(np.concatenate([c.wav for c in chunks]) - np.concatenate(streamed))) < TOL
    finally:
        assert server.terminate() == 0

"""The runtime runs a Vocos `vocoder` through the same role: feeds what the graph declares, says which."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from s3gen_export.cli import main
from s3gen_runtime.batching import Request
from s3gen_runtime.pipeline import S3GenRuntime
from s3gen_runtime.voice import save_voice

from pipeline_helpers import random_voice


@pytest.fixture(scope="module")
def vocos_runtime(vocos_artifacts):
    return S3GenRuntime(vocos_artifacts[0])


def test_synthesis_through_a_vocos_vocoder(vocos_runtime, std):
    rng = np.random.default_rng(3)
    voice = random_voice(rng, 5)
    tokens = rng.integers(0, 6561, 8)
    got = vocos_runtime.synthesize(tokens, voice, seed=7)
    hift = std.synthesize(tokens, voice, seed=7)
    assert vocos_runtime.vocoder == "vocos" and std.vocoder == "hift"
    np.testing.assert_array_equal(got.mel, hift.mel)   # same flow graphs, same seed: only the vocoder differs
    assert got.wav.shape == hift.wav.shape == (480 * got.mel.shape[1],)
    assert np.all(np.isfinite(got.wav)) and np.max(np.abs(got.wav)) > 0
    assert not np.allclose(got.wav, hift.wav)


def test_batched_vocos_rows_equal_rows_alone(vocos_runtime):
    rng = np.random.default_rng(4)
    requests = [Request(rng.integers(0, 6561, n), random_voice(rng, 4), seed=i) for i, n in enumerate((6, 15))]
    batch = vocos_runtime.prepare(requests)
    mels = [rng.standard_normal((80, 2 * n)).astype(np.float32) - 5.0 for n in (6, 15)]
    together = vocos_runtime.vocode(batch, mels)
    for i, request in enumerate(requests):
        alone = vocos_runtime.vocode(vocos_runtime.prepare([request]), [mels[i]])[0]
        np.testing.assert_allclose(together[i], alone, atol=1e-5)


def test_synth_says_which_vocoder(vocos_artifacts, tmp_path):
    rng = np.random.default_rng(5)
    voice = random_voice(rng, 4)
    save_voice(voice, tmp_path / "voice.npz")
    (tmp_path / "tokens.txt").write_text(" ".join(map(str, rng.integers(0, 6561, 6))))
    result = CliRunner().invoke(main, ["synth", "--artifacts", str(vocos_artifacts[0]), "--tokens",
                                       str(tmp_path / "tokens.txt"), "--voice", str(tmp_path / "voice.npz"),
                                       "--out", str(tmp_path / "out.wav"), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert f"vocoder: vocos ({vocos_artifacts[1].name})" in result.output

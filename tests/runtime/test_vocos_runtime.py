"""The runtime runs a Vocos `vocoder` through the same role: feeds what the graph declares, says which."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from s3gen_cli.main import main
from s3gen_runtime.batching import Request
from s3gen_runtime.metrics import snr_db
from s3gen_runtime.pipeline import S3GenRuntime
from s3gen_runtime.streaming import collect
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


def test_streaming_through_a_vocos_vocoder(vocos_runtime):
    """No sine source: the stream feeds Vocos only mel and lengths and carries no phase. One chunk is
    offline synthesis; a chunked stream keeps the offline length and its seams stay close to it."""
    rng = np.random.default_rng(6)
    voice, tokens = random_voice(rng, 6), rng.integers(0, 6561, 30)
    offline = vocos_runtime.synthesize(tokens, voice, seed=3, steps=2)
    _, whole = collect(vocos_runtime.stream(tokens, voice, seed=3, steps=2, first_chunk_tokens=tokens.size))
    np.testing.assert_allclose(whole.wav, offline.wav, atol=2e-3)
    chunks, result = collect(vocos_runtime.stream(tokens, voice, seed=3, steps=2, first_chunk_tokens=8,
                                                  chunk_tokens=8, growth=1.0))
    assert len(chunks) >= 3 and result.wav.shape == offline.wav.shape
    assert np.all(np.isfinite(result.wav)) and np.max(np.abs(result.wav)) > 0
    # the streamed vocoder alone on the offline mel: windows with left context and hold, crossfaded
    from s3gen_runtime.noise import draw_noise
    from s3gen_runtime.stream_vocoder import VocoderState, vocode_step

    noise, state, pieces = draw_noise(3, voice.prompt_tokens, tokens.size, voice.prompt_frames), VocoderState(), []
    frames = offline.mel.shape[1]
    for end in (20, 35, frames):
        piece = vocode_step(vocos_runtime.runners["vocoder"], offline.mel[:, :end], end == frames, state, left=16,
                            hold=12, phase0=noise["sine_phase"], noise_at=lambda a, b: noise["sine_noise"][..., 480 * a:480 * b])
        pieces += [] if piece is None else [piece]
    assert state.tail_cycles is None   # nothing to carry without a sine source
    assert snr_db(np.concatenate(pieces), offline.wav) > 20.0

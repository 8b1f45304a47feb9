"""Voices from recordings through the artifacts' speaker_encoder and tokenizer graphs, torch-free:
every stage against upstream's golden voice files, then synthesis from the prepared voice.

Tolerances are the golden voice README's: wav24 / wav16 1e-6, fbank 5e-3, mel128 1e-4, prompt_feat 1e-3,
FSQ 1e-4, embedding 1e-5, tokens exact (unless the golden FSQ value lies within 1e-4 of a boundary);
synthesis mel 1e-3 / wav 2e-3.
"""
import json

import numpy as np
import pytest
from pipeline_helpers import linked_copy, max_diff

from s3gen_runtime.errors import ArtifactError
from s3gen_runtime.io import load_noise
from s3gen_runtime.pipeline import S3GenRuntime
from s3gen_runtime.voice_prep import VOICE_ROLES, VoicePreparer, align_tokens

VOICE_CASES = ("voice_aishell_16k", "voice_espeak_enus_22k")
STAGE_ATOL = {"wav24": 1e-6, "wav16": 1e-6, "fbank": 5e-3, "mel128": 1e-4, "prompt_feat": 1e-3,
              "tokenizer_fsq": 1e-4, "embedding": 1e-5}


@pytest.fixture(scope="module")
def preparer(exported):
    return VoicePreparer(exported("standard"))


def golden_voice(golden, case):
    path = golden(f"voice/{case}.npz")
    g = np.load(path)
    return path, path.parent / str(g["audio_file"]), g


def tokens_match(got: np.ndarray, want: np.ndarray, fsq: np.ndarray) -> None:
    """Exact, except where the golden FSQ value lies within 1e-4 of a rounding boundary."""
    assert got.shape == want.shape
    near = (np.abs(np.abs(fsq) - 0.5) < 1e-4).any(axis=-1)
    assert not np.any((got != want) & ~near), f"tokens differ at {np.flatnonzero((got != want) & ~near)}"


@pytest.mark.parametrize("case", VOICE_CASES)
def test_voice_from_file_matches_upstream(case, preparer, std, golden):
    path, audio, g = golden_voice(golden, case)
    prepared = preparer.from_file(audio)
    stages = prepared.stages
    expected = {"wav24": g["wav24"][0], "wav16": g["wav16"][0], "fbank": g["fbank"][0], "mel128": g["mel128"][0],
                "prompt_feat": g["prompt_feat"][0], "tokenizer_fsq": g["tokenizer_fsq"][0], "embedding": g["embedding"]}
    for name, want in expected.items():
        assert max_diff(stages[name], want) <= STAGE_ATOL[name], name
    tokens_match(stages["tokenizer_tokens"], g["tokenizer_tokens"][0], g["tokenizer_fsq"][0])
    voice = prepared.voice
    tokens_match(voice.prompt_token[0], g["prompt_token"][0], g["tokenizer_fsq"][0][: g["prompt_token"].shape[1]])
    report = prepared.report
    assert (report.prompt_tokens, report.prompt_frames) == (g["prompt_token"].shape[1], g["prompt_feat"].shape[1])
    assert report.input_sample_rate == int(g["input_sr"]) and report.resampled == (int(g["input_sr"]) != 24000)
    assert report.loudness_gain_db is None   # standard artifacts: upstream's standard path does not normalise

    # the prepared voice synthesised with upstream's recorded noise reproduces upstream's speech
    result = std.synthesize(g["speech_tokens"], voice, noise=load_noise(path))
    assert max_diff(result.mel, g["mel"][0]) < 1e-3
    assert max_diff(result.wav, g["wav"][0]) < 2e-3


def test_array_input_equals_file_input(preparer, golden):
    import soundfile

    _, audio, _ = golden_voice(golden, "voice_aishell_16k")
    samples, rate = soundfile.read(str(audio), dtype="float32")
    from_array = preparer.from_array(samples, rate)
    from_file = preparer.from_file(audio)
    for key in ("prompt_token", "prompt_feat", "embedding"):
        np.testing.assert_array_equal(from_array.voice.arrays()[key], from_file.voice.arrays()[key])


def test_runtime_prepares_voices_with_its_own_folder(std, golden):
    _, audio, g = golden_voice(golden, "voice_aishell_16k")
    voice = std.prepare_voice(audio).voice
    np.testing.assert_array_equal(voice.prompt_token, g["prompt_token"])


def test_artifacts_without_voice_graphs_are_refused_by_name(exported, tmp_path):
    def drop(data):
        for role in VOICE_ROLES:
            data["components"].pop(role)
        return data

    folder = linked_copy(exported("standard"), tmp_path / "novoice", drop)
    with pytest.raises(ArtifactError, match="no voice graphs.*speaker_encoder, tokenizer"):
        VoicePreparer(folder)
    S3GenRuntime(folder)   # synthesis does not need them


def test_meanflow_normalises_loudness_by_default(exported):
    pyloudnorm = pytest.importorskip("pyloudnorm")
    from s3gen_export.speechlike import speechlike_recording

    quiet = speechlike_recording(6.0, 24000, seed=3, peak=0.05)
    mf = VoicePreparer(exported("meanflow"))
    normalised = mf.from_array(quiet, 24000)
    assert normalised.report.loudness_gain_db is not None and normalised.report.loudness_gain_db > 0
    loudness = pyloudnorm.Meter(24000).integrated_loudness(normalised.stages["wav24"].astype(np.float64))
    assert loudness == pytest.approx(-27.0, abs=0.05)
    plain = mf.from_array(quiet, 24000, normalize_loudness=False)
    assert plain.report.loudness_gain_db is None
    np.testing.assert_array_equal(plain.stages["wav24"], quiet)


# ---------------------------------------------------------------- pure pieces

@pytest.mark.parametrize("tokens, frames, kept", [(10, 20, 10), (11, 21, 10), (11, 20, 10), (10, 21, 10)])
def test_align_tokens_follows_upstream(tokens, frames, kept):
    ids = np.arange(tokens)
    assert align_tokens(ids, frames).tolist() == list(range(kept))


def test_report_lines_name_what_was_done(preparer, golden):
    _, audio, _ = golden_voice(golden, "voice_espeak_enus_22k")
    lines = "\n".join(preparer.from_file(audio).report.lines())
    assert "22050 Hz -> 24000 Hz" in lines and "2P+1" in lines and "not cropped" in lines
    assert json.dumps(preparer.from_file(audio).timings)   # plain numbers

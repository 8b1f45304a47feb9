"""`s3gen-aot voice`: a voice file from a recording, and one-line errors that leave nothing behind."""
import re

import numpy as np
import pytest
from click.testing import CliRunner

from s3gen_cli.main import main
from s3gen_export.speechlike import speechlike_recording
from s3gen_runtime.voice import load_voice

soundfile = pytest.importorskip("soundfile")


def voice_cli(*args):
    return CliRunner().invoke(main, ["voice", *map(str, args)])


def write(path, samples, rate, subtype="PCM_16"):
    soundfile.write(str(path), samples, rate, subtype=subtype)
    return path


def test_voice_from_a_recording_feeds_synth(exported, tmp_path):
    ref = write(tmp_path / "ref.wav", speechlike_recording(11.0, 44100, channels=2), 44100)
    out = tmp_path / "voice.npz"
    result = voice_cli(ref, "--artifacts", exported("standard"), "--out", out)
    assert result.exit_code == 0, result.output
    voice = load_voice(out)
    p, f = voice.prompt_tokens, voice.prompt_feat.shape[1]
    assert f == 500 and p == 250   # cropped to 10 s: 240000 samples -> 500 frames at 480 per frame
    assert f"P = {p} prompt tokens, F = {f} mel frames" in result.output
    assert "2 channel(s), resampled 44100 Hz -> 24000 Hz" in result.output
    assert "cropped to the first 10.00 s" in result.output

    np.save(tmp_path / "tokens.npy", np.arange(20))
    synth = CliRunner().invoke(main, ["synth", "--artifacts", exported("standard"), "--tokens", tmp_path / "tokens.npy",
                                      "--voice", out, "--seed", "1", "--steps", "2", "--out", tmp_path / "o.wav"])
    assert synth.exit_code == 0, synth.output


def bad_inputs(tmp_path):
    silent = write(tmp_path / "silent.wav", np.zeros(48000, np.float32), 24000)
    short = write(tmp_path / "short.wav", speechlike_recording(0.03, 24000), 24000)
    nan = speechlike_recording(2.0, 24000)
    nan[100] = np.nan
    nan_file = write(tmp_path / "nan.wav", nan, 24000, subtype="FLOAT")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    return {
        "missing file": (tmp_path / "nope.wav", "not found|no such file"),
        "not audio": (text, "cannot read .*audio|not .*audio"),
        "empty file": (empty, "cannot read .*audio|empty"),
        "silence": (silent, "silen"),
        "too short": (short, r"too short.*\d+(\.\d+)? s"),
        "NaN samples": (nan_file, "NaN"),
    }


@pytest.mark.parametrize("case", ["missing file", "not audio", "empty file", "silence", "too short", "NaN samples"])
def test_bad_recordings_fail_in_one_line_and_write_nothing(case, exported, tmp_path):
    ref, pattern = bad_inputs(tmp_path)[case]
    out = tmp_path / "voice.npz"
    result = voice_cli(ref, "--artifacts", exported("standard"), "--out", out)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert re.search(pattern, lines[0], flags=re.IGNORECASE), lines[0]
    assert not out.exists()

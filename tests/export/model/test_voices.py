"""voice-from-conds: upstream's conds.pt (torch.save of {'t3': ..., 'gen': ...}) -> a runtime voice."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from s3gen_cli.main import main
from s3gen_export.model.voices import voice_from_conds
from s3gen_runtime.errors import InputError
from s3gen_runtime.voice import load_voice


def write_conds(path, p=12, extra_frame=False, embedding_dim=192):
    gen = {"prompt_token": torch.randint(0, 6561, (1, p)), "prompt_token_len": torch.tensor([p]),
           "prompt_feat": torch.randn(1, 2 * p + int(extra_frame), 80), "prompt_feat_len": None,
           "embedding": torch.randn(1, embedding_dim)}
    t3 = {"speaker_emb": torch.randn(1, 256), "cond_prompt_speech_tokens": torch.randint(0, 6561, (1, 150)),
          "emotion_adv": 0.5 * torch.ones(1, 1, 1)}
    torch.save({"t3": t3, "gen": gen}, path)
    return gen


def test_conds_round_trip_through_cli(tmp_path):
    gen = write_conds(tmp_path / "conds.pt")
    result = CliRunner().invoke(main, ["voice-from-conds", str(tmp_path / "conds.pt"), str(tmp_path / "v.npz")])
    assert result.exit_code == 0, result.output
    voice = load_voice(tmp_path / "v.npz")
    np.testing.assert_array_equal(voice.prompt_token, gen["prompt_token"].numpy())
    np.testing.assert_array_equal(voice.prompt_feat, gen["prompt_feat"].numpy())


def test_odd_frame_is_kept_unless_trimmed(tmp_path):
    """Upstream synthesises with F = 2P + 1 as it is, so the voice keeps the frame by default."""
    gen = write_conds(tmp_path / "c.pt", p=10, extra_frame=True)
    voice = voice_from_conds(tmp_path / "c.pt")
    assert voice.prompt_frames == 21
    np.testing.assert_array_equal(voice.prompt_feat, gen["prompt_feat"].numpy())
    assert voice_from_conds(tmp_path / "c.pt", trim_odd_frame=True).prompt_feat.shape == (1, 20, 80)
    result = CliRunner().invoke(main, ["voice-from-conds", str(tmp_path / "c.pt"), str(tmp_path / "v.npz")])
    assert result.exit_code == 0 and "10 prompt tokens, 21 mel frames" in result.output
    assert load_voice(tmp_path / "v.npz").prompt_frames == 21


def test_other_frame_counts_are_refused_naming_the_rule(tmp_path):
    gen = write_conds(tmp_path / "c.pt", p=10)
    gen["prompt_feat"] = torch.randn(1, 22, 80)
    torch.save({"gen": gen}, tmp_path / "c.pt")
    with pytest.raises(InputError, match=r"c\.pt: prompt_feat must have 2P or 2P\+1 frames.* 22 frames for 10"):
        voice_from_conds(tmp_path / "c.pt")


def test_bad_conds_are_refused(tmp_path):
    write_conds(tmp_path / "c.pt", embedding_dim=80)
    with pytest.raises(InputError, match="192"):
        voice_from_conds(tmp_path / "c.pt")
    torch.save({"gen": "nope"}, tmp_path / "d.pt")
    result = CliRunner().invoke(main, ["voice-from-conds", str(tmp_path / "d.pt"), str(tmp_path / "v.npz")])
    assert result.exit_code == 1 and "'gen' dict" in result.output

"""Vocos as the vocoder: the feature gate, S3Gen's mel as a Vocos feature extractor, export parity."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from s3gen_cli.main import main
from s3gen_export.stages.vocos_export import parse_vocoder_option
from s3gen_export.model.vocos_features import (S3GEN_FEATURES, S3GEN_FEATURES_BEFORE_MOVE, S3GenMelFeatures, VocosMismatch, check_vocos_config,
                                         s3gen_vocos_config)
from s3gen_export.model.vocos_load import load_vocos, write_vocos
from s3gen_runtime.frontend import prompt_mel

# charactr/vocos-mel-24khz's published config.yaml (the model card's facts: 100 bins, hop 256, n_fft 1024,
# centred frames; torchaudio's HTK mel without norm up to 12 kHz underneath)
VOCOS_MEL_24KHZ = """\
feature_extractor:
  class_path: vocos.feature_extractors.MelSpectrogramFeatures
  init_args:
    sample_rate: 24000
    n_fft: 1024
    hop_length: 256
    n_mels: 100
    padding: center
backbone:
  class_path: vocos.models.VocosBackbone
  init_args:
    input_channels: 100
    dim: 512
    intermediate_dim: 1536
    num_layers: 8
head:
  class_path: vocos.heads.ISTFTHead
  init_args:
    dim: 512
    n_fft: 1024
    hop_length: 256
    padding: same
"""

PUBLIC_MISMATCHES = ["hop_length: 256", "n_fft: 1024", "win_length: 1024", "n_mels: 100", "mel_scale: 'htk'",
                     "mel_norm: 'none'", "f_max: 12000.0", "log: 'log(max(x, 1e-07))'",
                     "padding: 'reflect 512 each side, centred'", "magnitude: 'sqrt(re^2 + im^2)'",
                     "backbone.input_channels: 100", "head.hop_length: 256"]


def test_public_vocos_mel_24khz_is_refused_before_anything_is_written(tmp_path):
    vocos = tmp_path / "vocos-mel-24khz"
    vocos.mkdir()
    (vocos / "config.yaml").write_text(VOCOS_MEL_24KHZ)
    (vocos / "pytorch_model.bin").write_bytes(b"never read: the gate runs on the config")
    (tmp_path / "ckpt.safetensors").write_bytes(b"never read either")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "ckpt.safetensors"), "--out", str(tmp_path / "out"),
                                       "--vocoder", f"vocos:{vocos}"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "cannot vocode S3Gen's mels (12 settings differ" in lines[0]
    assert [next(l for l in lines[1:] if l.startswith(m)) for m in PUBLIC_MISMATCHES]   # StopIteration if absent
    assert len(lines) == 1 + len(PUBLIC_MISMATCHES)
    assert not (tmp_path / "out").exists()


def test_sample_rate_fmin_and_matching_settings_are_not_named():
    config = s3gen_vocos_config()
    config["feature_extractor"]["init_args"] = {"n_mels": 100, "f_max": 12000}
    with pytest.raises(VocosMismatch) as e:
        check_vocos_config(config)
    assert e.value.lines == ["n_mels: 100 (S3Gen's mel: 80)", "f_max: 12000.0 (S3Gen's mel: 8000.0)"]
    check_vocos_config(s3gen_vocos_config())   # the project's own feature class passes



def test_configs_naming_the_feature_class_before_the_move_still_pass():
    config = s3gen_vocos_config()
    assert config["feature_extractor"]["class_path"] == S3GEN_FEATURES
    config["feature_extractor"]["class_path"] = S3GEN_FEATURES_BEFORE_MOVE
    check_vocos_config(config)

@pytest.mark.parametrize("edit,line", [
    (lambda c: c["feature_extractor"].update(class_path="vocos.feature_extractors.EncodecFeatures"),
     "feature_extractor: 'vocos.feature_extractors.EncodecFeatures' is not a mel extractor"),
    (lambda c: c["head"].update(class_path="vocos.heads.IMDCTCosHead"), "head: 'vocos.heads.IMDCTCosHead'"),
    (lambda c: c["head"]["init_args"].update(padding="center"), "head.padding: 'center'"),
    (lambda c: c["backbone"]["init_args"].update(adanorm_num_embeddings=4), "backbone.adanorm_num_embeddings"),
])
def test_unexportable_models_are_refused(edit, line):
    config = s3gen_vocos_config()
    edit(config)
    with pytest.raises(VocosMismatch) as e:
        check_vocos_config(config)
    assert len(e.value.lines) == 1 and e.value.lines[0].startswith(line)


def test_vocoder_option():
    assert parse_vocoder_option("hift") is None
    assert str(parse_vocoder_option("vocos:/m")) == "/m"
    with pytest.raises(ValueError, match="'hift' or 'vocos:DIR'"):
        parse_vocoder_option("vocos:")


def test_s3gen_mel_features_equal_the_runtime_prompt_mel():
    # the runtime's prompt_mel is S3Gen's mel (checked against upstream in the frontend tests)
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, 24000).astype(np.float32)
    got = S3GenMelFeatures()(torch.from_numpy(audio)[None])[0].numpy()
    want = prompt_mel(audio).T
    assert got.shape == want.shape == (80, 50)
    assert np.max(np.abs(got - want)) < 1e-3


def test_load_checks_weights_strictly(tmp_path):
    folder = write_vocos(tmp_path / "v", s3gen_vocos_config(dim=64, intermediate_dim=128, num_layers=1))
    assert load_vocos(folder).record["parameters"] > 0
    bigger = s3gen_vocos_config(dim=64, intermediate_dim=128, num_layers=2)
    (folder / "config.yaml").write_text(json.dumps(bigger))   # YAML reads JSON
    with pytest.raises(RuntimeError, match="Missing key"):
        load_vocos(folder)


def test_exported_vocos_matches_the_vocos_package(vocos_artifacts):
    folder, vocos, data = vocos_artifacts
    record = data["components"]["vocoder"]
    assert [t["name"] for t in record["inputs"]] == ["mel", "mel_lengths"]
    assert [t["name"] for t in record["outputs"]] == ["wav"]
    assert record["validation"]["passed"]
    # batch 2 and 3 with unequal rows included: padding is inert (the reference runs each row alone)
    assert {c["name"] for c in record["validation"]["cases"]} >= {"b2_unequal_odd_even", "b3_mixed"}
    assert max(c["max_abs"]["wav"] for c in record["validation"]["cases"]) < 1e-5
    assert data["vocoder"]["kind"] == "vocos" and data["vocoder"]["source"] == vocos.name
    assert data["engines"] == [] or all(e["graph"] != "vocoder" for e in data["engines"])
    assert (folder / "vocoder.onnx").is_file() and not os.path.islink(folder / "vocoder.onnx")


"""The export-side CLI commands are thin wrappers: check their exit codes and messages."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from s3gen_cli.main import main


@pytest.mark.slow   # re-runs every graph's validation, as the session's export already did (~20 s)
def test_validate_passes_on_its_own_checkpoint(exported, synthetic_checkpoint):
    result = CliRunner().invoke(main, ["validate", str(exported("meanflow")),
                                       "--checkpoint", str(synthetic_checkpoint("meanflow"))])
    assert result.exit_code == 0, result.output
    assert "vocoder: PASS" in result.output


def test_validate_refuses_another_checkpoint(exported, synthetic_checkpoint):
    result = CliRunner().invoke(main, ["validate", str(exported("meanflow")),
                                       "--checkpoint", str(synthetic_checkpoint("standard"))])
    assert result.exit_code == 1
    assert "is not the checkpoint these artifacts were exported from" in result.output


def test_export_refuses_non_empty_folder(synthetic_checkpoint, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(main, ["export", str(synthetic_checkpoint("standard")), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "--force" in result.output


def test_export_reuse_from_a_folder_without_an_export_exits_1_naming_it(tmp_path):
    # Checked before the checkpoint is read.
    (tmp_path / "ckpt.safetensors").write_bytes(b"never read")
    (tmp_path / "stray").mkdir()
    result = CliRunner().invoke(main, ["export", str(tmp_path / "ckpt.safetensors"), "--out", str(tmp_path / "o"),
                                       "--reuse-from", str(tmp_path / "stray")])
    assert result.exit_code == 1, result.output
    assert f"--reuse-from {tmp_path / 'stray'}: not a complete s3gen-aot export" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("buckets,message", [
    ("256,abc", "'abc' in '256,abc' is not a whole number of mel frames"),
    ("256,", "'' in '256,' is not a whole number of mel frames"),
    ("512,256,9000", "bucket size is 9000 mel frames, over the encoder's positional table of 5000"),
    ("256,256", "bucket sizes must be unique"),
])
def test_export_bad_buckets_is_a_one_line_usage_error(tmp_path, buckets, message):
    # Checked while parsing options: no checkpoint is read and nothing is written.
    (tmp_path / "ckpt.safetensors").write_bytes(b"never read")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "ckpt.safetensors"), "--out", str(tmp_path / "o"),
                                       "--buckets", buckets])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Invalid value for '--buckets': "), result.stderr
    assert message in lines[0]
    assert not (tmp_path / "o").exists()


def test_synth_checkpoint_writes_a_loadable_file(tmp_path):
    out = tmp_path / "mf.safetensors"
    result = CliRunner().invoke(main, ["synth-checkpoint", str(out), "--meanflow", "--weight-norm", "weight_g"])
    assert result.exit_code == 0, result.output
    from s3gen_export.model.s3gen import load_s3gen
    assert load_s3gen(out).variant == "meanflow"

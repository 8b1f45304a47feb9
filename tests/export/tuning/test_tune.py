"""tune(): measures solver settings on the artifacts' own graphs and records the cheapest one that meets
the target in the manifest, which the runtime then uses as its default."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from s3gen_export.tuning.synthetic_requests import synthetic_tokens, synthetic_voice
from s3gen_export.tuning.tune import TuneError, tune
from s3gen_runtime.errors import InputError
from s3gen_runtime.manifest import Manifest, load_manifest
from s3gen_runtime.pipeline import S3GenRuntime, Settings
from s3gen_runtime.voice import save_voice

TARGET_DB = 20.0


def artifact_copy(src: Path, dst: Path) -> Path:
    """The graphs linked, manifest.json copied: tune rewrites only the manifest."""
    dst.mkdir(parents=True)
    for f in Path(src).iterdir():
        if f.name == "manifest.json":
            shutil.copyfile(f, dst / f.name)
        else:
            os.symlink(f.resolve(), dst / f.name)
    return dst


@pytest.fixture(scope="module")
def tuned(exported, tmp_path_factory):
    """One tune run on a copy of the standard artifacts with a tiny request read from files."""
    folder = artifact_copy(exported("standard"), tmp_path_factory.mktemp("tune") / "art")
    files = tmp_path_factory.mktemp("tune_inputs")
    voice_file = save_voice(synthetic_voice(4, seed=3), files / "voice.npz")
    tokens_file = files / "tokens.npy"
    np.save(tokens_file, synthetic_tokens(8, seed=5))
    lines: list[str] = []
    result = tune(folder, tokens=tokens_file, voice=voice_file, target_db=TARGET_DB, seeds=(0, 1), max_nfe=10,
                  progress=lines.append, reference_steps=4)
    return folder, result, lines


def test_tuning_is_recorded_and_strict_parseable(tuned, exported):
    folder, result, _ = tuned
    text = (folder / "manifest.json").read_text()
    Manifest.loads(text)   # the runtime's strict reader accepts it
    manifest = load_manifest(folder, verify=True)   # graph sha256s still hold
    tuning = manifest.tuning
    assert tuning is not None
    assert (tuning.solver, tuning.steps, tuning.cfg_rate, tuning.target_db) == (
        result["solver"], result["steps"], result["cfg_rate"], TARGET_DB)
    assert tuning.cfg_rate == pytest.approx(0.7)
    json.dumps(tuning.measured, allow_nan=False)   # finite numbers only
    # everything but the tuning is untouched
    original = json.loads((exported("standard") / "manifest.json").read_text())
    written = json.loads(text)
    assert {k: v for k, v in written.items() if k != "tuning"} == {k: v for k, v in original.items() if k != "tuning"}


def test_chosen_setting_meets_the_target_and_is_the_cheapest(tuned):
    folder, result, _ = tuned
    measured = load_manifest(folder, verify=False).tuning.measured
    rows = measured["rows"]
    chosen = [r for r in rows if (r["solver"], r["steps"]) == (result["solver"], result["steps"])]
    assert len(chosen) == 1
    assert chosen[0]["snr_db_vs_upstream"] >= TARGET_DB
    assert result["nfe"] == chosen[0]["nfe"]
    cheaper = [r for r in rows if r["nfe"] < chosen[0]["nfe"]]
    assert all(r["snr_db_vs_upstream"] < TARGET_DB for r in cheaper)
    same = [r for r in rows if r["nfe"] == chosen[0]["nfe"]]
    assert chosen[0]["snr_db_vs_upstream"] == max(r["snr_db_vs_upstream"] for r in same)
    for r in rows:
        assert np.isfinite([r["snr_db_vs_upstream"], r["snr_db_vs_converged"], r["seconds_per_utterance"]]).all()
    assert measured["upstream"] == {"solver": "euler", "steps": 10, "cfg_rate": 0.7, "nfe": 10}
    assert measured["request"]["prompt_tokens"] == 4 and measured["request"]["new_tokens"] == 8
    assert measured["seeds"] == [0, 1]
    assert any(r["upstream"] for r in rows)


def test_runtime_uses_the_tuning_as_its_default(tuned):
    folder, result, lines = tuned
    runtime = S3GenRuntime(folder)
    assert runtime.resolve() == Settings(result["solver"], result["steps"], 0.7)
    out = runtime.synthesize(synthetic_tokens(3), synthetic_voice(2), seed=0)
    assert out.nfe == result["nfe"]
    assert result["table"] in "\n".join(lines)   # the table was printed


def test_no_setting_within_max_nfe_raises_and_leaves_the_manifest(exported, tmp_path):
    folder = artifact_copy(exported("standard"), tmp_path / "art")
    before = (folder / "manifest.json").read_text()
    with pytest.raises(TuneError, match="max_nfe=2"):
        tune(folder, tokens=synthetic_tokens(4), voice=synthetic_voice(2), target_db=150.0, seeds=(0,), max_nfe=2,
             progress=lambda m: None, reference_steps=2)
    assert (folder / "manifest.json").read_text() == before


@pytest.mark.parametrize("kwargs", [{"target_db": 0}, {"target_db": "30"}, {"seeds": ()}, {"seeds": (-1,)},
                                    {"max_nfe": 0}, {"reference_steps": 1}])
def test_bad_arguments_are_refused_before_any_work(exported, kwargs):
    with pytest.raises(InputError):
        tune(exported("standard"), progress=lambda m: None, write=False, **kwargs)


def test_meanflow_only_tries_meanflow_steps(exported, tmp_path):
    folder = artifact_copy(exported("meanflow"), tmp_path / "art")
    result = tune(folder, tokens=synthetic_tokens(4), voice=synthetic_voice(2), target_db=TARGET_DB, seeds=(0,),
                  max_nfe=4, progress=lambda m: None, reference_steps=4)
    rows = load_manifest(folder, verify=True).tuning.measured["rows"]
    assert {r["solver"] for r in rows} == {"meanflow"}
    assert result["solver"] == "meanflow" and result["cfg_rate"] == 0.0 and result["steps"] <= 2
    assert S3GenRuntime(folder).resolve() == Settings("meanflow", result["steps"], 0.0)

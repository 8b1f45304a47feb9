"""Incremental, all-or-nothing export: graph keys, reuse, the staging swap, a killed export, worker errors."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s3gen_export.components import specs_for_variant
from s3gen_export.exporter import export_checkpoint, graph_keys, plan_jobs
from s3gen_export.graph_jobs import GraphJob, run_jobs
from s3gen_export.incremental import staging_folder, swap_in
from s3gen_runtime.errors import S3GenError
from s3gen_runtime.manifest import load_manifest

sys.path.insert(0, str(Path(__file__).parents[1] / "runtime"))
from pipeline_helpers import linked_copy  # noqa: E402

ALL = ["encoder", "estimator", "estimator_cfg", "speaker_encoder", "tokenizer", "vocoder"]


def test_unchanged_reexport_reuses_every_graph(exported, synthetic_checkpoint, tmp_path):
    out = linked_copy(exported("standard"), tmp_path / "out")
    before = load_manifest(out).components
    messages = []
    result = export_checkpoint(synthetic_checkpoint("standard"), out, progress=messages.append)
    assert result.reused == ALL
    assert any(m.startswith("reusing encoder, estimator_cfg, estimator") for m in messages)
    manifest = load_manifest(out, verify=True)
    assert {n: c.sha256 for n, c in manifest.components.items()} == {n: c.sha256 for n, c in before.items()}
    assert all(g.reused for g in manifest.export.graphs.values())
    assert not list(tmp_path.glob(".out.staging-*"))


VOICE_AND_HIFT = ["speaker_encoder", "tokenizer", "vocoder"]


def test_meanflow_links_in_the_graphs_it_shares_with_a_standard_export(exported, synthetic_checkpoint, tmp_path):
    """Folders named in reuse_from are searched in order: the graphs meanflow shares with standard (same
    weights, same spec) come from the first, stamped as meanflow's; its own encoder and estimator (linked)
    from the second. The runtime takes the folder, metadata checks included."""
    from s3gen_export.stages.onnx_export import read_metadata
    from s3gen_runtime.pipeline import S3GenRuntime

    standard, meanflow = exported("standard"), exported("meanflow")
    out = tmp_path / "out"
    messages = []
    result = export_checkpoint(synthetic_checkpoint("meanflow"), out, progress=messages.append,
                               reuse_from=(standard, meanflow))
    assert result.graphs == [] and sorted(result.reused) == ["encoder", "estimator", *VOICE_AND_HIFT]
    said = {m.removeprefix("reusing ").split(" of ")[0] for m in messages if m.startswith("reusing ")
            and m.endswith(f" of {standard} (same weights, spec, exporter and versions)")}
    assert [sorted(names.split(", ")) for names in said] == [VOICE_AND_HIFT]
    manifest = load_manifest(out, verify=True)
    assert manifest.checkpoint.variant == "meanflow" and set(manifest.components) == {"encoder", "estimator", *VOICE_AND_HIFT}
    for name, component in manifest.components.items():
        if name in VOICE_AND_HIFT:
            stamp = read_metadata(out / component.file)
            assert (stamp["variant"], stamp["checkpoint_sha256"]) == ("meanflow", manifest.checkpoint.sha256), name
            assert read_metadata(standard / component.file)["variant"] == "standard"
        else:
            assert os.path.samefile(out / component.file, meanflow / component.file), name
    assert all(g.reused for g in manifest.export.graphs.values())
    assert S3GenRuntime(out).manifest.checkpoint.variant == "meanflow"


def test_same_weights_in_another_file_reuse_every_graph_stamped_for_it(exported, synthetic_checkpoint, tmp_path):
    """A re-saved checkpoint (other bytes, same tensors) re-exported into the folder: every key is the same, so
    nothing is exported, but each graph now names the new file's sha256, which the runtime checks."""
    from safetensors.torch import load_file, save_file
    from s3gen_export.model.checkpoint import file_sha256
    from s3gen_export.stages.onnx_export import read_metadata
    from s3gen_runtime.pipeline import S3GenRuntime

    resaved = tmp_path / "resaved.safetensors"
    save_file(load_file(str(synthetic_checkpoint("standard"))), str(resaved), metadata={"note": "re-saved"})
    out = linked_copy(exported("standard"), tmp_path / "out")
    result = export_checkpoint(resaved, out, progress=lambda m: None)
    assert result.reused == ALL and result.graphs == []
    manifest = load_manifest(out, verify=True)
    assert manifest.checkpoint.sha256 == file_sha256(resaved)
    assert {read_metadata(out / c.file)["checkpoint_sha256"] for c in manifest.components.values()} == {
        file_sha256(resaved)}
    S3GenRuntime(out)


def test_reuse_from_a_folder_that_is_no_export_is_refused_by_name(synthetic_checkpoint, tmp_path):
    from s3gen_export.stages.graphs import ExportError

    (tmp_path / "stray").mkdir()
    with pytest.raises(ExportError, match=r"--reuse-from .*stray: not a complete s3gen-aot export"):
        export_checkpoint(synthetic_checkpoint("meanflow"), tmp_path / "out", reuse_from=(tmp_path / "stray",))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_keys_follow_weights_and_spec(synthetic_checkpoint):
    """A changed vocoder weight changes the vocoder's key alone; the two estimators share weights, not keys."""
    import torch

    from s3gen_export.model.s3gen import load_s3gen
    from s3gen_export.rewrites.transforms import prepare_for_export

    model = prepare_for_export(load_s3gen(synthetic_checkpoint("standard")))
    specs = specs_for_variant("standard")
    before = graph_keys(model, specs, int8=True)
    assert len(set(before.values())) == len(before)
    with torch.no_grad():
        model.mel2wav.conv_post.weight[0, 0, 0] += 1e-3
    after = graph_keys(model, specs, int8=True)
    assert [n for n in before if before[n] != after[n]] == ["vocoder"]


def test_plan_runs_what_is_not_reused(tmp_path):
    specs = specs_for_variant("standard")
    keys = {s.name: "k" for s in specs} | {"encoder_int8": "k", "estimator_int8": "k", "estimator_cfg_int8": "k"}
    reused = {"encoder", "encoder_int8", "estimator", "estimator_cfg", "vocoder"}
    jobs = plan_jobs(Path("c"), specs, keys, reused, tmp_path, {}, True, None)
    assert [(j.spec_name, j.int8, j.fp32_ready) for j in jobs] == [
        ("estimator_cfg", True, True), ("estimator", True, True)]


@pytest.mark.parametrize("exchange", [True, False])
def test_swap_replaces_the_folder_whole(tmp_path, monkeypatch, exchange):
    import s3gen_export.incremental as incremental

    if not exchange:
        monkeypatch.setattr(incremental, "_exchange", lambda a, b: False)
    out = tmp_path / "art"
    out.mkdir()
    (out / "old.onnx").write_text("old")
    staging = staging_folder(out)
    (staging / "new.onnx").write_text("new")
    swap_in(staging, out)
    assert sorted(p.name for p in out.iterdir()) == ["new.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_stale_staging_of_a_dead_run_is_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".art.staging-{dead.pid}"
    stale.mkdir()
    staging_folder(tmp_path / "art")
    assert not stale.exists()


def _export_then_kill(checkpoint: Path, out: Path, *options: str) -> None:
    """Start `s3gen-aot export`, kill -9 it a few seconds into its graph jobs."""
    cli = Path(sys.executable).parent / "s3gen-aot"
    proc = subprocess.Popen([str(cli), "export", str(checkpoint), "--out", str(out), "--jobs", "1", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in proc.stdout:
            if line.startswith("exporting "):
                break
        time.sleep(1)
        assert proc.poll() is None, "the export ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_killed_export_leaves_folders_as_they_were(exported, synthetic_checkpoint, tmp_path):
    checkpoint = synthetic_checkpoint("standard")
    valid = linked_copy(exported("standard"), tmp_path / "valid")
    before = load_manifest(valid).to_dict()
    _export_then_kill(checkpoint, valid, "--force")
    assert load_manifest(valid, verify=True).to_dict() == before   # still the folder it was
    fresh = tmp_path / "fresh"
    _export_then_kill(checkpoint, fresh)
    with pytest.raises(S3GenError):
        load_manifest(fresh, verify=True)                             # never a folder the runtime accepts
    result = export_checkpoint(checkpoint, valid, progress=lambda m: None)   # and a re-export goes on from it
    assert result.reused == ALL and load_manifest(valid, verify=True)
    assert not list(tmp_path.glob(".valid.staging-*"))


def test_a_worker_error_reaches_the_caller(synthetic_checkpoint, tmp_path):
    from s3gen_export.stages.graphs import ExportError

    jobs = [GraphJob(synthetic_checkpoint("standard"), name, tmp_path, {}) for name in ("no_such_graph", "nor_this")]
    with pytest.raises(ExportError, match="no graph '(no_such_graph|nor_this)' in a standard export; its graphs: enc"):
        run_jobs(jobs, workers=2, progress=lambda m: None)


def test_carry_over_keeps_the_users_files_not_the_old_graphs(exported, tmp_path):
    """Files no export wrote (an engine, a note) survive a re-export; graphs the old manifest recorded do not."""
    from s3gen_export.incremental import carry_over

    out = linked_copy(exported("standard"), tmp_path / "out", copy=("tokenizer.onnx",))
    (out / "engines").mkdir()
    (out / "engines" / "encoder_b256.plan").write_bytes(b"plan")
    (out / "notes.txt").write_text("mine")
    staging = staging_folder(out)
    assert carry_over(out, staging) == ["engines/encoder_b256.plan", "notes.txt"]


def test_default_jobs_follow_cores_and_available_memory(monkeypatch):
    import s3gen_export.graph_jobs as graph_jobs

    monkeypatch.setattr(graph_jobs.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(graph_jobs, "available_memory", lambda: 9 * 2**30)
    assert graph_jobs.default_jobs(6) == 2      # two workers' worth of memory
    assert graph_jobs.default_jobs(1) == 1      # never more workers than graphs
    monkeypatch.setattr(graph_jobs, "available_memory", lambda: 2**30)
    assert graph_jobs.default_jobs(6) == 1


def test_available_memory_counts_the_page_cache():
    from s3gen_export.graph_jobs import available_memory

    with open("/proc/meminfo") as f:
        fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    assert available_memory() >= fields["MemFree"] - 256 * 2**20

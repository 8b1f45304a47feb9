"""The exported artifacts of the synthetic checkpoint: manifest, metadata, no random ops, the three
graphs run with the golden loop reproduce the golden files, padding is inert, and errors are clear."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from s3gen_export.components import specs_for_variant
from s3gen_export.components.base import Case
from s3gen_export.exporter import check_output_folder, export_checkpoint
from s3gen_export.stages.graphs import ExportError
from s3gen_export.stages.onnx_export import random_ops, read_metadata
from s3gen_runtime.audio import apply_trim_fade
from s3gen_runtime.manifest import SCHEMA_VERSION, load_manifest, sha256_file
from s3gen_runtime.solvers import cosine_grid, linear_grid

GOLDEN = {"standard": "s3gen_p25_n35_seed0.npz", "meanflow": "s3gen_meanflow_p25_n35_seed0.npz"}
# the synthetic checkpoint carries the voice models, so both variants also get the two voice graphs
VOICE = {"speaker_encoder", "tokenizer"}
GRAPHS = {"standard": {"encoder", "estimator_cfg", "estimator", "vocoder"} | VOICE,
          "meanflow": {"encoder", "estimator", "vocoder"} | VOICE}


def session(folder, name):
    return ort.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("variant", ["standard", "meanflow"])
def test_manifest_records_every_graph(exported, synthetic_checkpoint, variant):
    folder = exported(variant)
    manifest = load_manifest(folder)   # strict parse + sha256 of every file
    assert set(manifest.components) == GRAPHS[variant]
    assert manifest.checkpoint.variant == variant
    assert manifest.checkpoint.sha256 == sha256_file(synthetic_checkpoint(variant))
    assert [b.mel_frames for b in manifest.buckets] == [256, 512, 1024, 2048, 4096]
    assert manifest.has_voice
    for spec in specs_for_variant(variant, voice=True):
        record = manifest.component(spec.name)
        assert record.validation.passed and record.precision == "fp32"
        names = [c.name for c in record.validation.cases]
        # CAMPPlus pools over all frames: equal-length batches only; the flow graphs cover odd prompts
        wanted = {"speaker_encoder": {"b3_equal"}, "tokenizer": {"b2_unequal"}}.get(
            spec.name, {"b1_short_odd", "b2_unequal_odd_even"})
        assert len(names) >= 3 and wanted <= set(names)
        assert [t.name for t in record.inputs] == spec.input_names
        meta = read_metadata(folder / record.file)
        assert meta["component"] == spec.name and meta["spec_hash"] == record.spec_hash == spec.spec_hash()
        assert meta["variant"] == variant and meta["checkpoint_sha256"] == manifest.checkpoint.sha256


@pytest.mark.parametrize("variant", ["standard", "meanflow"])
def test_no_random_ops_in_any_graph(exported, variant):
    folder = exported(variant)
    for name in GRAPHS[variant]:
        assert random_ops(folder / f"{name}.onnx") == []


@pytest.mark.parametrize("variant", ["standard", "meanflow"])
def test_no_float64_tensor_in_any_graph(exported, variant):
    """TensorRT has no float64 (its parser refuses the graph); the vocoder's sine phase once was one."""
    import onnx
    from onnx import TensorProto
    folder = exported(variant)
    for name in GRAPHS[variant]:
        model = onnx.shape_inference.infer_shapes(onnx.load(folder / f"{name}.onnx"))
        g = model.graph
        doubles = [v.name for v in list(g.input) + list(g.output) + list(g.value_info)
                   if v.type.tensor_type.elem_type == TensorProto.DOUBLE]
        doubles += [i.name for i in g.initializer if i.data_type == TensorProto.DOUBLE]
        doubles += [n.name for n in g.node for a in n.attribute
                    if (a.name == "to" and a.i == TensorProto.DOUBLE) or (a.HasField("t") and a.t.data_type == TensorProto.DOUBLE)]
        assert doubles == [], f"{name}: float64 tensors {doubles[:5]}"


@pytest.mark.parametrize("variant, name", [*GOLDEN.items(), ("standard", "voice/voice_espeak_enus_22k.npz"),
                                           ("standard", "voice/voice_aishell_16k.npz")])
def test_graphs_with_golden_loop_reproduce_golden(exported, golden, variant, name):
    """encoder -> upstream's Euler loop in numpy around the estimator graph -> vocoder -> fade. The
    voice files are upstream-prepared voices: F = 2P + 1 (espeak, 2N - 1 frames vocoded) and F = 2P."""
    g = np.load(golden(name))
    folder = exported(variant)
    n_prompt, n_new, n_feat = g["prompt_token"].shape[1], g["speech_tokens"].shape[1], g["prompt_feat"].shape[1]
    enc = dict(zip(["mu", "mask", "spks", "cond"], session(folder, "encoder").run(None, {
        "tokens": g["speech_tokens"], "token_lengths": np.array([n_new]),
        "prompt_tokens": g["prompt_token"], "prompt_lengths": np.array([n_prompt]),
        "prompt_feat": g["prompt_feat"], "prompt_feat_lengths": np.array([n_feat]), "embedding": g["embedding"]})))
    assert np.abs(enc["mu"] - g["mu"]).max() <= 1e-4 and np.abs(enc["spks"] - g["spks"]).max() <= 1e-4
    assert np.array_equal(enc["cond"], g["cond"]) and np.array_equal(enc["mask"], g["mask"])
    n = int(g["n_timesteps"])
    meanflow = variant == "meanflow"
    grid = linear_grid(n) if meanflow else cosine_grid(n)
    est = session(folder, "estimator" if meanflow else "estimator_cfg")
    x = g["z"].astype(np.float32)
    for t, r in zip(grid[:-1], grid[1:]):
        feeds = {"x": x, "t": np.array([t], np.float32), **{k: enc[k] for k in ("mask", "mu", "spks", "cond")}}
        feeds.update({"r": np.array([r], np.float32)} if meanflow else {"cfg_rate": np.array([0.7], np.float32)})
        x = x + (r - t) * est.run(None, feeds)[0]
    mel = x[:, :, n_feat:]   # upstream cuts at F, not 2P
    assert np.abs(mel - g["mel"]).max() <= 1e-3
    wav, f0 = session(folder, "vocoder").run(None, {"mel": mel, "mel_lengths": np.array([mel.shape[2]]),
                                                    "sine_phase": g["sine_phase"], "sine_noise": g["sine_noise"]})
    assert np.abs(f0 - g["f0"]).max() <= 1e-3
    assert np.abs(apply_trim_fade(wav) - g["wav"]).max() <= 2e-3


def _row_alone_vs_padded(spec, folder, rows, frames_of):
    """Run each row alone and all rows as one padded batch; max error over each row's valid frames."""
    sess = session(folder, spec.name)
    rng = np.random.default_rng(7)
    batch_feeds = spec.make_inputs(Case("batch", rows), rng)
    batch_out = dict(zip(spec.output_names, sess.run(None, batch_feeds)))
    worst = 0.0
    for b, row in enumerate(rows):
        alone = {}
        for t in spec.inputs:
            v = batch_feeds[t.name][b:b + 1]
            # cut the padding off: axis sizes of the row alone
            for axis, name in enumerate(t.shape):
                if isinstance(name, str) and axis > 0:
                    v = np.take(v, np.arange(frames_of(name, row)), axis=axis)
            alone[t.name] = v
        out = dict(zip(spec.output_names, sess.run(None, alone)))
        for name in spec.output_names:
            a = out[name]
            got = batch_out[name][b:b + 1][(slice(None),) * (a.ndim - 1) + (slice(0, a.shape[-1]),)]
            worst = max(worst, float(np.abs(got - a).max()))
    return worst


def _frames(axis, row):
    """A Case row (P, N) or (P, N, F)'s size on a named axis."""
    p, n = row[:2]
    f = row[2] if len(row) > 2 else 2 * p
    return {"tokens": n, "prompt_tokens": p, "prompt_frames": f, "frames": 2 * (p + n),
            "mel_frames": 2 * (p + n) - f, "samples": 480 * (2 * (p + n) - f)}[axis]


def test_padding_is_inert_in_encoder_and_estimator(exported):
    folder = exported("standard")
    rows = ((12, 30, 25), (25, 9), (5, 17, 11))   # odd prompts (F = 2P + 1) beside an even one
    specs = {s.name: s for s in specs_for_variant("standard")}
    assert _row_alone_vs_padded(specs["encoder"], folder, rows, _frames) <= 1e-4
    # the estimator's conditioning is random per row here; mask/cond come from the same lengths
    assert _row_alone_vs_padded(specs["estimator_cfg"], folder, rows, _frames) <= 1e-3


def test_vocoder_padding_error_is_measured_small(exported):
    """Each conv sees zeros past the row, STFT reflects at the row's end and the ISTFT normalises by
    the row's own window envelope, so a padded row matches the row alone up to fp32 reassociation
    (measured 1.4e-4 on the waveform, from the different conv shapes; the wav tolerance is 2e-3)."""
    spec = {s.name: s for s in specs_for_variant("standard")}["vocoder"]
    assert _row_alone_vs_padded(spec, exported("standard"), ((0, 20), (1, 7, 3)), _frames) <= 1e-3


def test_export_refuses_non_empty_folder_without_force(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        check_output_folder(tmp_path, force=False)
    check_output_folder(tmp_path, force=True)


def test_export_refuses_unreadable_checkpoint(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    from s3gen_export.model.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        export_checkpoint(bad, tmp_path / "out", progress=lambda m: None)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown S3Gen variant"):
        specs_for_variant("turbo-xl")


def _failing_jobs(source):
    """A run_jobs stand-in: every job's graph is the file of `source`, and every validation misses."""
    import shutil

    from s3gen_export.graph_jobs import BuiltGraph
    from s3gen_export.stages.validate import CaseResult, ValidationReport

    def run(jobs, workers, progress=print, model=None):
        built = []
        for job in jobs:
            shutil.copy(source / f"{job.spec_name}.onnx", job.folder / f"{job.spec_name}.onnx")
            report = ValidationReport(job.spec_name, [CaseResult("forced", problems=["forced miss"])], {})
            built.append(BuiltGraph(job.spec_name, job.spec_name, f"{job.spec_name}.onnx", "fp32", report, 0.0, 0.0))
        return built
    return run


def test_tolerance_miss_fails_export_without_manifest(exported, synthetic_checkpoint, tmp_path, monkeypatch):
    """A validation miss raises and leaves no manifest (so the runtime cannot load the folder)."""
    import s3gen_export.exporter as exporter

    monkeypatch.setattr(exporter, "run_jobs", _failing_jobs(exported("standard")))
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="validation failed"):
        export_checkpoint(synthetic_checkpoint("standard"), out, progress=lambda m: None)
    assert not (out / "manifest.json").exists()


def test_tolerance_miss_leaves_a_valid_folder_as_it_was(exported, synthetic_checkpoint, tmp_path, monkeypatch):
    """A forced re-export over valid artifacts that fails validation changes nothing in them."""
    import sys
    from pathlib import Path

    import s3gen_export.exporter as exporter
    sys.path.insert(0, str(Path(__file__).parents[1] / "runtime"))
    from pipeline_helpers import linked_copy

    out = linked_copy(exported("standard"), tmp_path / "out")
    before = load_manifest(out).to_dict()
    monkeypatch.setattr(exporter, "run_jobs", _failing_jobs(exported("standard")))
    with pytest.raises(ExportError, match="unchanged"):
        export_checkpoint(synthetic_checkpoint("standard"), out, force=True, progress=lambda m: None)
    assert load_manifest(out, verify=True).to_dict() == before


def test_manifest_is_json_with_schema_version(exported):
    data = json.loads((exported("meanflow") / "manifest.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["versions"]["torch"].startswith("2.13")


class _Stop(Exception):
    """Ends an export once its graphs would have been written."""


@pytest.fixture(scope="module")
def flow_only_checkpoint(tmp_path_factory):
    from s3gen_export.model.s3gen import expected_layout
    from s3gen_export.model.synthetic import write_synthetic_checkpoint

    return write_synthetic_checkpoint(tmp_path_factory.mktemp("flow_only") / "flow_only.safetensors",
                                      expected_layout("standard"))


def graphs_written(monkeypatch, checkpoint, out, **options):
    """Run export_checkpoint with the graph jobs replaced by a recorder; stop before they would run: which
    specs would be written (name -> spec), and the progress messages."""
    from s3gen_export import exporter
    from s3gen_export.graph_jobs import job_spec

    written = {}

    def record(jobs, workers, progress=print, model=None):
        written.update({job.spec_name: job_spec(job, model) for job in jobs})
        raise _Stop

    monkeypatch.setattr(exporter, "run_jobs", record)
    messages = []
    with pytest.raises(_Stop):
        exporter.export_checkpoint(checkpoint, out, progress=messages.append, **options)
    return written, messages


def test_checkpoint_without_voice_models_exports_no_voice_graphs(flow_only_checkpoint, tmp_path, monkeypatch):
    """A checkpoint without speaker_encoder.*/tokenizer.* exports the flow graphs only, and says so."""
    written, messages = graphs_written(monkeypatch, flow_only_checkpoint, tmp_path / "out")
    assert list(written) == ["encoder", "estimator_cfg", "estimator", "vocoder"]
    assert any("no voice graphs" in m for m in messages)


def test_vocos_option_replaces_the_vocoder_spec(flow_only_checkpoint, tmp_path, monkeypatch):
    """export --vocoder vocos:DIR: the Vocos model's spec takes the vocoder's place (no sine inputs)."""
    from s3gen_export.model.vocos_features import s3gen_vocos_config
    from s3gen_export.model.vocos_load import write_vocos

    vocos = write_vocos(tmp_path / "vocos", s3gen_vocos_config(dim=64, intermediate_dim=128, num_layers=1))
    written, _ = graphs_written(monkeypatch, flow_only_checkpoint, tmp_path / "out", vocos=vocos)
    assert list(written) == ["encoder", "estimator_cfg", "estimator", "vocoder"]
    assert written["vocoder"].input_names == ["mel", "mel_lengths"]

"""The two voice graphs of the session's export of the synthetic checkpoint (tests/conftest.py), checked against
eager PyTorch on the voice weights alone: at the specs' cases, against the voice golden files, and at lengths
the export never saw (T not divisible by 4 included)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from s3gen_export.components import VOICE_SPECS, specs_for_variant
from s3gen_export.components import speaker_encoder, tokenizer
from s3gen_export.stages.graphs import ExportedGraph
from s3gen_export.stages.onnx_export import random_ops, read_metadata
from s3gen_export.stages.quantize import quantize_graphs
from s3gen_export.stages.validate import onnx_session, validate_component
from s3gen_runtime.fsq import fsq_tokens

VOICE_GOLDEN_FILES = ("voice/voice_aishell_16k.npz", "voice/voice_espeak_enus_22k.npz")
BOUNDARY_MARGIN = 1e-4


@pytest.fixture(scope="module")
def voice_graphs(exported):
    """{name: (spec, path)} of both graphs, as the session's standard export wrote them."""
    return {s.name: (s, exported("standard") / f"{s.name}.onnx") for s in VOICE_SPECS}


@pytest.fixture(scope="module")
def sessions(voice_graphs):
    return {name: onnx_session(path) for name, (_, path) in voice_graphs.items()}


def test_specs_declare_the_voice_io():
    se, tok = speaker_encoder.SPEC, tokenizer.SPEC
    assert (se.input_names, se.output_names) == (["fbank"], ["embedding"])
    assert (tok.input_names, tok.output_names) == (["mel", "mel_lengths"], ["fsq", "fsq_lengths"])
    assert [t.dtype for t in tok.inputs + tok.outputs] == ["float32", "int64", "float32", "int64"]
    assert se.tolerances["embedding"].atol == 1e-5 and tok.tolerances["fsq"].atol == 1e-4
    assert se.fp32_only and tok.fp32_only
    # CAMPPlus pools over all frames: its cases never pad a row
    assert all(len({r[0] for r in c.rows}) == 1 for c in se.validation_cases + (se.export_case,))
    assert any(c.batch == 1 for c in se.validation_cases) and any(c.batch > 1 for c in se.validation_cases)
    assert any(r[0] % 4 for c in tok.validation_cases for r in c.rows)
    with pytest.raises(ValueError, match="equal length"):
        speaker_encoder.make_inputs(tokenizer.VALIDATION_CASES[2], np.random.default_rng(0))


def test_voice_specs_only_with_voice():
    for variant in ("standard", "meanflow"):
        assert not {"speaker_encoder", "tokenizer"} & {s.name for s in specs_for_variant(variant)}
        assert specs_for_variant(variant, voice=True)[-2:] == VOICE_SPECS


@pytest.mark.parametrize("name", ["speaker_encoder", "tokenizer"])
def test_graph_validates_against_eager(voice_models, voice_graphs, name):
    spec, path = voice_graphs[name]
    report = validate_component(voice_models, spec, path)
    print("\n" + report.table())
    assert report.passed, report.table()
    assert random_ops(path) == []
    assert read_metadata(path)["component"] == name


def test_int8_pass_skips_voice_graphs(voice_models, voice_graphs, tmp_path):
    graphs = [ExportedGraph(spec, path) for spec, path in voice_graphs.values()]
    assert quantize_graphs(voice_models, graphs, tmp_path, progress=lambda m: None) == []


@pytest.mark.parametrize("name", VOICE_GOLDEN_FILES)
def test_graphs_reproduce_golden(golden, voice_models, sessions, name):
    g = np.load(golden(name))
    (emb,) = sessions["speaker_encoder"].run(["embedding"], {"fbank": g["fbank"]})
    fsq, fsq_len = sessions["tokenizer"].run(["fsq", "fsq_lengths"], {"mel": g["mel128"], "mel_lengths": g["mel128_len"]})
    with torch.inference_mode():
        eager_emb = voice_models.speaker_encoder(torch.from_numpy(g["fbank"])).numpy()
        eager_fsq = voice_models.tokenizer(torch.from_numpy(g["mel128"]), torch.from_numpy(g["mel128_len"]))[0].numpy()
    errors = {"embedding vs golden": float(np.abs(emb - g["embedding"]).max()),
              "embedding vs eager": float(np.abs(emb - eager_emb).max()),
              "fsq vs golden": float(np.abs(fsq - g["tokenizer_fsq"]).max()),
              "fsq vs eager": float(np.abs(fsq - eager_fsq).max())}
    print(f"\n{name}: " + ", ".join(f"{k} {v:.3g}" for k, v in errors.items()))
    assert errors["embedding vs golden"] <= 1e-5 and errors["embedding vs eager"] <= 1e-5
    assert errors["fsq vs golden"] <= 1e-4 and errors["fsq vs eager"] <= 1e-4
    np.testing.assert_array_equal(fsq_len, g["tokenizer_token_len"])
    tokens, _ = fsq_tokens(fsq)
    _, near = fsq_tokens(g["tokenizer_fsq"], BOUNDARY_MARGIN)
    assert int(np.sum((tokens != g["tokenizer_tokens"]) & ~near)) == 0


@pytest.mark.parametrize("frames", [5, 38, 1001, 1203])
def test_graphs_take_any_length(voice_models, sessions, frames):
    """Lengths the export never saw, odd and not divisible by 4: ceil(T / 4) FSQ rows, eager-equal."""
    rng = np.random.default_rng(frames)
    mel = rng.uniform(-1.0, 1.5, (1, 128, frames)).astype(np.float32)
    lengths = np.array([frames], np.int64)
    fsq, fsq_len = sessions["tokenizer"].run(None, {"mel": mel, "mel_lengths": lengths})
    with torch.inference_mode():
        ref = voice_models.tokenizer(torch.from_numpy(mel), torch.from_numpy(lengths))[0].numpy()
    assert fsq.shape == (1, -(-frames // 4), 8) and fsq_len.tolist() == [-(-frames // 4)]
    assert float(np.abs(fsq - ref).max()) <= 1e-4
    fbank = rng.standard_normal((1, frames, 80)).astype(np.float32)
    (emb,) = sessions["speaker_encoder"].run(None, {"fbank": fbank})
    with torch.inference_mode():
        ref_emb = voice_models.speaker_encoder(torch.from_numpy(fbank)).numpy()
    assert float(np.abs(emb - ref_emb).max()) <= 1e-5

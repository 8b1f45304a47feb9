"""Checkpoint key handling on the full upstream key set (shape-only meta tensors: no memory, no maths),
and one full-size synthetic checkpoint round trip (slow)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from s3gen_export.model.checkpoint import (
    check_state_dict,
    convert_weight_norm,
    detect_variant,
    drop_computed_buffers,
    load_checkpoint,
    to_parametrized_weight_norm,
)
from s3gen_export.model.synthetic import layout_from_json, synthetic_state_dict, write_synthetic_checkpoint

LAYOUT = Path(os.environ.get("S3GEN_GOLDEN_DIR", "/nonexistent")) / "s3gen_state_dict.json"
TOKENIZER_LAYOUT = LAYOUT.with_name("s3gen_tokenizer_state_dict.json")
G = ".parametrizations.weight.original0"   # the weight-norm magnitude in upstream files


@pytest.fixture(scope="module")
def golden_layouts():
    if not LAYOUT.exists():
        pytest.skip(f"golden layout not found: {LAYOUT}")
    with open(LAYOUT, encoding="utf-8") as f:
        data = json.load(f)
    with open(TOKENIZER_LAYOUT, encoding="utf-8") as f:
        tokenizer = json.load(f)
    # an upstream file: flow, mel2wav, speaker_encoder and tokenizer entries
    return {v: {**layout_from_json(data, v), **layout_from_json(tokenizer, v)} for v in ("standard", "meanflow")}


def _meta_state_dict(layout):
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    return {k: torch.empty(shape, dtype=dtypes[dt], device="meta") for k, (shape, dt) in layout.items()}


@pytest.mark.parametrize("variant", ["standard", "meanflow"])
@pytest.mark.parametrize("form", ["parametrizations", "weight_g", "folded"])
def test_full_key_set_normalises(golden_layouts, variant, form):
    model_layouts = {v: {k: s for k, (s, _) in lay.items()} for v, lay in golden_layouts.items()}
    file_sd = _meta_state_dict(golden_layouts[variant])
    file_sd["tokenizer._mel_filters"] = torch.empty(128, 201, device="meta")
    file_sd = convert_weight_norm(file_sd, form)
    n_wn = sum(k.endswith(G) for k in golden_layouts[variant])
    assert n_wn > 50
    if form != "parametrizations":
        assert not any(k.endswith(G) for k in file_sd)

    kept = drop_computed_buffers(file_sd)
    assert set(file_sd) - set(kept) == {"tokenizer._mel_filters"}
    assert detect_variant(kept) == variant
    expected = model_layouts[variant]
    sd = to_parametrized_weight_norm(kept, expected.keys())
    check_state_dict(sd, expected)
    assert set(sd) == set(expected)


@pytest.mark.slow
def test_full_size_synthetic_round_trip(tmp_path, golden_layouts):
    """The whole standard synthetic checkpoint (~133M floats) written and read back unchanged."""
    layout = golden_layouts["standard"]
    path = write_synthetic_checkpoint(tmp_path / "s3gen_synthetic.safetensors", layout)

    def expected(variant):
        return {k: s for k, (s, _) in golden_layouts[variant].items() if k.startswith(("flow.", "mel2wav."))}

    voice = {k: s for k, (s, _) in layout.items() if not k.startswith(("flow.", "mel2wav."))}
    variant, sd = load_checkpoint(path, expected, voice_layout=voice)
    assert variant == "standard"
    ref = synthetic_state_dict(layout)
    assert sorted(sd) == sorted(ref)   # same keys; the loader orders flow keys before the voice models
    for k, a in ref.items():
        assert np.array_equal(sd[k].numpy(), a), k

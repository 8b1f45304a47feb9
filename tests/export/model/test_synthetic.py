"""The synthetic checkpoint recipe: bit-identical to the shared reference recipe."""
from __future__ import annotations

import os
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from s3gen_export.model.synthetic import (
    SYNTHESISED_PREFIXES,
    layout_from_json,
    synthetic_state_dict,
    synthetic_tensor,
    uniform,
)

GOLDEN = Path(os.environ.get("S3GEN_GOLDEN_DIR", "/nonexistent"))
RECIPE = GOLDEN / "synthetic_weights.py"
LAYOUT = GOLDEN / "s3gen_state_dict.json"


@pytest.fixture(scope="module")
def ref():
    """The shared reference recipe, imported from its path (tests only)."""
    if not RECIPE.exists():
        pytest.skip(f"reference recipe not found: {RECIPE}")
    spec = importlib.util.spec_from_file_location("_golden_synthetic_weights", RECIPE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def layout_json():
    if not LAYOUT.exists():
        pytest.skip(f"golden layout not found: {LAYOUT}")
    with open(LAYOUT, encoding="utf-8") as f:
        return json.load(f)


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b) and a.tobytes() == b.tobytes()


# --- pinned values: hold even without the reference file --------------------


def test_uniform_pinned_values():
    u = uniform("flow.encoder_proj.weight", 4)
    assert u.dtype == np.float64
    assert u.tolist() == [-0.2743385974680683, 0.4825086933136702, -0.536506917944324, -0.1329562372800046]


def test_synthetic_tensor_pinned_values():
    g = synthetic_tensor("mel2wav.conv_pre.parametrizations.weight.original0", (3, 1, 1))
    assert g.dtype == np.float32 and g.shape == (3, 1, 1)
    assert g.ravel().tolist() == [0.8885120153427124, 0.971466064453125, 1.093228816986084]


def test_uniform_range_and_prefix_stability():
    u = uniform("some.key", 10_000)
    assert u.min() >= -1.0 and u.max() < 1.0
    assert abs(u.mean()) < 0.05
    # value i depends only on (key, i): a longer draw extends a shorter one
    assert np.array_equal(uniform("some.key", 10), u[:10])
    assert not np.array_equal(uniform("other.key", 10), u[:10])
    assert uniform("k", 0).shape == (0,)


# --- against the reference recipe --------------------------------------------

RULE_SAMPLES = [
    # (key, shape, dtype): one or more per rule
    ("speaker_encoder.head.bn1.num_batches_tracked", (), "int64"),  # integer -> zeros
    ("speaker_encoder.head.bn1.running_var", (32,), "float32"),
    ("speaker_encoder.head.bn1.running_mean", (32,), "float32"),
    ("mel2wav.conv_pre.parametrizations.weight.original0", (512, 1, 1), "float32"),
    ("mel2wav.conv_pre.weight_g", (512, 1, 1), "float32"),
    ("mel2wav.conv_pre.bias", (512,), "float32"),
    ("flow.encoder_proj.weight", (80, 512), "float32"),  # 2-D weight
    ("mel2wav.conv_pre.parametrizations.weight.original1", (512, 80, 7), "float32"),  # 3-D
    ("mel2wav.conv_pre.weight_v", (512, 80, 7), "float32"),
    ("mel2wav.resblocks.0.activations1.0.alpha", (256,), "float32"),  # 1-D gain
    ("flow.encoder.after_norm.weight", (512,), "float32"),  # 1-D LayerNorm weight
    ("scalar.gain", (), "float32"),  # 0-d float
]


@pytest.mark.parametrize("key,shape,dtype", RULE_SAMPLES, ids=[k for k, _, _ in RULE_SAMPLES])
def test_rules_match_reference(ref, key, shape, dtype):
    ours = synthetic_tensor(key, shape, dtype)
    theirs = ref.synthetic_tensor(key, shape, np.dtype(dtype))
    assert _bits_equal(ours, theirs)


def test_integer_entries_are_zeros():
    z = synthetic_tensor("x.num_batches_tracked", (), "int64")
    assert z.dtype == np.int64 and z.shape == () and z == 0


def test_rule_magnitudes():
    assert np.all(synthetic_tensor("a.running_var", (1000,)) >= 1.0)
    assert np.all(np.abs(synthetic_tensor("a.running_mean", (1000,))) <= 0.1)
    g = synthetic_tensor("a.weight_g", (1000, 1, 1))
    assert g.min() >= 0.8 and g.max() <= 1.2
    assert np.all(np.abs(synthetic_tensor("a.bias", (1000,))) <= 0.02)
    w = synthetic_tensor("a.weight", (10, 20, 3))
    assert np.abs(w).max() <= np.sqrt(3.0 / 60)
    a = synthetic_tensor("a.alpha", (1000,))
    assert a.min() >= 0.9 and a.max() <= 1.1


def test_uniform_matches_reference(ref):
    for key in ("", "flow.input_embedding.weight", "mel2wav.f0_predictor.classifier.bias", "ünïcode"):
        assert _bits_equal(uniform(key, 1000), ref.uniform(key, 1000))


def test_accepts_torch_style_dtype_strings():
    a = synthetic_tensor("flow.encoder_proj.bias", (80,), "torch.float32")
    assert _bits_equal(a, synthetic_tensor("flow.encoder_proj.bias", (80,), "float32"))


# --- whole state dicts ---------------------------------------------------------


def test_layout_from_json(layout_json):
    std = layout_from_json(LAYOUT, "standard")
    mf = layout_from_json(layout_json, "meanflow")
    assert std["mel2wav.conv_pre.parametrizations.weight.original1"] == ((512, 80, 7), "float32")
    assert set(mf) - set(std) == {"flow.decoder.estimator.time_embed_mixer.weight"}
    assert list(std) == list(layout_json["standard"])
    with pytest.raises(KeyError, match="no variant 'nope'"):
        layout_from_json(layout_json, "nope")


def test_state_dict_filters_and_orders():
    expected = {
        "speaker_encoder.head.bn1.num_batches_tracked": ((), "int64"),
        "mel2wav.conv_pre.bias": ((512,), "float32"),
        "tokenizer.x.weight": ((4, 4), "float32"),
        "tokenizer._mel_filters": ((128, 201), "float32"),   # computed by upstream, never synthesised
        "other.y": ((3,), "float32"),
        "flow.encoder_proj.weight": ((80, 512), "float32"),
    }
    sd = synthetic_state_dict(expected)
    assert list(sd) == ["speaker_encoder.head.bn1.num_batches_tracked", "mel2wav.conv_pre.bias",
                        "tokenizer.x.weight", "flow.encoder_proj.weight"]
    assert sd["speaker_encoder.head.bn1.num_batches_tracked"].dtype == np.int64
    assert sd["speaker_encoder.head.bn1.num_batches_tracked"] == 0
    assert all(k.startswith(SYNTHESISED_PREFIXES) for k in sd)
    assert sd["flow.encoder_proj.weight"].shape == (80, 512)
    assert sd["flow.encoder_proj.weight"].dtype == np.float32


def test_full_state_dict_matches_reference(ref, layout_json):
    """Every flow.*/mel2wav.*/speaker_encoder.* entry of the meanflow layout (a superset of standard), bit for bit."""
    layout = layout_from_json(layout_json, "meanflow")
    sd = synthetic_state_dict(layout)
    wanted = [k for k in layout if k.startswith(("flow.", "mel2wav.", "speaker_encoder."))]
    assert list(sd) == wanted
    for key in wanted:
        shape, dtype = layout[key]
        assert _bits_equal(sd[key], ref.synthetic_tensor(key, shape, np.dtype(dtype))), key
    n = sum(a.size for a in sd.values())
    assert n == sum(int(np.prod(layout[k][0])) for k in wanted)

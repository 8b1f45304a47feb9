"""Checkpoint I/O: formats, weight-norm forms, optional voice models, key checks, refusals."""
from __future__ import annotations

import os
import hashlib
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from s3gen_export.model.checkpoint import (
    MEANFLOW_KEY,
    CheckpointError,
    check_state_dict,
    convert_weight_norm,
    detect_variant,
    file_sha256,
    load_checkpoint,
    read_state_dict,
    drop_computed_buffers,
    has_voice,
    save_checkpoint,
    to_parametrized_weight_norm,
)
from s3gen_export.model.synthetic import synthetic_state_dict, write_synthetic_checkpoint

LAYOUT = Path(os.environ.get("S3GEN_GOLDEN_DIR", "/nonexistent")) / "s3gen_state_dict.json"

G = ".parametrizations.weight.original0"
V = ".parametrizations.weight.original1"
WN_PREFIXES = ("mel2wav.conv_pre", "mel2wav.ups.2", "mel2wav.conv_post")

# A small slice of the upstream layout (shapes as in s3gen_state_dict.json):
# a Linear, two weight-normed Conv1d, one weight-normed ConvTranspose1d, a Snake alpha.
SMALL_STANDARD: dict[str, tuple[tuple[int, ...], str]] = {
    "flow.encoder_proj.weight": ((80, 512), "float32"),
    "flow.encoder_proj.bias": ((80,), "float32"),
    "mel2wav.conv_pre.bias": ((512,), "float32"),
    "mel2wav.conv_pre" + G: ((512, 1, 1), "float32"),
    "mel2wav.conv_pre" + V: ((512, 80, 7), "float32"),
    "mel2wav.ups.2.bias": ((64,), "float32"),
    "mel2wav.ups.2" + G: ((128, 1, 1), "float32"),
    "mel2wav.ups.2" + V: ((128, 64, 7), "float32"),
    "mel2wav.resblocks.0.activations1.0.alpha": ((256,), "float32"),
    "mel2wav.conv_post.bias": ((18,), "float32"),
    "mel2wav.conv_post" + G: ((18, 1, 1), "float32"),
    "mel2wav.conv_post" + V: ((18, 64, 7), "float32"),
}
SMALL_MEANFLOW = {**SMALL_STANDARD, MEANFLOW_KEY: ((1024, 2048), "float32")}
SMALL_LAYOUTS = {"standard": SMALL_STANDARD, "meanflow": SMALL_MEANFLOW}

# the voice part of an upstream file: a small slice of the speaker encoder and tokenizer layouts
# (the tokenizer conv made small), and the tokenizer's computed buffers (optional, dropped)
VOICE_LAYOUT = {
    "speaker_encoder.head.bn1.weight": (32,),
    "speaker_encoder.head.bn1.running_var": (32,),
    "speaker_encoder.head.bn1.num_batches_tracked": (),
    "tokenizer.encoder.conv1.weight": (4, 3, 3),
}
VOICE_UPSTREAM = {
    "speaker_encoder.head.bn1.weight": torch.ones(32),
    "speaker_encoder.head.bn1.running_var": torch.ones(32),
    "speaker_encoder.head.bn1.num_batches_tracked": torch.tensor(0, dtype=torch.int64),
    "tokenizer.encoder.conv1.weight": torch.zeros(4, 3, 3),
}
COMPUTED = {"tokenizer._mel_filters": torch.zeros(128, 201), "tokenizer.window": torch.ones(400)}


def small_expected(variant: str) -> dict[str, tuple[int, ...]]:
    return {k: shape for k, (shape, _) in SMALL_LAYOUTS[variant].items()}


def small_tensors(variant: str = "standard") -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(a) for k, a in synthetic_state_dict(SMALL_LAYOUTS[variant]).items()}


def effective(sd, prefix):
    return torch._weight_norm(sd[prefix + V], sd[prefix + G], 0)


class NotATensor:
    """A custom class: pickling an instance needs an unsafe unpickler to load."""

    def __init__(self):
        self.payload = [1, 2, 3]


# --- round trips -----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("form", ["parametrizations", "weight_g", "folded"])
def test_round_trip(tmp_path, form, suffix):
    ref = small_tensors()
    path = write_synthetic_checkpoint(tmp_path / f"ckpt{suffix}", SMALL_STANDARD, weight_norm=form)
    assert path.exists()

    raw = read_state_dict(path)
    for p in WN_PREFIXES:  # the file is really in the requested form
        names = {"parametrizations": (p + G, p + V), "weight_g": (p + ".weight_g", p + ".weight_v"), "folded": (p + ".weight",)}
        assert all(n in raw for n in names[form]), (form, p, sorted(raw))
        assert not any(n in raw for f, ns in names.items() if f != form for n in ns)

    variant, sd = load_checkpoint(path, small_expected)
    assert variant == "standard"
    assert list(sd) == list(SMALL_STANDARD)
    assert all(t.dtype == torch.float32 for t in sd.values())
    for name, t in sd.items():
        assert tuple(t.shape) == SMALL_STANDARD[name][0]
    for name in SMALL_STANDARD:
        if form != "folded" or not name.startswith(WN_PREFIXES) or name.endswith(".bias"):
            assert torch.equal(sd[name], ref[name]), name
    if form == "folded":
        for p in WN_PREFIXES:
            want, got = effective(ref, p), effective(sd, p)
            rel = (got - want).norm() / want.norm()
            assert rel < 1e-6, (p, float(rel))
            assert (got - want).abs().max() <= 1e-6 * want.abs().max()
            # the loaded g is the norm of the folded weight, shaped like the model's
            assert sd[p + G].shape == ref[p + G].shape


def test_weight_norm_conversion_is_exact_for_renames():
    ref = small_tensors()
    for form in ("parametrizations", "weight_g"):
        back = to_parametrized_weight_norm(convert_weight_norm(ref, form), SMALL_STANDARD)
        assert set(back) == set(ref)
        assert all(torch.equal(back[k], ref[k]) for k in ref)


def test_folded_weight_is_torch_weight_norm(tmp_path):
    conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(3, 4, 5))
    sd = {"m." + k: v.detach() for k, v in conv.state_dict().items()}
    folded = convert_weight_norm(sd, "folded")
    assert set(folded) == {"m.weight", "m.bias"}
    assert torch.equal(folded["m.weight"], conv.weight.detach())
    # and back: g = ||w|| over all but dim 0, v = w
    back = to_parametrized_weight_norm(folded, sd.keys())
    assert back["m" + G].shape == (4, 1, 1)
    torch.testing.assert_close(back["m" + G], torch.linalg.vector_norm(conv.weight.detach(), dim=(1, 2), keepdim=True))
    assert torch.equal(back["m" + V], folded["m.weight"])


def test_conversion_only_where_model_is_parametrized():
    w = torch.randn(4, 3, 5)
    # the model itself has a plain .weight: leave it
    assert to_parametrized_weight_norm({"m.weight": w}, ["m.weight"]) == {"m.weight": w}
    # the model's names are there already: leave the extra folded weight for the key check to report
    sd = {"m" + G: torch.ones(4, 1, 1), "m" + V: w, "m.weight": w}
    out = to_parametrized_weight_norm(sd, ["m" + G, "m" + V])
    assert set(out) == set(sd)
    # no weight-norm entries expected at all: nothing changes
    out = to_parametrized_weight_norm({"m.weight_g": torch.ones(4, 1, 1), "m.weight_v": w}, ["x.weight"])
    assert set(out) == {"m.weight_g", "m.weight_v"}


def test_convert_weight_norm_rejects_unknown_form():
    with pytest.raises(ValueError, match="weight_norm must be one of"):
        convert_weight_norm({}, "spectral")


def test_pth_suffix_and_wrappers(tmp_path):
    ref = small_tensors()
    for wrapper in ("state_dict", "model"):
        path = tmp_path / f"wrapped_{wrapper}.pth"
        torch.save({wrapper: ref, "epoch": 3, "step": 1000}, path)
        sd = read_state_dict(path)
        assert set(sd) == set(ref) and all(torch.equal(sd[k], ref[k]) for k in ref)
        _, loaded = load_checkpoint(path, small_expected)
        assert set(loaded) == set(ref)


def test_half_precision_file_comes_back_float32(tmp_path):
    ref = small_tensors()
    path = tmp_path / "half.safetensors"
    save_checkpoint({k: v.half() for k, v in ref.items()}, path, weight_norm="folded")
    _, sd = load_checkpoint(path, small_expected)
    assert all(t.dtype == torch.float32 for t in sd.values())


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(CheckpointError, match=r"unknown checkpoint suffix '\.npz'"):
        save_checkpoint(small_tensors(), tmp_path / "x.npz")
    assert not list(tmp_path.iterdir())


def test_save_handles_shared_memory(tmp_path):
    t = torch.arange(6, dtype=torch.float32)
    path = save_checkpoint({"a": t, "b": t}, tmp_path / "shared.safetensors")
    sd = read_state_dict(path)
    assert torch.equal(sd["a"], t) and torch.equal(sd["b"], t)


# --- voice models and variants ------------------------------------------------------


@pytest.mark.parametrize("buffers", [{}, COMPUTED, {"tokenizer.window": torch.ones(400)}])
def test_voice_entries_are_kept_and_checked(tmp_path, buffers):
    """speaker_encoder.* and tokenizer.* come back (checked, in order); the computed buffers are optional and dropped."""
    path = save_checkpoint({**small_tensors(), **VOICE_UPSTREAM, **buffers}, tmp_path / "upstream.safetensors")
    variant, loaded = load_checkpoint(path, small_expected, voice_layout=VOICE_LAYOUT)
    assert variant == "standard"
    assert list(loaded) == list(SMALL_STANDARD) + list(VOICE_LAYOUT)
    assert loaded["speaker_encoder.head.bn1.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(loaded["speaker_encoder.head.bn1.weight"], torch.ones(32))


def test_checkpoint_without_voice_loads_and_says_so(tmp_path, caplog):
    path = save_checkpoint({**small_tensors(), **COMPUTED}, tmp_path / "flow_only.safetensors")
    with caplog.at_level(logging.INFO, logger="s3gen_export.model.checkpoint"):
        _, loaded = load_checkpoint(path, small_expected, voice_layout=VOICE_LAYOUT)
    assert list(loaded) == list(SMALL_STANDARD)
    lines = [r.getMessage() for r in caplog.records if "speaker_encoder" in r.getMessage()]
    assert len(lines) == 1 and "no voice graphs" in lines[0]


def test_partial_or_misshapen_voice_is_listed(tmp_path):
    sd = {**small_tensors(), **VOICE_UPSTREAM}
    del sd["speaker_encoder.head.bn1.running_var"]
    sd["tokenizer.encoder.conv1.weight"] = torch.zeros(4, 3, 5)
    path = save_checkpoint(sd, tmp_path / "partial.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, small_expected, voice_layout=VOICE_LAYOUT)
    msg = str(e.value)
    assert "missing keys (1)" in msg and "speaker_encoder.head.bn1.running_var" in msg
    assert "tokenizer.encoder.conv1.weight: got (4, 3, 5), expected (4, 3, 3)" in msg


def test_voice_entries_without_a_voice_layout_are_unexpected(tmp_path):
    path = save_checkpoint({**small_tensors(), **VOICE_UPSTREAM}, tmp_path / "upstream.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected keys \(4\)"):
        load_checkpoint(path, small_expected)


def test_has_voice_and_computed_buffers():
    assert has_voice(VOICE_UPSTREAM) and not has_voice(small_tensors())
    assert list(drop_computed_buffers({**COMPUTED, "flow.x": torch.zeros(1)})) == ["flow.x"]
    assert has_voice(COMPUTED) and not has_voice(drop_computed_buffers(COMPUTED))


def test_detect_variant():
    assert detect_variant(SMALL_STANDARD) == "standard"
    assert detect_variant(SMALL_MEANFLOW) == "meanflow"
    assert detect_variant({}) == "standard"


def test_meanflow_file_loads_as_meanflow(tmp_path):
    path = write_synthetic_checkpoint(tmp_path / "mf.pt", SMALL_MEANFLOW, weight_norm="weight_g")
    variant, sd = load_checkpoint(path, small_expected)
    assert variant == "meanflow"
    assert sd[MEANFLOW_KEY].shape == (1024, 2048)


def test_variant_picks_the_expected_table(tmp_path):
    """A meanflow file against a model that only knows the standard layout: the mixer is unexpected."""
    path = write_synthetic_checkpoint(tmp_path / "mf.safetensors", SMALL_MEANFLOW)
    seen = []

    def standard_only(variant):
        seen.append(variant)
        return small_expected("standard")

    with pytest.raises(CheckpointError, match="detected variant: meanflow") as e:
        load_checkpoint(path, standard_only)
    assert seen == ["meanflow"]
    assert MEANFLOW_KEY in str(e.value)


# --- key checks ------------------------------------------------------------------------


def test_missing_key(tmp_path):
    sd = small_tensors()
    del sd["mel2wav.conv_pre.bias"]
    path = save_checkpoint(sd, tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, small_expected)
    msg = str(e.value)
    assert str(path) in msg
    assert "missing keys (1)" in msg and "mel2wav.conv_pre.bias" in msg
    assert "unexpected" not in msg


def test_unexpected_key(tmp_path):
    sd = {**small_tensors(), "flow.bogus.weight": torch.zeros(3)}
    path = save_checkpoint(sd, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\):\n  flow\.bogus\.weight"):
        load_checkpoint(path, small_expected)


def test_wrong_shape(tmp_path):
    sd = small_tensors()
    sd["flow.encoder_proj.weight"] = torch.zeros(80, 256)
    path = save_checkpoint(sd, tmp_path / "shape.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, small_expected)
    assert "flow.encoder_proj.weight: got (80, 256), expected (80, 512)" in str(e.value)


def test_all_problems_listed_together():
    sd = small_tensors()
    del sd["flow.encoder_proj.bias"]
    sd["flow.extra"] = torch.zeros(1)
    sd["mel2wav.conv_post.bias"] = torch.zeros(19)
    with pytest.raises(CheckpointError) as e:
        check_state_dict(sd, small_expected("standard"))
    msg = str(e.value)
    assert "1 missing, 1 unexpected, 1 with wrong shape" in msg
    for s in ("flow.encoder_proj.bias", "flow.extra", "mel2wav.conv_post.bias: got (19,), expected (18,)"):
        assert s in msg


def test_problem_lists_are_capped():
    expected = {f"flow.k{i}": (1,) for i in range(50)}
    sd = {f"flow.u{i}": torch.zeros(1) for i in range(25)}
    with pytest.raises(CheckpointError) as e:
        check_state_dict(sd, expected)
    msg = str(e.value)
    assert "missing keys (50)" in msg and "... and 30 more" in msg
    assert "unexpected keys (25)" in msg and "... and 5 more" in msg
    assert "flow.k19" in msg and "flow.k20" not in msg


def test_check_passes_on_match():
    check_state_dict(small_tensors(), small_expected("standard"))


# --- refusals and bad files --------------------------------------------------------------


def test_refuses_pickled_custom_object(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({**small_tensors(), "obj": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="needs unsafe pickle loading.*refused") as e:
        read_state_dict(path)
    assert str(path) in str(e.value)
    assert "NotATensor" in str(e.value)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_refuses_plain_pickle_of_object(tmp_path, protocol):
    path = tmp_path / f"plain{protocol}.pkl.pt"
    with open(path, "wb") as f:
        pickle.dump(NotATensor(), f, protocol=protocol)
    with pytest.raises(CheckpointError, match="needs unsafe pickle loading.*refused"):
        read_state_dict(path)


def test_refuses_non_tensor_values(tmp_path):
    path = tmp_path / "mixed.pt"
    torch.save({"flow.a": torch.zeros(2), "flow.n": 3, "flow.s": "text"}, path)
    with pytest.raises(CheckpointError, match=r"2 entries are not named tensors: 'flow.n' \(int\), 'flow.s' \(str\)"):
        read_state_dict(path)


def test_refuses_non_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="expected a dict of tensors, got list"):
        read_state_dict(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match="checkpoint not found") as e:
        read_state_dict(path)
    assert str(path) in str(e.value)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"whatever")
    with pytest.raises(CheckpointError, match=r"unknown checkpoint suffix '\.npz'") as e:
        read_state_dict(path)
    assert str(path) in str(e.value)


def test_directory_is_not_a_checkpoint(tmp_path):
    d = tmp_path / "dir.pt"
    d.mkdir()
    with pytest.raises(CheckpointError, match="not a file"):
        read_state_dict(d)


@pytest.mark.parametrize(
    "name,content",
    [
        ("garbage.safetensors", bytes(range(256)) * 4),
        ("empty.safetensors", b""),
        ("garbage.pt", np.random.default_rng(0).bytes(1000)),
        ("empty.pt", b""),
    ],
)
def test_corrupt_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt") as e:
        read_state_dict(path)
    assert str(path) in str(e.value)
    assert "unsafe" not in str(e.value)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_files(tmp_path, suffix):
    good = save_checkpoint(small_tensors(), tmp_path / f"good{suffix}")
    data = good.read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt") as e:
        read_state_dict(path)
    assert str(path) in str(e.value)


# --- hashing ---------------------------------------------------------------------------------


def test_file_sha256(tmp_path):
    path = tmp_path / "blob.bin"
    data = np.random.default_rng(1).bytes(3 * (1 << 20) + 17)
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(path, chunk_size=1000) == hashlib.sha256(data).hexdigest()


def test_synthetic_checkpoint_is_reproducible(tmp_path):
    a = write_synthetic_checkpoint(tmp_path / "a.safetensors", SMALL_STANDARD)
    b = write_synthetic_checkpoint(tmp_path / "b.safetensors", SMALL_STANDARD)
    assert file_sha256(a) == file_sha256(b)

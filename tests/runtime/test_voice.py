
import numpy as np
import pytest

from s3gen_runtime.errors import InputError
from s3gen_runtime.voice import Voice, load_voice, save_voice




def arrays(p=5, seed=0, odd=False):
    rng = np.random.default_rng(seed)
    return {"prompt_token": rng.integers(0, 6561, (1, p)),
            "prompt_feat": rng.standard_normal((1, 2 * p + odd, 80)).astype(np.float32),
            "embedding": rng.standard_normal((1, 192)).astype(np.float32)}


def test_validated_normalises_dtypes_and_shapes():
    a = arrays()
    v = Voice.validated(a["prompt_token"][0].astype(np.int16), a["prompt_feat"][0].astype(np.float64),
                        a["embedding"][0].astype(np.float16))
    assert v.prompt_token.shape == (1, 5) and v.prompt_token.dtype == np.int64
    assert v.prompt_feat.shape == (1, 10, 80) and v.prompt_feat.dtype == np.float32
    assert v.embedding.shape == (1, 192) and v.embedding.dtype == np.float32
    assert v.prompt_tokens == 5
    np.testing.assert_array_equal(v.prompt_token, a["prompt_token"])


@pytest.mark.parametrize("frames", [10, 11])
def test_prompt_mel_may_have_2p_or_2p_plus_1_frames(frames):
    """upstream's embed_ref gives F = 2P, or 2P + 1 when the clip is not a multiple of 40 ms."""
    a = arrays(p=5)
    v = Voice.validated(a["prompt_token"], np.zeros((1, frames, 80), np.float32), a["embedding"])
    assert (v.prompt_tokens, v.prompt_frames) == (5, frames)


@pytest.mark.parametrize("frames", [9, 12, 4, 20])
def test_other_frame_counts_are_refused_naming_the_rule(frames):
    a = arrays(p=5)
    with pytest.raises(InputError, match=rf"prompt_feat must have 2P or 2P\+1 frames.* {frames} frames for 5 "
                                         r"tokens \(needs 10 or 11\)"):
        Voice.validated(a["prompt_token"], np.zeros((1, frames, 80), np.float32), a["embedding"])


@pytest.mark.parametrize("field, value, match", [
    ("prompt_token", np.array([[True, False]]), "integer token ids"),
    ("prompt_token", np.array([[1.5, 2.0]]), "whole numbers"),
    ("prompt_token", np.array([[1, 7000, 2, 3, 4]]), "7000 at index 1"),
    ("prompt_token", np.zeros((1, 0), np.int64), "empty"),
    ("prompt_token", np.zeros((2, 5), np.int64), "batch 1"),
    ("prompt_token", np.zeros((1, 1, 5), np.int64), r"\(1, P\)"),
    ("prompt_feat", np.zeros((1, 10, 80), np.int32), "floating point"),
    ("prompt_feat", np.zeros((1, 10, 81), np.float32), "80 mel bins"),
    ("prompt_feat", np.zeros((1, 80, 10), np.float32), "channels-first"),
    ("prompt_feat", np.zeros((10, 80, 1, 1), np.float32), r"\(1, F, 80\)"),
    ("embedding", np.zeros((1, 256), np.float32), "192-d"),
    ("embedding", np.zeros((3, 192), np.float32), "batch 1"),
])
def test_refusals(field, value, match):
    a = arrays()
    a[field] = value
    with pytest.raises(InputError, match=match):
        Voice.validated(**a)


@pytest.mark.parametrize("field", ["prompt_feat", "embedding"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_name_the_field(field, bad):
    a = arrays()
    a[field] = a[field].copy()
    a[field].flat[3] = bad
    with pytest.raises(InputError, match=f"{field} contains NaN or Inf"):
        Voice.validated(**a)


@pytest.mark.parametrize("odd", [False, True])
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_save_load_roundtrip(tmp_path, suffix, odd):
    v = Voice.validated(**arrays(p=7, odd=odd))
    assert v.prompt_frames == 14 + odd
    path = save_voice(v, tmp_path / ("voice" + suffix))
    w = load_voice(path)
    for k in ("prompt_token", "prompt_feat", "embedding"):
        np.testing.assert_array_equal(getattr(w, k), getattr(v, k))
        assert getattr(w, k).dtype == getattr(v, k).dtype


def test_load_ignores_other_keys_and_lists_missing(tmp_path):
    a = arrays()
    np.savez(tmp_path / "extra.npz", mu=np.zeros(3), **a)
    assert load_voice(tmp_path / "extra.npz").prompt_tokens == 5
    np.savez(tmp_path / "partial.npz", prompt_token=a["prompt_token"])
    with pytest.raises(InputError, match=r"lacks \['prompt_feat', 'embedding'\]"):
        load_voice(tmp_path / "partial.npz")


def test_load_validates_and_names_the_file(tmp_path):
    a = arrays()
    np.savez(tmp_path / "bad.npz", **dict(a, prompt_feat=a["prompt_feat"][:, :4]))
    with pytest.raises(InputError, match=r"bad\.npz.*4 frames"):
        load_voice(tmp_path / "bad.npz")


def test_load_file_problems(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_voice(tmp_path / "none.npz")
    with pytest.raises(InputError, match=r"\.npz or \.safetensors"):
        load_voice(tmp_path / "voice.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    with pytest.raises(InputError, match="cannot read voice"):
        load_voice(tmp_path / "junk.safetensors")
    with pytest.raises(InputError, match=r"\.npz or \.safetensors"):
        save_voice(Voice.validated(**arrays()), tmp_path / "v.json")


@pytest.mark.parametrize("name, p, f", [("voice/voice_espeak_enus_22k.npz", 202, 405),
                                        ("voice/voice_aishell_16k.npz", 105, 210)])
def test_prepared_voice_golden_files_are_valid_voice_files(golden, name, p, f):
    """Voices upstream's embed_ref prepared: the odd one (F = 2P + 1) loads as it is."""
    v = load_voice(golden(name))
    assert (v.prompt_tokens, v.prompt_frames) == (p, f)


def test_golden_file_is_a_valid_voice_file(golden):
    path = golden("s3gen_p25_n35_seed0.npz")
    v = load_voice(path)
    assert v.prompt_token.shape == (1, 25) and v.prompt_feat.shape == (1, 50, 80)
    with np.load(path) as g:
        np.testing.assert_array_equal(v.embedding, g["embedding"])

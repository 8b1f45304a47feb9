
import numpy as np
import pytest

from s3gen_runtime.constants import SAMPLE_RATE, SPEECH_VOCAB_SIZE
from s3gen_runtime.errors import InputError
from s3gen_runtime.io import (
    check_noise_shapes,
    load_noise,
    load_tokens,
    read_wav,
    save_output,
    validate_tokens,
)




# ---------------------------------------------------------------- validate_tokens

@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint16, np.uint64])
def test_integer_dtypes_become_int64(dtype):
    out = validate_tokens(np.array([0, 5, 100], dtype=dtype))
    assert out.dtype == np.int64 and out.tolist() == [0, 5, 100]


def test_accepts_batch_of_one_and_lists():
    assert validate_tokens(np.array([[1, 2, 3]])).shape == (3,)
    assert validate_tokens([7, SPEECH_VOCAB_SIZE - 1]).tolist() == [7, SPEECH_VOCAB_SIZE - 1]


def test_whole_valued_floats_are_accepted_fractions_are_not():
    assert validate_tokens(np.array([1.0, 2.0], dtype=np.float32)).tolist() == [1, 2]
    with pytest.raises(InputError, match=r"whole numbers.*2\.5 at index 1"):
        validate_tokens(np.array([1.0, 2.5]))
    with pytest.raises(InputError, match="nan at index 0"):
        validate_tokens(np.array([np.nan, 1.0]))


@pytest.mark.parametrize("bad", [np.array([True, False]), np.array(["1", "2"]), np.array([1 + 0j])])
def test_non_integer_dtypes_are_refused(bad):
    with pytest.raises(InputError, match="integer token ids"):
        validate_tokens(bad)


def test_out_of_range_names_value_index_and_range():
    with pytest.raises(InputError) as e:
        validate_tokens(np.array([3, 6561, 4, -1]))
    msg = str(e.value)
    assert "6561 at index 1" in msg and "-1 at index 3" in msg and "[0, 6561)" in msg


def test_huge_unsigned_ids_do_not_wrap_into_range():
    with pytest.raises(InputError, match=str(2**63 + 5)):
        validate_tokens(np.array([2**63 + 5], dtype=np.uint64))


def test_many_bad_ids_are_summarised():
    with pytest.raises(InputError, match=r"and 5 more"):
        validate_tokens(np.full(10, 9999))


@pytest.mark.parametrize("bad, match", [
    (np.zeros(0, np.int64), "empty"),
    (np.zeros((1, 0), np.int64), "empty"),
    (np.zeros((2, 3), np.int64), "batch 2"),
    (np.zeros((1, 1, 3), np.int64), "rank 3"),
    (np.int64(5), "rank 0"),
])
def test_bad_shapes(bad, match):
    with pytest.raises(InputError, match=match):
        validate_tokens(bad)


# ---------------------------------------------------------------- load_tokens

def test_load_tokens_npy_txt_npz(tmp_path):
    want = [0, 17, 6560, 42]
    np.save(tmp_path / "t.npy", np.array([want], dtype=np.int32))
    (tmp_path / "t.txt").write_text("0, 17\n6560\t42,\n")
    np.savez(tmp_path / "t.npz", speech_tokens=np.array(want), other=np.zeros(3))
    for name in ("t.npy", "t.txt", "t.npz"):
        out = load_tokens(tmp_path / name)
        assert out.dtype == np.int64 and out.tolist() == want, name


def test_load_tokens_txt_bad_word(tmp_path):
    (tmp_path / "t.txt").write_text("1 2 three 4")
    with pytest.raises(InputError, match=r"word 2 is 'three'"):
        load_tokens(tmp_path / "t.txt")
    (tmp_path / "f.txt").write_text("1 2.5")
    with pytest.raises(InputError, match=r"'2\.5'"):
        load_tokens(tmp_path / "f.txt")


def test_load_tokens_checks_range_and_emptiness(tmp_path):
    (tmp_path / "range.txt").write_text("1 7000")
    with pytest.raises(InputError, match="7000 at index 1"):
        load_tokens(tmp_path / "range.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(InputError, match="empty"):
        load_tokens(tmp_path / "empty.txt")


def test_load_tokens_file_problems(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_tokens(tmp_path / "nope.npy")
    (tmp_path / "t.csv").write_text("1,2")
    with pytest.raises(InputError, match=r"\.npy, \.txt, \.npz"):
        load_tokens(tmp_path / "t.csv")
    np.savez(tmp_path / "k.npz", tokens=np.array([1]))
    with pytest.raises(InputError, match=r"no 'speech_tokens'.*tokens"):
        load_tokens(tmp_path / "k.npz")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="cannot read"):
        load_tokens(tmp_path / "junk.npy")


def test_load_tokens_from_golden_file(golden):
    path = golden("s3gen_p25_n35_seed0.npz")
    out = load_tokens(path)
    assert out.shape == (35,) and out.dtype == np.int64


# ---------------------------------------------------------------- noise files

def _noise(p=3, n=4, dtype=np.float32):
    rng = np.random.default_rng(0)
    return {"z": rng.standard_normal((1, 80, 2 * (p + n))).astype(dtype),
            "sine_phase": rng.uniform(-3, 3, (1, 9, 1)).astype(dtype),
            "sine_noise": rng.standard_normal((1, 9, 960 * n)).astype(dtype)}


def test_load_noise_roundtrip_and_extra_keys(tmp_path):
    noise = _noise(dtype=np.float64)
    np.savez(tmp_path / "n.npz", extra=np.arange(3), **noise)
    out = load_noise(tmp_path / "n.npz")
    assert set(out) == {"z", "sine_phase", "sine_noise"}
    for k in out:
        assert out[k].dtype == np.float32
        np.testing.assert_array_equal(out[k], noise[k].astype(np.float32))
    check_noise_shapes(out, 3, 4)


def test_load_noise_refuses_bad_files(tmp_path):
    noise = _noise()
    np.savez(tmp_path / "missing.npz", z=noise["z"])
    with pytest.raises(InputError, match=r"lacks noise array\(s\) \['sine_phase', 'sine_noise'\]"):
        load_noise(tmp_path / "missing.npz")
    bad = dict(noise, z=noise["z"].copy())
    bad["z"][0, 3, 2] = np.inf
    np.savez(tmp_path / "inf.npz", **bad)
    with pytest.raises(InputError, match="'z' contains NaN or Inf"):
        load_noise(tmp_path / "inf.npz")
    np.savez(tmp_path / "rank.npz", **dict(noise, sine_phase=np.zeros(9, np.float32)))
    with pytest.raises(InputError, match="'sine_phase' must have rank 3"):
        load_noise(tmp_path / "rank.npz")
    np.savez(tmp_path / "int.npz", **dict(noise, z=np.zeros((1, 80, 14), np.int64)))
    with pytest.raises(InputError, match="floating point"):
        load_noise(tmp_path / "int.npz")
    np.save(tmp_path / "n.npy", noise["z"])
    with pytest.raises(InputError, match=r"\.npz"):
        load_noise(tmp_path / "n.npy")


def test_check_noise_shapes_messages():
    noise = _noise(p=3, n=4)
    check_noise_shapes(noise, 3, 4)
    with pytest.raises(InputError, match=r"'z' has shape \(1, 80, 14\).*3 prompt and 5 new tokens needs \(1, 80, 16\)"):
        check_noise_shapes(noise, 3, 5)
    with pytest.raises(InputError, match=r"'sine_noise' has shape \(1, 9, 3840\).*\(1, 9, 2880\)"):
        check_noise_shapes(noise, 4, 3)
    with pytest.raises(InputError, match="lacks"):
        check_noise_shapes({"z": noise["z"]}, 3, 4)
    with pytest.raises(InputError, match="sine_phase"):
        check_noise_shapes(dict(noise, sine_phase=np.zeros((1, 8, 1))), 3, 4)


def test_golden_file_is_a_valid_noise_file(golden):
    path = golden("s3gen_p25_n35_seed0.npz")
    noise = load_noise(path)
    check_noise_shapes(noise, 25, 35)
    with np.load(path) as g:
        np.testing.assert_array_equal(noise["z"], g["z"])


# ---------------------------------------------------------------- outputs

def test_save_wav_roundtrip_clips_and_scales(tmp_path):
    wav = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.7, -3.0, 0.25], dtype=np.float32)
    mel = np.zeros((1, 80, 4), np.float32)
    path = save_output(tmp_path / "sub" / "o.wav", mel, wav[None])
    back, rate = read_wav(path)
    assert rate == SAMPLE_RATE and back.dtype == np.float32 and back.shape == wav.shape
    np.testing.assert_allclose(back, np.clip(wav, -1, 1), atol=0.5 / 32767)
    assert back[3] == 1.0 and back[4] == -1.0 and back[5] == 1.0 and back[6] == -1.0


def test_save_wav_custom_rate(tmp_path):
    save_output(tmp_path / "o.wav", np.zeros((80, 2)), np.zeros(10, np.float32), sample_rate=16000)
    assert read_wav(tmp_path / "o.wav")[1] == 16000


def test_save_npz(tmp_path):
    rng = np.random.default_rng(1)
    mel, wav = rng.standard_normal((1, 80, 6)), rng.standard_normal(2880)
    save_output(tmp_path / "o.npz", mel, wav)
    with np.load(tmp_path / "o.npz") as z:
        assert set(z.files) == {"mel", "wav"}
        assert z["mel"].shape == (1, 80, 6) and z["mel"].dtype == np.float32
        assert z["wav"].shape == (1, 2880) and z["wav"].dtype == np.float32
        np.testing.assert_allclose(z["wav"][0], wav, rtol=1e-6)


def test_save_output_refusals(tmp_path):
    mel, wav = np.zeros((1, 80, 2), np.float32), np.zeros(960, np.float32)
    with pytest.raises(InputError, match=r"\.wav or \.npz"):
        save_output(tmp_path / "o.mp3", mel, wav)
    with pytest.raises(InputError, match="NaN"):
        save_output(tmp_path / "o.wav", mel, np.full(4, np.nan, np.float32))
    with pytest.raises(InputError, match="wav must have shape"):
        save_output(tmp_path / "o.wav", mel, np.zeros((2, 4), np.float32))
    with pytest.raises(InputError, match="mel must have shape"):
        save_output(tmp_path / "o.npz", np.zeros((1, 81, 2)), wav)
    with pytest.raises(InputError, match="sample_rate"):
        save_output(tmp_path / "o.wav", mel, wav, sample_rate=0)


def test_read_wav_refuses_stereo(tmp_path):
    import wave

    with wave.open(str(tmp_path / "s.wav"), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(8000)
        f.writeframes(b"\0" * 16)
    with pytest.raises(InputError, match="16-bit mono"):
        read_wav(tmp_path / "s.wav")


def test_save_npz_keeps_an_upper_case_name(tmp_path):
    save_output(tmp_path / "O.NPZ", np.zeros((1, 80, 1)), np.zeros(480, np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["O.NPZ"]

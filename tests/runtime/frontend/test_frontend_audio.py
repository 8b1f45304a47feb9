"""Reading reference files and bringing them to 24 kHz as librosa.load(path, sr=24000) does, and the refusals."""
import math
import struct
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf
import soxr

from frontend_signals import tone
from s3gen_runtime.errors import InputError
from s3gen_runtime.frontend import (DEC_COND_LEN, MIN_CLIP_SAMPLES_24K, MIN_CLIP_SECONDS, MissingDependencyError,
                                    QuietAudioWarning, crop_24k, load_24k, load_reference, prompt_mel,
                                    read_audio, resample_24k_to_16k, resampled_length, speaker_fbank,
                                    tokenizer_log_mel)


def librosa_like(samples: np.ndarray, sr: int) -> np.ndarray:
    """The independent reference: soxr called directly, then librosa's fix_length to ceil(n * 24000 / sr)."""
    if sr == 24000:
        return samples
    y = soxr.resample(samples, sr, 24000, quality="soxr_hq")
    n = int(np.ceil(len(samples) * (24000 / sr)))
    return np.pad(y, (0, max(0, n - len(y))))[:n]


def test_golden_file_load(voice_golden):
    g, path = voice_golden
    samples, sr, info = read_audio(path)
    assert (sr, info.channels, info.frames) == (int(g["input_sr"]), int(g["input_channels"]),
                                                int(g["input_frames"]))
    wav24 = load_24k(samples, sr)
    assert wav24.dtype == np.float32 and wav24.shape[0] == int(g["wav24_full_len"])
    assert np.abs(crop_24k(wav24) - g["wav24"][0]).max() <= 1e-6


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 24000, 44100, 48000])
def test_rates_lengths_and_samples(write_wav, sr):
    x = tone(1.3, sr)
    path = write_wav(f"mono_{sr}.wav", x, sr)
    samples, got_sr, info = read_audio(path)
    assert got_sr == sr and info.channels == 1 and info.frames == len(x) and info.subtype == "PCM_16"
    wav24 = load_24k(samples, sr)
    assert wav24.shape == (resampled_length(len(x), sr),) and wav24.dtype == np.float32
    assert np.array_equal(wav24, librosa_like(samples, sr))     # at 24 kHz: the samples themselves


def test_length_rule_is_librosas_float_ceil():
    # librosa computes ceil(n * (24000 / sr)) with a float ratio; at 44.1 kHz and n = 147 the product is
    # 80.00000000000001, so librosa (and we) give 81 samples where exact arithmetic would give 80
    assert resampled_length(147, 44100) == 81 and resampled_length(147, 48000) == 74
    assert resampled_length(178815, 22050) == 194629


def test_pcm16_is_int_over_32768(write_wav):
    ints = np.array([0, 1, -1, 32767, -32768, 12345], dtype=np.int16)
    path = write_wav("pcm16.wav", ints, 24000, "PCM_16")
    samples, _, info = read_audio(path)
    assert info.subtype == "PCM_16"
    assert np.array_equal(samples, ints.astype(np.float32) / 32768)


def test_float32_wav_is_read_as_stored(write_wav):
    x = np.array([0.0, 0.123456789, -0.9, 1.5, -2.0], np.float32)   # float WAV may exceed [-1, 1]
    samples, _, info = read_audio(write_wav("float.wav", x, 24000, "FLOAT"))
    assert info.subtype == "FLOAT" and np.array_equal(samples, x)


def test_stereo_is_the_float32_channel_mean(write_wav):
    x = tone(1.0, 44100, channels=2)
    path = write_wav("stereo.wav", x, 44100, "FLOAT")
    samples, sr, info = read_audio(path)
    assert info.channels == 2 and samples.shape == (len(x),)
    expected = ((x[:, 0] + x[:, 1]) / np.float32(2)).astype(np.float32)
    assert np.array_equal(samples, expected)
    assert np.array_equal(load_24k(samples, sr), librosa_like(expected, 44100))


def test_long_file_is_cropped_to_10_s(write_wav):
    x = tone(12.5, 48000)
    wav24, info = load_reference(write_wav("long.wav", x, 48000))
    assert info.full_len_24k == resampled_length(len(x), 48000) == 300000
    assert wav24.shape == (DEC_COND_LEN,) and info.cropped and info.resampled
    assert info.seconds_used == 10.0 and info.audio.frames == len(x)
    samples, _, _ = read_audio(write_wav("long2.wav", x, 48000))
    assert np.array_equal(wav24, load_24k(samples, 48000)[:DEC_COND_LEN])


def test_short_file_keeps_its_length(write_wav):
    wav24, info = load_reference(write_wav("short.wav", tone(2.0, 24000), 24000))
    assert wav24.shape == (48000,) and not info.cropped and not info.resampled and info.gain_db is None


def test_minimum_clip_length_works_through_every_front_end():
    assert MIN_CLIP_SAMPLES_24K == 1079 and math.isclose(MIN_CLIP_SECONDS, 1079 / 24000)
    x = tone(1.0, 24000)[:MIN_CLIP_SAMPLES_24K]
    wav16 = resample_24k_to_16k(x)
    assert prompt_mel(x).shape == (2, 80)                  # F = 2: one token survives the alignment cut
    assert tokenizer_log_mel(wav16).shape == (128, 4)      # T = 4: one token
    assert speaker_fbank(wav16).shape == (3, 80)           # 3 frames: CAMPPlus's stride-2 TDNN keeps 2
    assert speaker_fbank(resample_24k_to_16k(x[:-1])).shape == (2, 80)   # one sample less: too few


@pytest.mark.parametrize("seconds", [0.02, (MIN_CLIP_SAMPLES_24K - 1) / 24000])
def test_too_short_file_is_refused(write_wav, seconds):
    path = write_wav("tiny.wav", tone(1.0, 24000)[:round(seconds * 24000)], 24000)
    with pytest.raises(InputError, match=r"too short.*minimum is 0\.045 s \(1079 samples\)"):
        load_reference(path)


def test_turbo_minimum_of_5_seconds(write_wav):
    with pytest.raises(InputError, match="more than 5 s"):
        load_reference(write_wav("four.wav", tone(4.0, 24000), 24000), min_seconds=5.0)
    wav24, info = load_reference(write_wav("six.wav", tone(6.0, 24000), 24000), target_lufs=-27.0,
                                 min_seconds=5.0)
    assert wav24.shape == (144000,) and info.gain_db is not None and info.loudness_lufs is not None


def test_turbo_normalises_the_full_clip_before_the_crop(write_wav):
    from s3gen_runtime.frontend import loudness_gain
    x = tone(14.0, 24000, amp=0.05)
    x[: 10 * 24000] *= 0.2        # the first 10 s are quieter: the gain must come from all 14 s
    path = write_wav("turbo.wav", x, 24000, "FLOAT")
    wav24, info = load_reference(path, target_lufs=-27.0)
    _, gain = loudness_gain(x, 24000, -27.0)
    assert math.isclose(info.gain_db, 20 * math.log10(gain))
    expected = (x.astype(np.float64) * gain).astype(np.float32)[:DEC_COND_LEN]
    assert np.array_equal(wav24, expected)


def test_silent_file_is_refused(write_wav):
    with pytest.raises(InputError, match="silent"):
        load_reference(write_wav("silence.wav", np.zeros(48000, np.float32), 24000))
    # 2 LSB of 16-bit noise is still silence (peak < -80 dBFS)
    with pytest.raises(InputError, match="silent"):
        load_reference(write_wav("lsb.wav", np.full(48000, 2 / 32768, np.float32), 24000))


def test_quiet_file_warns_unless_normalised(write_wav):
    path = write_wav("quiet.wav", tone(6.0, 24000, amp=0.002), 24000, "FLOAT")   # about -64 dBFS RMS
    with pytest.warns(QuietAudioWarning, match="very quiet"):
        load_reference(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuietAudioWarning)
        load_reference(path, target_lufs=-27.0)     # Turbo brings the level up: no warning


def test_nan_samples_are_refused(write_wav):
    x = tone(1.0, 24000)
    x[100] = np.nan
    with pytest.raises(InputError, match="NaN/Inf"):
        load_reference(write_wav("nan.wav", x, 24000, "FLOAT"))
    with pytest.raises(InputError, match="NaN/Inf"):
        load_24k(x, 44100)


def wav_bytes(format_tag: int, data: bytes, bits: int = 16) -> bytes:
    fmt = struct.pack("<HHIIHH", format_tag, 1, 16000, 16000 * bits // 8, bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("name,content,match", [
    ("empty.wav", b"", "empty"),
    ("text.wav", b"this is not audio at all\n" * 10, "cannot decode"),
    ("codec.wav", wav_bytes(0x1234, b"\x00" * 64), "cannot decode"),      # a codec libsndfile does not know
    ("noframes.wav", wav_bytes(1, b""), "no samples"),
])
def test_unreadable_files_are_refused(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=match) as e:
        read_audio(path)
    assert "\n" not in str(e.value)            # one line naming the problem


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_audio(tmp_path / "nope.wav")


@pytest.mark.parametrize("module,call", [("soxr", lambda: load_24k(np.ones(100, np.float32), 16000)),
                                         ("soundfile", lambda: read_audio(__file__))])
def test_missing_voice_extra_says_how_to_install(monkeypatch, module, call):
    monkeypatch.setitem(sys.modules, module, None)      # makes `import module` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 's3gen-aot\[voice\]'"):
        call()


def test_other_formats_through_soundfile(write_wav, tmp_path):
    x = tone(1.0, 16000)
    path = tmp_path / "clip.flac"
    sf.write(str(path), x, 16000, subtype="PCM_16")
    samples, sr, info = read_audio(path)
    assert sr == 16000 and info.format == "FLAC"
    # libsndfile quantises float to 16 bits differently for FLAC and WAV: equal to one LSB
    assert np.abs(samples - read_audio(write_wav("same.wav", x, 16000))[0]).max() <= 1 / 32768

"""The whole voice-preparation front end from the golden audio files, against every golden stage."""
import numpy as np

from s3gen_runtime.frontend import (load_reference, prompt_mel, resample_24k_to_16k, speaker_fbank,
                                    tokenizer_log_mel)

TOLERANCES = {"wav24": 1e-6, "wav16": 1e-6, "fbank": 5e-3, "mel128": 1e-4, "prompt_feat": 1e-3}


def test_chain_from_the_audio_file(voice_golden):
    g, path = voice_golden
    wav24, info = load_reference(path)
    assert info.full_len_24k == int(g["wav24_full_len"]) and info.audio.sample_rate == int(g["input_sr"])
    wav16 = resample_24k_to_16k(wav24)
    got = {"wav24": wav24, "wav16": wav16, "fbank": speaker_fbank(wav16), "mel128": tokenizer_log_mel(wav16),
           "prompt_feat": prompt_mel(wav24)}
    for key, tol in TOLERANCES.items():
        want = g[key][0]
        assert got[key].shape == want.shape, key
        err = float(np.abs(got[key] - want).max())
        assert err <= tol, f"{key}: max |error| {err:.3g} > {tol:g}"
    # the alignment rule downstream relies on: F = L24 // 480 prompt frames, F = 2P or 2P + 1
    assert got["prompt_feat"].shape[0] // 2 == int(g["prompt_token_len"][0])

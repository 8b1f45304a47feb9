"""The voice models against the voice golden files (synthetic weights): CAMPPlus fbank -> x-vector and the
S3TokenizerV2 encoder log-mel -> FSQ values -> tokens; plus the properties the export relies on."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from s3gen_export.model.tokenizer import halve_length
from s3gen_runtime.fsq import fsq_tokens

VOICE_GOLDEN_FILES = ("voice/voice_aishell_16k.npz", "voice/voice_espeak_enus_22k.npz")
EMBEDDING_TOL = 1e-5     # shared/golden/voice/README.md
FSQ_TOL = 1e-4
BOUNDARY_MARGIN = 1e-4   # a token may differ only where the golden value is this close to +-0.5


def token_mismatches_outside_margin(tokens, golden_tokens, golden_fsq) -> int:
    _, near = fsq_tokens(golden_fsq, BOUNDARY_MARGIN)
    return int(np.sum((tokens != golden_tokens) & ~near))


@torch.inference_mode()
def run_tokenizer(model, mel, lengths):
    fsq, out_len = model(torch.from_numpy(mel), torch.from_numpy(lengths))
    return fsq.numpy(), out_len.numpy()


@pytest.mark.parametrize("name", VOICE_GOLDEN_FILES)
def test_speaker_encoder_matches_golden(golden, voice_models, name):
    g = np.load(golden(name))
    with torch.inference_mode():
        emb = voice_models.speaker_encoder(torch.from_numpy(g["fbank"])).numpy()
    assert emb.shape == g["embedding"].shape == (1, 192)
    err = float(np.abs(emb - g["embedding"]).max())
    assert err <= EMBEDDING_TOL, f"{name}: embedding max abs error {err:.3g}"


@pytest.mark.parametrize("name", VOICE_GOLDEN_FILES)
def test_tokenizer_matches_golden(golden, voice_models, name):
    g = np.load(golden(name))
    fsq, lengths = run_tokenizer(voice_models.tokenizer, g["mel128"], g["mel128_len"])
    assert fsq.shape == g["tokenizer_fsq"].shape
    np.testing.assert_array_equal(lengths, g["tokenizer_token_len"])
    err = float(np.abs(fsq - g["tokenizer_fsq"]).max())
    assert err <= FSQ_TOL, f"{name}: fsq max abs error {err:.3g}"
    tokens, _ = fsq_tokens(fsq)
    assert token_mismatches_outside_margin(tokens, g["tokenizer_tokens"], g["tokenizer_fsq"]) == 0


def test_fsq_tokens_base3_and_boundary_report():
    h = np.zeros((2, 8), np.float32)
    h[0] = [-0.9, 0.0, 0.9, 0.2, -0.2, 0.6, -0.6, 0.49995]
    h[1] = 0.999
    tokens, near = fsq_tokens(h)
    digits = np.array([0, 1, 2, 1, 1, 2, 0, 1])
    assert tokens[0] == int((digits * 3 ** np.arange(8)).sum()) and tokens[1] == 3 ** 8 - 1
    assert near.tolist() == [True, False]
    assert tokens.dtype == np.int64
    with pytest.raises(ValueError, match="8 values"):
        fsq_tokens(np.zeros((3, 7)))


def test_tokenizer_padding_is_inert_and_lengths_are_ceil_quarter(voice_models):
    """A padded row's valid FSQ values equal the row run alone; T not divisible by 4 included."""
    rng = np.random.default_rng(0)
    lengths = np.array([203, 150, 37], np.int64)
    mel = rng.standard_normal((3, 128, 203)).astype(np.float32)
    batched, out_len = run_tokenizer(voice_models.tokenizer, mel, lengths)
    np.testing.assert_array_equal(out_len, -(-lengths // 4))
    for b, n in enumerate(lengths):
        alone, _ = run_tokenizer(voice_models.tokenizer, mel[b:b + 1, :, :n], lengths[b:b + 1])
        np.testing.assert_allclose(batched[b, :out_len[b]], alone[0], atol=2e-5, rtol=0)


def test_halve_length_is_ceil_half_from_zero():
    n = torch.arange(0, 9)
    assert halve_length(n).tolist() == [(int(v) + 1) // 2 for v in n]


def test_speaker_encoder_batch_of_equal_lengths_equals_rows(voice_models):
    rng = np.random.default_rng(1)
    fbank = rng.standard_normal((2, 157, 80)).astype(np.float32)
    with torch.inference_mode():
        both = voice_models.speaker_encoder(torch.from_numpy(fbank)).numpy()
        rows = [voice_models.speaker_encoder(torch.from_numpy(fbank[i:i + 1])).numpy()[0] for i in range(2)]
    np.testing.assert_allclose(both, np.stack(rows), atol=1e-6, rtol=0)

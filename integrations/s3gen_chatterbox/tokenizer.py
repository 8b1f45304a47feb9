"""`s3gen.tokenizer` backed by the artifacts' tokenizer graph: upstream's S3Tokenizer call contract
(16 kHz waveforms -> speech token ids and their lengths), as ChatterboxVC and prepare_conditionals use it."""
from __future__ import annotations

import numpy as np
import torch

from s3gen_runtime import frontend
from s3gen_runtime.errors import InputError
from s3gen_runtime.fsq import fsq_tokens
from s3gen_runtime.voice_prep import run_tokenizer
from .tensors import mono_waveform, to_caller

MEL_FRAMES_PER_TOKEN = 4   # the tokenizer's log-mel runs at 100 Hz, its tokens at 25 Hz


def waveforms(wavs) -> list[np.ndarray]:
    """A list of (L,) / (1, L) waveforms, or a (B, L) tensor, -> 1-D float32 arrays (upstream iterates the same)."""
    rows = [mono_waveform(wav, f"wavs[{index}]") for index, wav in enumerate(list(wavs))]
    if not rows:
        raise InputError("the tokenizer needs at least one waveform")
    return rows


class S3TokenizerDropIn:
    """tokens, lengths = tokenizer(wavs, max_len=None): ids (B, L) int64 zero-padded, lengths (B,) int64."""

    def __init__(self, runners, device):
        self._runners = runners
        self.device = torch.device(device)

    def forward(self, wavs, accelerator=None, max_len: int | None = None):
        ids = []
        for wav in waveforms(wavs):
            mel = frontend.tokenizer_log_mel(wav)
            if max_len is not None:
                mel = mel[:, : int(max_len) * MEL_FRAMES_PER_TOKEN]
            ids.append(fsq_tokens(run_tokenizer(self._runners()["tokenizer"], mel)).tokens.astype(np.int64))
        lengths = np.array([len(t) for t in ids], dtype=np.int64)
        padded = np.zeros((len(ids), int(lengths.max())), dtype=np.int64)
        for row, tokens in enumerate(ids):
            padded[row, : len(tokens)] = tokens
        return to_caller(padded, self.device), to_caller(lengths, self.device)

    __call__ = forward


__all__ = ["S3TokenizerDropIn", "waveforms"]

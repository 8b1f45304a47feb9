"""Vocos as the `vocoder` graph: mel (B, 80, M) + lengths -> wav (B, 480 M), no sine-source inputs.

The graph runs vocos' own backbone and head modules, with two changes for export and batching:
the ISTFT is dsp.ConvSpectral's transposed convolution (ONNX has no ISTFT), and the hidden state is
zeroed past each row's length before every convolution over time, so that a right-padded row gives
what it gives alone (a zero-padded convolution sees zeros there too). The reference it is validated
against is the `vocos` package's eager decode, run on each row alone. Both clamp to +-0.99 and zero
past the row's length, as the HiFT graph does, so the runtime treats the two alike.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from s3gen_runtime.constants import MEL_BINS, SAMPLES_PER_FRAME

from ..model.dsp import ConvSpectral
from . import vocoder as hift
from .base import ComponentSpec, TensorSpec, Tolerance

CLAMP = 0.99


def sample_mask(mel_lengths: torch.Tensor, samples: int) -> torch.Tensor:
    return (torch.arange(samples, device=mel_lengths.device)[None, :] < (mel_lengths * SAMPLES_PER_FRAME)[:, None]).float()


class VocosGraph(nn.Module):
    def __init__(self, vocos: nn.Module):
        super().__init__()
        self.backbone, self.head = vocos.backbone, vocos.head
        istft = vocos.head.istft
        self.spectral = ConvSpectral(istft.n_fft, istft.hop_length)

    def forward(self, mel: torch.Tensor, mel_lengths: torch.Tensor):
        frames = mel.shape[2]
        mask = (torch.arange(frames, device=mel.device)[None, :] < mel_lengths[:, None]).float().unsqueeze(1)
        b = self.backbone
        x = b.norm(b.embed(mel * mask).transpose(1, 2)).transpose(1, 2)
        for block in b.convnext:
            x = block(x * mask)   # the depthwise conv must see zeros past the row's end
        x = b.final_layer_norm(x.transpose(1, 2))
        mag, phase = self.head.out(x).transpose(1, 2).chunk(2, dim=1)
        mag = torch.clip(torch.exp(mag), max=1e2)
        wav = self.spectral.istft_same(mag * torch.cos(phase), mag * torch.sin(phase), mask)
        return torch.clamp(wav, -CLAMP, CLAMP) * sample_mask(mel_lengths, wav.shape[1])


class VocosReference(nn.Module):
    """The vocos package's decode, one row at a time on the row's own frames, zero-padded to the batch."""

    def __init__(self, vocos: nn.Module):
        super().__init__()
        self.vocos = vocos

    def forward(self, mel: torch.Tensor, mel_lengths: torch.Tensor):
        out = torch.zeros(mel.shape[0], mel.shape[2] * SAMPLES_PER_FRAME)
        for row, n in enumerate(mel_lengths.tolist()):
            wav = self.vocos.head(self.vocos.backbone(mel[row:row + 1, :, :n]))
            out[row, :wav.shape[1]] = torch.clamp(wav[0], -CLAMP, CLAMP)
        return out


def make_inputs(case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = hift.make_inputs(case, rng)
    return {"mel": feeds["mel"], "mel_lengths": feeds["mel_lengths"]}


def vocos_spec(vocos: nn.Module) -> ComponentSpec:
    """The `vocoder` spec for this Vocos model (build_module ignores the S3Gen model it is handed)."""
    return replace(
        hift.SPEC,
        description="Vocos: mel (50 Hz) -> 24 kHz waveform, clamped to +-0.99, zero past each row's length",
        inputs=(TensorSpec("mel", "float32", ("batch", MEL_BINS, "mel_frames")),
                TensorSpec("mel_lengths", "int64", ("batch",))),
        outputs=(TensorSpec("wav", "float32", ("batch", "samples")),),
        tolerances={"wav": Tolerance(2e-3)},
        build_module=lambda _model: VocosGraph(vocos),
        build_reference=lambda _model: VocosReference(vocos),
        make_inputs=make_inputs,
    )

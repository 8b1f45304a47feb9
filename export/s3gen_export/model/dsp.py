"""STFT / ISTFT for the vocoders (HiFT; Vocos uses the ISTFT), in two interchangeable forms.

`TorchSpectral` calls torch.stft / torch.istft exactly as upstream does (the eager reference).
`ConvSpectral` computes the same transforms as convolutions, because ONNX has no ISTFT and
TensorRT's DFT support is partial: the STFT is a strided Conv1d with the windowed DFT basis after
reflect padding, the ISTFT a ConvTranspose1d with the windowed inverse basis, divided by the
overlap-added squared window (not a constant near the edges) and trimmed by n_fft/2 each side.
Both take per-row valid lengths so that right-padded batch rows give exactly what they give alone.
Keep both in fp32.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def hann_window(n_fft: int) -> torch.Tensor:
    """Periodic Hann window (scipy get_window('hann', n, fftbins=True)), float32."""
    n = torch.arange(n_fft, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2.0 * math.pi * n / n_fft)).to(torch.float32)


def stft_basis(n_fft: int, window: torch.Tensor) -> torch.Tensor:
    """(2*(n_fft//2+1), 1, n_fft) conv weights: windowed cos rows (real), then -sin rows (imag)."""
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(n_fft, dtype=torch.float64).unsqueeze(0)
    angle = 2.0 * math.pi * k * n / n_fft
    w = window.to(torch.float64)
    real = torch.cos(angle) * w
    imag = -torch.sin(angle) * w
    return torch.cat([real, imag], dim=0).unsqueeze(1).to(torch.float32)


def istft_basis(n_fft: int, window: torch.Tensor) -> torch.Tensor:
    """(2*(n_fft//2+1), 1, n_fft) conv-transpose weights of the one-sided inverse DFT, windowed.

    c_k / N * cos(2 pi k n / N) * w[n] for the real part, -c_k / N * sin(...) * w[n] for the imaginary
    part, with c_0 = c_{N/2} = 1 and 2 otherwise (the conjugate half folded in; the imaginary parts
    of the DC and Nyquist bins drop out as in irfft)."""
    bins = n_fft // 2 + 1
    k = torch.arange(bins, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(n_fft, dtype=torch.float64).unsqueeze(0)
    angle = 2.0 * math.pi * k * n / n_fft
    c = torch.full((bins, 1), 2.0, dtype=torch.float64)
    c[0] = 1.0
    c[-1] = 1.0
    w = window.to(torch.float64)
    real = c / n_fft * torch.cos(angle) * w
    imag = -c / n_fft * torch.sin(angle) * w
    return torch.cat([real, imag], dim=0).unsqueeze(1).to(torch.float32)


def reflect_pad_index(total: int | torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    """Indices (B, total + 2*pad) that reflect-pad each row at its own valid length."""
    m = torch.arange(total + 2 * pad, device=lengths.device).unsqueeze(0) - pad
    m = m.abs()
    last = (lengths - 1).unsqueeze(1)
    m = torch.where(m > last, 2 * last - m, m)
    return m.clamp(min=0).clamp(max=total - 1)


class TorchSpectral(nn.Module):
    """Upstream's torch.stft / torch.istft (batch rows must be unpadded)."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", hann_window(n_fft), persistent=False)

    def stft(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        spec = torch.view_as_real(torch.stft(x, self.n_fft, self.hop, self.n_fft, window=self.window,
                                             return_complex=True))
        return torch.cat([spec[..., 0], spec[..., 1]], dim=1)

    def istft(self, real: torch.Tensor, imag: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        return torch.istft(torch.complex(real, imag), self.n_fft, self.hop, self.n_fft, window=self.window)


class ConvSpectral(nn.Module):
    """STFT/ISTFT as (transposed) convolutions with fixed DFT bases; exact up to fp32 rounding."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        window = hann_window(n_fft)
        self.register_buffer("forward_basis", stft_basis(n_fft, window), persistent=False)
        self.register_buffer("inverse_basis", istft_basis(n_fft, window), persistent=False)
        self.register_buffer("window_sq", (window * window).view(1, 1, n_fft), persistent=False)

    def stft(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (B, S) with valid samples lengths (B,) -> (B, 2*bins, S//hop + 1): real rows then imag rows."""
        pad = self.n_fft // 2
        index = reflect_pad_index(x.shape[1], lengths, pad)
        padded = torch.gather(x, 1, index).unsqueeze(1)
        return F.conv1d(padded, self.forward_basis, stride=self.hop)

    def overlap_add(self, real: torch.Tensor, imag: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """Inverse DFT of each valid frame, overlap-added and divided by the squared-window envelope:
        (B, 1, hop*(frames-1) + n_fft), untrimmed."""
        spec = torch.cat([real, imag], dim=1) * frame_mask
        signal = F.conv_transpose1d(spec, self.inverse_basis, stride=self.hop)
        # overlap-added squared window of the row's valid frames: the normaliser torch.istft divides by
        envelope = F.conv_transpose1d(frame_mask, self.window_sq, stride=self.hop)
        return torch.where(envelope > 1e-11, signal / envelope.clamp(min=1e-11), torch.zeros_like(signal))

    def istft(self, real: torch.Tensor, imag: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """real, imag: (B, bins, frames); frame_mask: (B, 1, frames) -> (B, hop*(frames-1)) (centred frames)."""
        pad = self.n_fft // 2
        return self.overlap_add(real, imag, frame_mask)[:, 0, pad: pad + self.hop * (real.shape[2] - 1)]

    def istft_same(self, real: torch.Tensor, imag: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """Vocos' "same" padding: (n_fft - hop)/2 trimmed each side, hop samples per frame -> (B, hop*frames)."""
        pad = (self.n_fft - self.hop) // 2
        return self.overlap_add(real, imag, frame_mask)[:, 0, pad: pad + self.hop * real.shape[2]]

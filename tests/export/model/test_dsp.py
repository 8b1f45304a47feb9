"""STFT/ISTFT as convolutions against torch.stft / torch.istft, edges and padded rows included."""
from __future__ import annotations

import torch

from s3gen_export.model.dsp import ConvSpectral, TorchSpectral, hann_window, reflect_pad_index

N_FFT, HOP = 16, 4


def test_hann_window_is_periodic_scipy_hann():
    w = hann_window(N_FFT).double()
    n = torch.arange(N_FFT, dtype=torch.float64)
    assert torch.allclose(w, 0.5 - 0.5 * torch.cos(2 * torch.pi * n / N_FFT), atol=1e-7)
    assert w[0] == 0 and abs(float(w[N_FFT // 2]) - 1.0) < 1e-7


def test_conv_stft_matches_torch_stft():
    x = torch.randn(2, 480 * 7)
    lengths = torch.tensor([x.shape[1]] * 2)
    ref = TorchSpectral(N_FFT, HOP).stft(x, lengths)
    got = ConvSpectral(N_FFT, HOP).stft(x, lengths)
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) < 1e-5


def test_conv_istft_matches_torch_istft_including_edges():
    torch.manual_seed(0)
    frames = 61
    real, imag = torch.randn(2, 9, frames), torch.randn(2, 9, frames)
    mask = torch.ones(2, 1, frames)
    ref = TorchSpectral(N_FFT, HOP).istft(real, imag, mask)
    got = ConvSpectral(N_FFT, HOP).istft(real, imag, mask)
    assert got.shape == ref.shape == (2, HOP * (frames - 1))
    assert float((got - ref).abs().max()) < 1e-5
    # the first and last samples are where a constant normaliser would be wrong
    assert float((got[:, :8] - ref[:, :8]).abs().max()) < 1e-5


def test_stft_istft_round_trip():
    x = torch.randn(1, 480 * 5)
    spec = ConvSpectral(N_FFT, HOP)
    s = spec.stft(x, torch.tensor([x.shape[1]]))
    y = spec.istft(s[:, :9], s[:, 9:], torch.ones(1, 1, s.shape[2]))
    assert float((y - x).abs().max()) < 1e-5


def test_reflect_padding_per_row_length():
    idx = reflect_pad_index(10, torch.tensor([10, 6]), 3)
    assert idx[0].tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 8, 7, 6]
    assert idx[1][:3 + 6 + 3].tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 5, 4, 3, 2]


def test_padded_row_equals_row_alone():
    """A right-padded row's STFT frames and ISTFT samples equal those of the unpadded row."""
    spec = ConvSpectral(N_FFT, HOP)
    short = torch.randn(1, 480 * 3)
    padded = torch.cat([short, torch.randn(1, 480 * 2)], dim=1)
    alone = spec.stft(short, torch.tensor([short.shape[1]]))
    inbatch = spec.stft(padded, torch.tensor([short.shape[1]]))
    assert float((inbatch[..., : alone.shape[2]] - alone).abs().max()) < 1e-6

    frames = alone.shape[2]
    mask = torch.zeros(1, 1, inbatch.shape[2])
    mask[..., :frames] = 1
    y_alone = spec.istft(alone[:, :9], alone[:, 9:], torch.ones(1, 1, frames))
    y_batch = spec.istft(inbatch[:, :9], inbatch[:, 9:], mask)
    assert float((y_batch[:, : y_alone.shape[1]] - y_alone).abs().max()) < 1e-5

"""HiFTGenerator (NSF + iSTFTNet) with its ConvRNNF0Predictor: mel (50 Hz) -> waveform (24 kHz).

Upstream names and maths, with three export-minded differences that leave the batch-1 result
unchanged: the sine source's random phase and noise are inputs, each conv sees zeros past the
row's valid length (so a right-padded row gives what it gives alone), and the STFT/ISTFT pair is
a swappable module (torch.stft/istft for the reference, convolutions for export; see dsp.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .config import VocoderConfig
from .dsp import TorchSpectral
from .layers import sequence_mask


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


class Snake(nn.Module):
    """x + 1/alpha * sin^2(alpha x), alpha per channel (linear scale)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.unsqueeze(0).unsqueeze(-1)
        s = torch.sin(x * alpha)
        return x + (1.0 / (alpha + 1e-9)) * (s * s)   # s * s, bit-equal to pow(s, 2): a Mul, not ORT's scalar Pow


class ResBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList([weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d,
                                                           padding=get_padding(kernel_size, d)))
                                     for d in dilations])
        self.convs2 = nn.ModuleList([weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=1,
                                                           padding=get_padding(kernel_size, 1)))
                                     for _ in dilations])
        self.activations1 = nn.ModuleList([Snake(channels) for _ in dilations])
        self.activations2 = nn.ModuleList([Snake(channels) for _ in dilations])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for conv1, conv2, act1, act2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            xt = conv1(act1(x) * mask)
            xt = conv2(act2(xt) * mask)
            x = xt + x
        return x


class ConvRNNF0Predictor(nn.Module):
    def __init__(self, in_channels: int = 80, cond_channels: int = 512):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [weight_norm(nn.Conv1d(in_channels if i == 0 else cond_channels, cond_channels, 3, padding=1)),
                       nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, 80, F), mask (B, 1, F) -> f0 (B, F) in Hz."""
        for i in range(0, len(self.condnet), 2):
            x = self.condnet[i + 1](self.condnet[i](x * mask))
        return torch.abs(self.classifier(x.transpose(1, 2)).squeeze(-1))


# 2^18: spf * hi stays exact in float32 for spf = 480 = 15 * 2^5 (18 + 4 bits <= 24).
_PHASE_GRID = float(2 ** 18)


class SineGen(nn.Module):
    """Harmonic sine source; the random initial phase and gaussian noise come in as arguments."""

    def __init__(self, sampling_rate: int, harmonic_num: int, sine_amp: float, noise_std: float,
                 voiced_threshold: float, samples_per_frame: int):
        super().__init__()
        self.sampling_rate = sampling_rate
        self.harmonic_num = harmonic_num
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold
        odd = samples_per_frame // (samples_per_frame & -samples_per_frame)
        if samples_per_frame < 1 or odd.bit_length() > 24 - 18:   # see _PHASE_GRID
            raise ValueError(f"samples_per_frame {samples_per_frame}: its odd factor must be below 64 for an exact "
                             "float32 phase")
        self.samples_per_frame = samples_per_frame

    def forward(self, f0: torch.Tensor, phase: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """f0: (B, 1, F) Hz per frame; phase: (B, H, 1); noise: (B, H, F * samples_per_frame) -> (B, H, S).

        Upstream repeats F0 to the sample rate and takes the cumulative sum of f0 * h / sr over every
        sample (float64 on torch's CPU, rounded to float32): up to hundreds of thousands of cycles,
        held to ~1e-4..1e-2 cycles, and TensorRT has no float64. F0 is constant within a frame, so
        the phase is built here in float32 from small, exactly summed numbers instead:
        - each frame advances spf * step cycles (step = f0 * h / sr); step is split into `hi` (a
          multiple of 2^-18, so spf * hi is exact in float32) and a tiny remainder `lo`;
        - whole cycles do not matter, so spf * hi is wrapped to [-0.5, 0.5): its frame-level
          cumulative sum is then exact (multiples of 2^-13 below 2^11, i.e. up to 4096 frames);
        - the frame start phase is the wrapped sum of both parts, plus the ramp within the frame.
        Measured against float64: <= 8e-6 cycles at 70..4096 frames (upstream's own rounding:
        1.2e-4 cycles at 70 frames, 7.8e-3 at 4096).
        """
        spf = self.samples_per_frame
        harmonics = torch.arange(1, self.harmonic_num + 2, device=f0.device, dtype=f0.dtype).view(1, -1, 1)
        step = f0 * harmonics / self.sampling_rate                     # (B, H, F) cycles per sample
        hi = torch.floor(step * _PHASE_GRID) / _PHASE_GRID
        lo = step - hi
        advance_hi = hi * spf
        advance_hi = advance_hi - torch.floor(advance_hi + 0.5)
        advance_lo = lo * spf
        # exclusive cumulative sums: the phase before each frame's first sample
        start_hi = torch.cumsum(advance_hi, dim=-1) - advance_hi
        start_lo = torch.cumsum(advance_lo, dim=-1) - advance_lo
        start = (start_hi - torch.floor(start_hi)) + (start_lo - torch.floor(start_lo))
        start = start - torch.floor(start)
        ramp = torch.arange(1, spf + 1, device=f0.device, dtype=f0.dtype)   # upstream's cumsum is inclusive
        cycles = (start.unsqueeze(-1) + step.unsqueeze(-1) * ramp).flatten(2)   # (B, H, F * spf)
        theta = 2 * math.pi * (cycles - torch.floor(cycles))
        sine = self.sine_amp * torch.sin(theta + phase)
        uv = torch.repeat_interleave((f0 > self.voiced_threshold).to(f0.dtype), spf, dim=2)
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        return sine * uv + noise_amp * noise


class SourceModuleHnNSF(nn.Module):
    def __init__(self, cfg: VocoderConfig):
        super().__init__()
        self.l_sin_gen = SineGen(cfg.sampling_rate, cfg.nb_harmonics, cfg.nsf_alpha, cfg.nsf_sigma,
                                 cfg.nsf_voiced_threshold, math.prod(cfg.upsample_rates) * cfg.hop_len)
        self.l_linear = nn.Linear(cfg.nb_harmonics + 1, 1)

    def forward(self, f0: torch.Tensor, phase: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """f0 (B, 1, F) per frame -> merged excitation (B, 1, F * samples_per_frame)."""
        sines = self.l_sin_gen(f0, phase, noise)
        return torch.tanh(self.l_linear(sines.transpose(1, 2))).transpose(1, 2)


class HiFTGenerator(nn.Module):
    def __init__(self, cfg: VocoderConfig):
        super().__init__()
        self.cfg = cfg
        self.upsample_rates = tuple(cfg.upsample_rates)
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.samples_per_frame = math.prod(cfg.upsample_rates) * cfg.hop_len
        self.m_source = SourceModuleHnNSF(cfg)
        base = cfg.base_channels
        self.conv_pre = weight_norm(nn.Conv1d(cfg.in_channels, base, 7, 1, padding=3))
        self.ups = nn.ModuleList([
            weight_norm(nn.ConvTranspose1d(base // 2 ** i, base // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))])
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        down_rates = [1] + list(cfg.upsample_rates[::-1][:-1])
        cum_rates = [math.prod(down_rates[: i + 1]) for i in range(len(down_rates))]
        n_spec = cfg.n_fft + 2
        for i, (u, k, d) in enumerate(zip(cum_rates[::-1], cfg.source_resblock_kernel_sizes,
                                          cfg.source_resblock_dilation_sizes)):
            ch = base // 2 ** (i + 1)
            self.source_downs.append(nn.Conv1d(n_spec, ch, 1, 1) if u == 1 else
                                     nn.Conv1d(n_spec, ch, u * 2, u, padding=u // 2))
            self.source_resblocks.append(ResBlock(ch, k, tuple(d)))
        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            ch = base // 2 ** (i + 1)
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(ResBlock(ch, k, tuple(d)))
        self.conv_post = weight_norm(nn.Conv1d(ch, n_spec, 7, 1, padding=3))
        self.f0_predictor = ConvRNNF0Predictor(cfg.in_channels, cfg.f0_cond_channels)
        self.spectral: nn.Module = TorchSpectral(cfg.n_fft, cfg.hop_len)

    @staticmethod
    def _mask(lengths: torch.Tensor, size: int | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return sequence_mask(lengths, size).unsqueeze(1).to(dtype)

    def source(self, f0: torch.Tensor, phase: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """f0 (B, F) at 50 Hz -> excitation (B, 1, F * 480)."""
        return self.m_source(f0.unsqueeze(1), phase, noise)   # F0 reaches the sample rate inside (fp32-safe phase)

    def decode(self, x: torch.Tensor, s: torch.Tensor, mel_lengths: torch.Tensor) -> torch.Tensor:
        """mel (B, 80, F) + excitation (B, 1, S) -> waveform (B, S) before clamping."""
        dtype = x.dtype
        s_lengths = mel_lengths * self.samples_per_frame
        hop = self.cfg.hop_len
        s_stft = self.spectral.stft(s.squeeze(1), s_lengths)
        stft_mask = self._mask(s_lengths // hop + 1, s_stft.shape[2], dtype)
        s_stft = s_stft * stft_mask

        x = self.conv_pre(x * self._mask(mel_lengths, x.shape[2], dtype))
        lengths = mel_lengths
        for i, rate in enumerate(self.upsample_rates):
            x = F.leaky_relu(x, self.cfg.lrelu_slope)
            x = self.ups[i](x * self._mask(lengths, x.shape[2], dtype))
            lengths = lengths * rate
            if i == len(self.upsample_rates) - 1:
                x = F.pad(x, (1, 0), mode="reflect")
                lengths = lengths + 1
            mask = self._mask(lengths, x.shape[2], dtype)
            si = self.source_resblocks[i](self.source_downs[i](s_stft), mask)
            x = x + si
            xs = self.resblocks[i * self.num_kernels](x, mask)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x, mask)
            x = xs / self.num_kernels
        x = self.conv_post(F.leaky_relu(x) * mask)
        bins = self.cfg.n_fft // 2 + 1
        magnitude = torch.clamp(torch.exp(x[:, :bins, :]), max=1e2)
        phase = torch.sin(x[:, bins:, :])
        return self.spectral.istft(magnitude * torch.cos(phase), magnitude * torch.sin(phase), mask)

    def forward(self, mel: torch.Tensor, mel_lengths: torch.Tensor, sine_phase: torch.Tensor,
                sine_noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """mel (B, 80, F), mel_lengths (B,), sine_phase (B, 9, 1), sine_noise (B, 9, 480F).

        Returns f0 (B, F), source (B, 1, 480F), istft (B, 480F) and wav (clamped, zero past each row's end)."""
        f0 = self.f0_predictor(mel, self._mask(mel_lengths, mel.shape[2], mel.dtype))
        s = self.source(f0, sine_phase, sine_noise)
        istft = self.decode(mel, s, mel_lengths)
        sample_mask = sequence_mask(mel_lengths * self.samples_per_frame, istft.shape[1]).to(istft.dtype)
        wav = torch.clamp(istft, -self.cfg.audio_limit, self.cfg.audio_limit) * sample_mask
        return {"f0": f0, "source": s, "istft": istft, "wav": wav}

"""S3TokenizerV2 ('speech_tokenizer_v2_25hz') up to its FSQ projection: log-mel (B, 128, T) at 100 Hz ->
FSQ values (B, ceil(T / 4), 8) at 25 Hz, before rounding.

State-dict names follow upstream's `tokenizer.*` entries (without that prefix): `encoder.conv1/conv2`
(two stride-2 convolutions), `encoder.blocks.N` (FSMN-augmented self-attention with rotary position
embeddings, then an MLP, both pre-norm residual) and `quantizer._codebook.project_down`. The log-mel
front end is computed outside the graph, so upstream's computed buffers `_mel_filters` and `window` are
not part of this module.

The graph stops before rounding on purpose: a token is a discontinuous function of h, so the caller
rounds (`fsq_tokens`, numpy) and can see which values sit close enough to a boundary that a tiny
numerical difference could flip the token.

Export-friendly: masks from lengths with tensor ops, rotary angles computed from positions in the graph
(no table that bounds T), nothing in place.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from s3gen_runtime.fsq import FSQ_SCALE, fsq_tokens  # noqa: F401  (re-exported: the rounding half of the FSQ)

from .layers import sequence_mask

# Added to attention logits of padded keys (upstream's value; its softmax weight is exactly 0).
MASK_BIAS = -1.0e10


@dataclass(frozen=True)
class TokenizerConfig:
    n_mels: int = 128
    n_state: int = 1280
    n_head: int = 20
    n_layer: int = 6
    fsmn_kernel: int = 31
    fsq_dim: int = 8
    rope_theta: float = 10000.0
    rope_dim: int = 64   # = n_state / n_head: every head dimension is rotated


def halve_length(lengths: torch.Tensor) -> torch.Tensor:
    """Valid frames after a kernel-3, stride-2, padding-1 conv: ceil(n / 2).

    Written as (n + 1) // 2 so the numerator is never negative: ONNX integer Div truncates toward zero,
    which differs from floor division for negative numerators (upstream's (n - 1) // 2 + 1 at n = 0)."""
    return torch.div(lengths + 1, 2, rounding_mode="floor")


def rotary_tables(positions: int | torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * frequency, (1, T, 1, D), both halves of D sharing the frequencies.

    The same float32 products and cos/sin as upstream's table (torch.polar of the outer product), but
    computed for the T positions at hand, so the graph accepts any length."""
    pos = torch.arange(positions, device=inv_freq.device).to(torch.float32)
    angles = pos.unsqueeze(1) * inv_freq.unsqueeze(0)
    angles = torch.cat([angles, angles], dim=-1)
    return torch.cos(angles)[None, :, None, :], torch.sin(angles)[None, :, None, :]


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in the half-split layout: pairs are (x[i], x[i + D/2])."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class FSMNMultiHeadAttention(nn.Module):
    """Self-attention (rotary q/k) plus an FSMN memory: a depthwise conv over the values added to the output."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        n = cfg.n_state
        self.n_head = cfg.n_head
        self.query = nn.Linear(n, n)
        self.key = nn.Linear(n, n, bias=False)
        self.value = nn.Linear(n, n)
        self.out = nn.Linear(n, n)
        self.fsmn_block = nn.Conv1d(n, n, cfg.fsmn_kernel, groups=n, bias=False)
        self.left_pad = (cfg.fsmn_kernel - 1) // 2
        self.right_pad = cfg.fsmn_kernel - 1 - self.left_pad

    def fsmn(self, v: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, T, C) values, (B, T, 1) valid-frame mask -> memory, zero on padded frames."""
        v = v * valid
        memory = self.fsmn_block(F.pad(v.transpose(1, 2), (self.left_pad, self.right_pad))).transpose(1, 2)
        return (memory + v) * valid

    def attend(self, q, k, v, bias):
        """q, k, v (B, T, H, d); bias (B, 1, 1, T). The 1/sqrt(d) scale is split between q and k as upstream."""
        scale = q.shape[-1] ** -0.25
        q = q.permute(0, 2, 1, 3) * scale
        k = k.permute(0, 2, 3, 1) * scale
        weights = torch.softmax(q @ k + bias, dim=-1)
        return (weights @ v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3).flatten(2)

    def forward(self, x, bias, valid, cos, sin):
        b, t, c = x.shape
        heads = (b, t, self.n_head, c // self.n_head)
        q = rotate(self.query(x).reshape(heads), cos, sin)
        k = rotate(self.key(x).reshape(heads), cos, sin)
        v = self.value(x)
        memory = self.fsmn(v, valid)
        return self.out(self.attend(q, k, v.reshape(heads), bias)) + memory


class ResidualAttentionBlock(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.attn = FSMNMultiHeadAttention(cfg)
        self.attn_ln = nn.LayerNorm(cfg.n_state, eps=1e-5)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_state, 4 * cfg.n_state), nn.GELU(),
                                 nn.Linear(4 * cfg.n_state, cfg.n_state))
        self.mlp_ln = nn.LayerNorm(cfg.n_state, eps=1e-5)

    def forward(self, x, bias, valid, cos, sin):
        x = x + self.attn(self.attn_ln(x), bias, valid, cos, sin)
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoderV2(nn.Module):
    """(B, 128, T) log-mel + lengths -> (B, ceil(T / 4), 1280) hidden states + their lengths."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.n_state, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(cfg.n_state, cfg.n_state, 3, stride=2, padding=1)
        self.blocks = nn.ModuleList(ResidualAttentionBlock(cfg) for _ in range(cfg.n_layer))
        exponents = torch.arange(0, cfg.rope_dim, 2)[: cfg.rope_dim // 2].to(torch.float32) / cfg.rope_dim
        # computed, not loaded: kept out of the state dict like upstream's frequency table
        self.register_buffer("inv_freq", 1.0 / (cfg.rope_theta ** exponents), persistent=False)

    def downsample(self, mel: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two masked stride-2 convs: each input is zeroed past its row's length first, so a padded row's
        valid frames equal those of the same row alone."""
        x = mel * sequence_mask(lengths, mel.shape[-1]).unsqueeze(1).to(mel.dtype)
        x = F.gelu(self.conv1(x))
        lengths = halve_length(lengths)
        x = x * sequence_mask(lengths, x.shape[-1]).unsqueeze(1).to(x.dtype)
        x = F.gelu(self.conv2(x))
        return x.transpose(1, 2), halve_length(lengths)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths = self.downsample(mel, lengths)
        valid = sequence_mask(lengths, x.shape[1]).to(x.dtype)           # (B, T')
        bias = ((1.0 - valid) * MASK_BIAS)[:, None, None, :]             # padded keys get no weight
        cos, sin = rotary_tables(x.shape[1], self.inv_freq)
        for block in self.blocks:
            x = block(x, bias, valid.unsqueeze(-1), cos, sin)
        return x, lengths


class FSQCodebook(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.project_down = nn.Linear(cfg.n_state, cfg.fsq_dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Pre-rounding FSQ values in (-1, 1): tanh times upstream's float32 scale 0.999."""
        return torch.tanh(self.project_down(hidden)) * FSQ_SCALE


class FSQVectorQuantization(nn.Module):
    """Holds the codebook under upstream's name (quantizer._codebook)."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self._codebook = FSQCodebook(cfg)


class S3TokenizerV2(nn.Module):
    """log-mel (B, 128, T) + lengths (B,) int64 -> FSQ values (B, ceil(T / 4), 8) + their lengths (B,).

    Tokens: `fsq_tokens(fsq)` (numpy). Values past a row's length are not meaningful."""

    def __init__(self, cfg: TokenizerConfig = TokenizerConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = AudioEncoderV2(cfg)
        self.quantizer = FSQVectorQuantization(cfg)

    def forward(self, mel: torch.Tensor, mel_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, lengths = self.encoder(mel, mel_lengths)
        return self.quantizer._codebook(hidden), lengths

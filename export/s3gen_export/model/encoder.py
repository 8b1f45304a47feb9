"""UpsampleConformerEncoder: speech tokens (embedded, 25 Hz) -> hidden states at 50 Hz.

Same module names and maths as upstream (CosyVoice2 / Chatterbox): linear input layer, 3-token
pre-lookahead conv, 6 conformer blocks with espnet relative-position self-attention, 2x nearest
upsample + causal conv, a second input layer, 4 more blocks, final LayerNorm.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncoderConfig
from .layers import sequence_mask


def relative_position_table(d_model: int, max_len: int) -> torch.Tensor:
    """espnet's relative positional table: (1, 2*max_len - 1, d_model), positions max_len-1 .. -(max_len-1)."""
    position = torch.arange(0, max_len, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    pe_positive = torch.zeros(max_len, d_model)
    pe_negative = torch.zeros(max_len, d_model)
    pe_positive[:, 0::2] = torch.sin(position * div_term)
    pe_positive[:, 1::2] = torch.cos(position * div_term)
    pe_negative[:, 0::2] = torch.sin(-1 * position * div_term)
    pe_negative[:, 1::2] = torch.cos(-1 * position * div_term)
    pe_positive = torch.flip(pe_positive, [0]).unsqueeze(0)
    pe_negative = pe_negative[1:].unsqueeze(0)
    return torch.cat([pe_positive, pe_negative], dim=1)


class RelPositionalEncoding(nn.Module):
    """Scales x by sqrt(d) and returns the centred slice of the positional table for length T."""

    def __init__(self, d_model: int, table: torch.Tensor):
        super().__init__()
        self.xscale = math.sqrt(d_model)
        self.register_buffer("pe", table, persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = x.size(1)
        center = self.pe.size(1) // 2
        return x * self.xscale, self.pe[:, center - size + 1: center + size]


class LinearInput(nn.Module):
    """upstream LinearNoSubsampling: Linear + LayerNorm (+ dropout, identity at inference) + pos. enc."""

    def __init__(self, idim: int, odim: int, table: torch.Tensor):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=1e-5))
        self.pos_enc = RelPositionalEncoding(odim, table)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pos_enc(self.out(x))


class RelPositionMultiHeadedAttention(nn.Module):
    def __init__(self, n_head: int, n_feat: int):
        super().__init__()
        self.d_k = n_feat // n_head
        self.h = n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(self.h, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(self.h, self.d_k))
        self.head_by_head = False   # export-time switch (use_head_by_head_attention)

    @staticmethod
    def rel_shift(x: torch.Tensor) -> torch.Tensor:
        """(B, H, T, 2T-1) scores against relative positions -> (B, H, T, T) against key positions."""
        b, h, t1, t2 = x.shape
        zero_pad = torch.zeros((b, h, t1, 1), dtype=x.dtype, device=x.device)
        x_padded = torch.cat([zero_pad, x], dim=-1).view(b, h, t2 + 1, t1)
        return x_padded[:, :, 1:].reshape(b, h, t1, t2)[:, :, :, : t2 // 2 + 1]

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C); key_mask: (B, 1, T) bool, True on valid keys; pos_emb: (1, 2T-1, C)."""
        b = x.size(0)
        q = self.linear_q(x).view(b, -1, self.h, self.d_k)                   # (B, T, H, d)
        k = self.linear_k(x).view(b, -1, self.h, self.d_k).transpose(1, 2)   # (B, H, T, d)
        v = self.linear_v(x).view(b, -1, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos_emb).view(pos_emb.size(0), -1, self.h, self.d_k).transpose(1, 2)
        q_u = (q + self.pos_bias_u).transpose(1, 2)
        q_v = (q + self.pos_bias_v).transpose(1, 2)
        masked = ~key_mask.unsqueeze(1)                                     # (B, 1, 1, T)
        if self.head_by_head:
            heads = [self._attend(q_u[:, i:i + 1], q_v[:, i:i + 1], k[:, i:i + 1], v[:, i:i + 1], p[:, i:i + 1], masked)
                     for i in range(self.h)]
            context = torch.cat(heads, dim=1)
        else:
            context = self._attend(q_u, q_v, k, v, p, masked)
        return self.linear_out(context.transpose(1, 2).reshape(b, -1, self.h * self.d_k))

    def _attend(self, q_u, q_v, k, v, p, masked) -> torch.Tensor:
        """Relative-position attention of the given heads: (B, h, T, d) context."""
        matrix_ac = torch.matmul(q_u, k.transpose(-2, -1))
        matrix_bd = self.rel_shift(torch.matmul(q_v, p.transpose(-2, -1)))
        scores = (matrix_ac + matrix_bd) / math.sqrt(self.d_k)
        attn = torch.softmax(scores.masked_fill(masked, float("-inf")), dim=-1).masked_fill(masked, 0.0)
        return torch.matmul(attn, v)


def use_head_by_head_attention(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Export-time switch: every encoder attention computes its heads one after another. Same maths;
    the (B, H, T, 2T - 1) relative-position scores and their shifted copies are never all alive, so
    the graph's peak memory at long inputs falls ~H-fold in attention (upstream computes all heads at
    once, which the eager reference keeps)."""
    for module in model.modules():
        if isinstance(module, RelPositionMultiHeadedAttention):
            module.head_by_head = enabled
    return model


class PositionwiseFeedForward(nn.Module):
    def __init__(self, idim: int, hidden_units: int):
        super().__init__()
        self.w_1 = nn.Linear(idim, hidden_units)
        self.w_2 = nn.Linear(hidden_units, idim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerEncoderLayer(nn.Module):
    """Pre-norm block: self-attention then feed-forward (no macaron, no conv module in S3Gen)."""

    def __init__(self, size: int, heads: int, linear_units: int):
        super().__init__()
        self.self_attn = RelPositionMultiHeadedAttention(heads, size)
        self.feed_forward = PositionwiseFeedForward(size, linear_units)
        self.norm_ff = nn.LayerNorm(size, eps=1e-12)
        self.norm_mha = nn.LayerNorm(size, eps=1e-12)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), key_mask, pos_emb)
        return x + self.feed_forward(self.norm_ff(x))


class PreLookaheadLayer(nn.Module):
    """Each token sees the next `pre_lookahead_len` tokens (right pad), then a causal k=3 conv."""

    def __init__(self, channels: int, pre_lookahead_len: int):
        super().__init__()
        self.pre_lookahead_len = pre_lookahead_len
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=pre_lookahead_len + 1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = F.pad(inputs.transpose(1, 2), (0, self.pre_lookahead_len))
        x = F.pad(F.leaky_relu(self.conv1(x)), (2, 0))
        return self.conv2(x).transpose(1, 2) + inputs


class UpsampleLayer(nn.Module):
    """2x nearest upsample, then a causal conv of kernel 2*stride+1."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(channels, channels, stride * 2 + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # repeat_interleave == nearest interpolation by an integer factor, and exports without Resize.
        x = torch.repeat_interleave(x, self.stride, dim=2)
        return self.conv(F.pad(x, (self.stride * 2, 0)))


class UpsampleConformerEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d = cfg.output_size
        table = relative_position_table(d, cfg.max_positions)
        self.embed = LinearInput(cfg.input_size, d, table)
        self.pre_lookahead_layer = PreLookaheadLayer(d, cfg.pre_lookahead_len)
        self.encoders = nn.ModuleList(
            [ConformerEncoderLayer(d, cfg.attention_heads, cfg.linear_units) for _ in range(cfg.num_blocks)])
        self.up_layer = UpsampleLayer(d, cfg.upsample_stride)
        self.up_embed = LinearInput(cfg.input_size, d, table)
        self.up_encoders = nn.ModuleList(
            [ConformerEncoderLayer(d, cfg.attention_heads, cfg.linear_units) for _ in range(cfg.num_up_blocks)])
        self.after_norm = nn.LayerNorm(d, eps=1e-5)

    def forward(self, xs: torch.Tensor, xs_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """xs: (B, L, 512) embedded tokens, zero on padding; xs_lens: (B,).
        Returns hidden (B, 2L, 512) and the upsampled lengths (B,)."""
        key_mask = sequence_mask(xs_lens, xs.size(1)).unsqueeze(1)
        xs, pos_emb = self.embed(xs)
        # Zero the padding before the lookahead conv: upstream (batch 1, no padding) sees zeros past
        # the last token, so a padded row must too, or its last 3 tokens change.
        xs = self.pre_lookahead_layer(xs * key_mask.transpose(1, 2).to(xs.dtype))
        for layer in self.encoders:
            xs = layer(xs, key_mask, pos_emb)
        xs = self.up_layer(xs.transpose(1, 2)).transpose(1, 2)
        up_lens = xs_lens * self.up_layer.stride
        key_mask = sequence_mask(up_lens, xs.size(1)).unsqueeze(1)
        xs, pos_emb = self.up_embed(xs)
        for layer in self.up_encoders:
            xs = layer(xs, key_mask, pos_emb)
        return self.after_norm(xs), up_lens

"""ConditionalDecoder: the flow-matching U-Net that predicts the velocity field.

A causal 1-D U-Net (one down, twelve mid, one up block; none of them changes the resolution),
each block a causal ResNet block followed by 4 transformer blocks. Names and maths follow
upstream (Matcha-TTS / CosyVoice2 / Chatterbox, diffusers attention), including the meanflow
(Turbo) variant that embeds a second time `r` and mixes both embeddings.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import EstimatorConfig
from .layers import CausalConv1d, Transpose


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor, scale: float = 1000.0) -> torch.Tensor:
        half_dim = self.dim // 2
        step = math.log(10000) / (half_dim - 1)
        freqs = torch.exp(torch.arange(half_dim, device=t.device).float() * -step)
        emb = scale * t.unsqueeze(1) * freqs.unsqueeze(0)
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels: int, time_embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class CausalBlock1D(nn.Module):
    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.block = nn.Sequential(
            CausalConv1d(dim, dim_out, 3), Transpose(1, 2), nn.LayerNorm(dim_out), Transpose(1, 2), nn.Mish())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.block(x * mask) * mask


class CausalResnetBlock1D(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_emb_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_emb_dim, dim_out))
        self.block1 = CausalBlock1D(dim, dim_out)
        self.block2 = CausalBlock1D(dim_out, dim_out)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x, mask) + self.mlp(time_emb).unsqueeze(-1)
        h = self.block2(h, mask)
        return h + self.res_conv(x * mask)


# The op Attention calls when `fused` is set: eager SDPA here, one ONNX Runtime kernel in the graph
# (fused_attention.TRANSLATION_TABLE). Defined with the model, so the model never imports the export side.
@torch.library.custom_op("s3gen::key_masked_attention", mutates_args=())
def key_masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor,
                         num_heads: int) -> torch.Tensor:
    """q, k, v: (B, T, heads * dim); key_valid: (B, T) int32, 1 on keys to attend to. -> (B, T, heads * dim)."""
    b, t, width = q.shape

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(b, -1, num_heads, width // num_heads).transpose(1, 2)

    keep = (key_valid > 0)[:, None, None, :]
    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=keep)
    return out.transpose(1, 2).reshape(b, t, width)


@key_masked_attention.register_fake
def _(q, k, v, key_valid, num_heads):
    return torch.empty_like(q)


class Attention(nn.Module):
    """diffusers' Attention with AttnProcessor2_0, self-attention only, additive key bias."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])
        # export-time switch (fused_attention.use_fused_attention): one contrib-op kernel for ORT
        self.fused = False

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C); key_bias: (B, 1, 1, T), 0 on valid keys and MASKED_KEY_BIAS on padding."""
        b = x.size(0)
        if self.fused:
            key_valid = (key_bias[:, 0, 0, :] == 0).to(torch.int32)
            out = key_masked_attention(self.to_q(x), self.to_k(x), self.to_v(x), key_valid, self.heads)
            return self.to_out[0](out)
        q = self.to_q(x).view(b, -1, self.heads, self.to_q.out_features // self.heads).transpose(1, 2)
        k = self.to_k(x).view(b, -1, self.heads, self.to_k.out_features // self.heads).transpose(1, 2)
        v = self.to_v(x).view(b, -1, self.heads, self.to_v.out_features // self.heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(b, -1, self.to_q.out_features)
        return self.to_out[0](out)


class GELUProj(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GELUProj(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim_head)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x), key_bias) + x
        return self.ff(self.norm3(x)) + x


def _transformer_stack(cfg: EstimatorConfig) -> nn.ModuleList:
    return nn.ModuleList([BasicTransformerBlock(cfg.channels, cfg.num_heads, cfg.attention_head_dim)
                          for _ in range(cfg.n_blocks)])


# Bias on padded keys: the most negative finite fp16 value, so it survives an fp16/bf16 engine
# (upstream's -1e10 becomes -inf there, and (1 - mask) * -inf is NaN on valid keys). exp() of it
# underflows to 0 in every float type, so padded keys still get zero attention weight.
MASKED_KEY_BIAS = float(torch.finfo(torch.float16).min)


def key_bias_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, T) float mask -> (B, 1, 1, T) additive attention bias: 0 on valid keys, MASKED_KEY_BIAS on
    padding. A select rather than upstream's (1 - mask) * -1e10: no multiply by a huge constant."""
    bias = torch.where(mask > 0, 0.0, MASKED_KEY_BIAS).to(mask.dtype)
    return bias.unsqueeze(1)


class ConditionalDecoder(nn.Module):
    def __init__(self, cfg: EstimatorConfig):
        super().__init__()
        self.cfg = cfg
        self.meanflow = cfg.meanflow
        ch, temb = cfg.channels, cfg.time_embed_dim
        self.time_embeddings = SinusoidalPosEmb(cfg.in_channels)
        self.time_mlp = TimestepEmbedding(cfg.in_channels, temb)
        self.down_blocks = nn.ModuleList([nn.ModuleList([
            CausalResnetBlock1D(cfg.in_channels, ch, temb), _transformer_stack(cfg), CausalConv1d(ch, ch, 3)])])
        self.mid_blocks = nn.ModuleList([nn.ModuleList([CausalResnetBlock1D(ch, ch, temb), _transformer_stack(cfg)])
                                         for _ in range(cfg.num_mid_blocks)])
        self.up_blocks = nn.ModuleList([nn.ModuleList([
            CausalResnetBlock1D(2 * ch, ch, temb), _transformer_stack(cfg), CausalConv1d(ch, ch, 3)])])
        self.final_block = CausalBlock1D(ch, ch)
        self.final_proj = nn.Conv1d(ch, cfg.out_channels, 1)
        if self.meanflow:
            self.time_embed_mixer = nn.Linear(2 * temb, temb, bias=False)

    def embed_time(self, t: torch.Tensor, r: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_mlp(self.time_embeddings(t).to(t.dtype))
        if self.meanflow:
            emb_r = self.time_mlp(self.time_embeddings(r).to(t.dtype))
            emb = self.time_embed_mixer(torch.cat([emb, emb_r], dim=1))
        return emb

    @staticmethod
    def _run_transformers(x: torch.Tensor, blocks: nn.ModuleList, key_bias: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)
        for block in blocks:
            x = block(x, key_bias)
        return x.transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                spks: torch.Tensor, cond: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        """x, mu, cond: (B, 80, T); mask: (B, 1, T); t, r: (B,); spks: (B, 80). Returns (B, 80, T)."""
        temb = self.embed_time(t, r)
        spks_t = spks.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        h = torch.cat([x, mu, spks_t, cond], dim=1)
        key_bias = key_bias_from_mask(mask)

        resnet, transformers, downsample = self.down_blocks[0]
        h = resnet(h, mask, temb)
        skip = self._run_transformers(h, transformers, key_bias)
        h = downsample(skip * mask)
        for resnet, transformers in self.mid_blocks:
            h = self._run_transformers(resnet(h, mask, temb), transformers, key_bias)
        resnet, transformers, upsample = self.up_blocks[0]
        h = resnet(torch.cat([h, skip], dim=1), mask, temb)
        h = upsample(self._run_transformers(h, transformers, key_bias) * mask)
        h = self.final_block(h, mask)
        return self.final_proj(h * mask) * mask


class GuidedEstimator(nn.Module):
    """Classifier-free guidance inside the graph: builds the 2B batch with concat (no in-place slice
    writes, so batch and length stay dynamic) and returns the guided velocity for the B rows."""

    def __init__(self, decoder: ConditionalDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, x, mask, mu, t, spks, cond, cfg_rate, r=None):
        x2 = torch.cat([x, x], dim=0)
        mask2 = torch.cat([mask, mask], dim=0)
        mu2 = torch.cat([mu, torch.zeros_like(mu)], dim=0)
        t2 = torch.cat([t, t], dim=0)
        spks2 = torch.cat([spks, torch.zeros_like(spks)], dim=0)
        cond2 = torch.cat([cond, torch.zeros_like(cond)], dim=0)
        r2 = None if r is None else torch.cat([r, r], dim=0)
        v = self.decoder(x2, mask2, mu2, t2, spks2, cond2, r2)
        batch = x.shape[0]
        v_cond, v_uncond = v[:batch], v[batch:]   # slicing, not chunk(): chunk's guards pin the batch
        w = cfg_rate.view(-1, 1, 1)
        return (1.0 + w) * v_cond - w * v_uncond

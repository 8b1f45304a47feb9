"""S3Gen as one module tree whose state-dict names match upstream checkpoints: flow.*, mel2wav.* and,
when the checkpoint has them, the voice models speaker_encoder.* and tokenizer.*."""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .config import S3GenConfig
from .encoder import UpsampleConformerEncoder
from .estimator import ConditionalDecoder
from .layers import gather_ragged_concat, sequence_mask
from .speaker_encoder import CAMPPlus
from .tokenizer import S3TokenizerV2
from .vocoder import HiFTGenerator


class CFMDecoder(nn.Module):
    """Holds the estimator under upstream's name (flow.decoder.estimator)."""

    def __init__(self, cfg: S3GenConfig):
        super().__init__()
        self.estimator = ConditionalDecoder(cfg.estimator)


class Flow(nn.Module):
    """Token embedding, speaker projection, conformer encoder and its projection to 80 mel bins."""

    def __init__(self, cfg: S3GenConfig):
        super().__init__()
        enc = cfg.encoder
        self.input_embedding = nn.Embedding(enc.vocab_size, enc.input_size)
        self.spk_embed_affine_layer = nn.Linear(enc.speaker_embed_dim, enc.mel_bins)
        self.encoder = UpsampleConformerEncoder(enc)
        self.encoder_proj = nn.Linear(enc.output_size, enc.mel_bins)
        self.decoder = CFMDecoder(cfg)

    def speaker(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, 192) x-vector -> (B, 80): L2-normalised, then projected."""
        return self.spk_embed_affine_layer(F.normalize(embedding, dim=1))

    def encode(self, tokens: torch.Tensor, token_lengths: torch.Tensor,
               prompt_tokens: torch.Tensor, prompt_lengths: torch.Tensor,
               prompt_feat: torch.Tensor, prompt_feat_lengths: torch.Tensor,
               embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything the estimator needs, for right-padded batches.

        tokens (B, N) + token_lengths, prompt_tokens (B, P) + prompt_lengths, prompt_feat (B, W, 80) valid
        for prompt_feat_lengths frames (F = 2P or 2P + 1: upstream's embed_ref leaves an odd frame when
        the clip is not a multiple of 40 ms), embedding (B, 192). Row b's sequence is its prompt then its
        tokens; T = 2 (P + N) whatever F is. Returns mu (B, 80, T), mask (B, 1, T), spks (B, 80), cond
        (B, 80, T).
        """
        seq, seq_lengths = gather_ragged_concat(prompt_tokens, prompt_lengths, tokens, token_lengths)
        token_mask = sequence_mask(seq_lengths, seq.shape[1]).unsqueeze(-1)
        # padded ids may be anything: clamp before the lookup, the mask zeroes them after it
        emb = self.input_embedding(seq.clamp(0, self.input_embedding.num_embeddings - 1))
        emb = emb * token_mask.to(emb.dtype)
        h, h_lengths = self.encoder(emb, seq_lengths)
        mu = self.encoder_proj(h).transpose(1, 2)
        frames = h.shape[1]
        mask = sequence_mask(h_lengths, frames).unsqueeze(1).to(mu.dtype)
        return {"mu": mu, "mask": mask, "spks": self.speaker(embedding),
                "cond": prompt_condition(prompt_feat, prompt_feat_lengths, frames)}


def prompt_condition(prompt_feat: torch.Tensor, prompt_feat_lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """cond (B, 80, frames): row b's first prompt_feat_lengths[b] prompt frames, zeros after.

    The prompt's padded width W is independent of `frames` (F is not a function of P), so the frames
    are gathered with clamped indices instead of padding by frames - W, whose sign an exported graph
    could not know; frames past each row's F are masked to zero.
    """
    index = torch.arange(frames, device=prompt_feat.device).clamp(max=prompt_feat.shape[1] - 1)
    feat = prompt_feat.index_select(1, index)
    keep = sequence_mask(prompt_feat_lengths, frames).unsqueeze(-1).to(feat.dtype)
    return (feat * keep).transpose(1, 2)


class S3Gen(nn.Module):
    """tokens -> wav (flow, mel2wav); with `voice`, also the models that make a voice from reference
    audio (speaker_encoder: fbank -> x-vector, tokenizer: 16 kHz log-mel -> FSQ values)."""

    def __init__(self, cfg: S3GenConfig, voice: bool = False):
        super().__init__()
        self.cfg = cfg
        self.flow = Flow(cfg)
        self.mel2wav = HiFTGenerator(cfg.vocoder)
        if voice:
            self.speaker_encoder = CAMPPlus()
            self.tokenizer = S3TokenizerV2()

    @property
    def variant(self) -> str:
        return self.cfg.variant

    @property
    def has_voice(self) -> bool:
        return hasattr(self, "speaker_encoder")


def build_model(variant: str = "standard", voice: bool = False) -> S3Gen:
    return S3Gen(S3GenConfig.for_variant(variant), voice=voice).eval()


@lru_cache(maxsize=None)
def _expected_entries(variant: str, voice: bool) -> tuple[tuple[str, tuple[int, ...], str], ...]:
    with torch.device("meta"):
        model = S3Gen(S3GenConfig.for_variant(variant), voice=voice)
    return tuple((k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items())


def expected_state_dict(variant: str, voice: bool = False) -> dict[str, tuple[int, ...]]:
    """name -> shape of every entry a checkpoint of this variant must hold (built on the meta device);
    with `voice`, the speaker_encoder.* and tokenizer.* entries too (the same for both variants)."""
    return {k: shape for k, shape, _ in _expected_entries(variant, voice)}


def voice_state_dict() -> dict[str, tuple[int, ...]]:
    """name -> shape of the voice models' entries alone (speaker_encoder.*, tokenizer.*)."""
    flow_only = expected_state_dict("standard")
    return {k: s for k, s in expected_state_dict("standard", voice=True).items() if k not in flow_only}


def expected_layout(variant: str, voice: bool = False) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype name): what a synthetic checkpoint writes (BatchNorm counters are int64)."""
    return {k: (shape, dtype) for k, shape, dtype in _expected_entries(variant, voice)}


def load_s3gen(path) -> S3Gen:
    """Build the model for the checkpoint's variant, with the voice models when the file has them, and
    load its weights (strict key/shape checks)."""
    from .checkpoint import has_voice, load_checkpoint

    variant, state = load_checkpoint(path, expected_state_dict, voice_layout=voice_state_dict())
    model = build_model(variant, voice=has_voice(state))
    model.load_state_dict(state, strict=True)
    return model.eval()

"""S3Gen configuration: upstream Chatterbox defaults, and the two checkpoint variants."""
from __future__ import annotations

from dataclasses import dataclass, field

from s3gen_runtime.constants import VARIANTS


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 6561
    input_size: int = 512
    output_size: int = 512
    attention_heads: int = 8
    linear_units: int = 2048
    num_blocks: int = 6
    num_up_blocks: int = 4
    pre_lookahead_len: int = 3
    upsample_stride: int = 2
    max_positions: int = 5000      # EspnetRelPositionalEncoding table
    mel_bins: int = 80
    speaker_embed_dim: int = 192


@dataclass(frozen=True)
class EstimatorConfig:
    in_channels: int = 320         # x, mu, spks, cond: 4 x 80
    out_channels: int = 80
    channels: int = 256
    attention_head_dim: int = 64
    num_heads: int = 8
    n_blocks: int = 4              # transformer blocks per U-Net block
    num_mid_blocks: int = 12
    meanflow: bool = False

    @property
    def time_embed_dim(self) -> int:
        return self.channels * 4


@dataclass(frozen=True)
class VocoderConfig:
    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 24000
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernel_sizes: tuple[int, ...] = (16, 11, 7)
    n_fft: int = 16
    hop_len: int = 4
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 7, 11)
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_cond_channels: int = 512


@dataclass(frozen=True)
class S3GenConfig:
    variant: str = "standard"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    cfg_rate: float = 0.7
    n_timesteps: int = 10

    @staticmethod
    def for_variant(variant: str) -> "S3GenConfig":
        if variant not in VARIANTS:
            raise ValueError(f"unknown S3Gen variant {variant!r}; known: {', '.join(VARIANTS)}")
        if variant == "meanflow":
            # Turbo: the estimator also embeds r; distilled with CFG, so none at inference; 2 steps.
            return S3GenConfig(variant=variant, estimator=EstimatorConfig(meanflow=True),
                               cfg_rate=0.0, n_timesteps=2)
        return S3GenConfig(variant=variant)

"""Which Vocos models can vocode S3Gen's mels: the feature-compatibility gate.

A vocoder only works on the features it was trained on. A Vocos `config.yaml` names its feature extractor
(class_path + init_args); from those we derive the mel settings the model was trained with and compare
them, one by one, to S3Gen's mel (the one the flow decoder produces). `S3GenMelFeatures` is that mel as a
Vocos feature extractor, so that a Vocos trained on S3Gen's features can be configured (and trained) with
`class_path: s3gen_export.model.vocos_features.S3GenMelFeatures` (configs written before the module moved
into model/ name `s3gen_export.vocos_features.S3GenMelFeatures`, which is still read as the same class).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from s3gen_runtime.constants import MEL_BINS, SAMPLE_RATE, SAMPLES_PER_FRAME
from s3gen_runtime.frontend.mel import slaney_mel_basis

from .dsp import hann_window

S3GEN_FEATURES = "s3gen_export.model.vocos_features.S3GenMelFeatures"
S3GEN_FEATURES_BEFORE_MOVE = "s3gen_export.vocos_features.S3GenMelFeatures"
VOCOS_MEL = "vocos.feature_extractors.MelSpectrogramFeatures"
ISTFT_HEAD = "vocos.heads.ISTFTHead"
VOCOS_BACKBONE = "vocos.models.VocosBackbone"

# S3Gen's mel (upstream's mel_spectrogram, matcha-style), one entry per setting the gate compares.
S3GEN_N_FFT = 1920
S3GEN_FMAX = 8000.0


def padding_text(pad: int, centred: bool) -> str:
    return f"reflect {pad} each side, {'centred' if centred else 'not centred'}"


def s3gen_settings(sample_rate=SAMPLE_RATE, n_fft=S3GEN_N_FFT, hop_length=SAMPLES_PER_FRAME, n_mels=MEL_BINS,
                   f_min=0.0, f_max=S3GEN_FMAX) -> dict[str, object]:
    """The settings of an S3GenMelFeatures with these init_args (the defaults are S3Gen's mel)."""
    return {"sample_rate": sample_rate, "hop_length": hop_length, "n_fft": n_fft, "win_length": n_fft,
            "window": "hann (periodic)", "n_mels": n_mels, "mel_scale": "slaney", "mel_norm": "slaney",
            "f_min": float(f_min), "f_max": float(f_max), "log": "log(max(x, 1e-05))",
            "padding": padding_text((n_fft - hop_length) // 2, centred=False),
            "magnitude": "sqrt(re^2 + im^2 + 1e-09)"}


S3GEN_MEL = s3gen_settings()


def vocos_mel_settings(sample_rate=24000, n_fft=1024, hop_length=256, n_mels=100, padding="center") -> dict:
    """vocos' MelSpectrogramFeatures (its defaults): torchaudio MelSpectrogram with power 1, whose own
    defaults are an HTK mel scale without filter normalisation, f_max = sample_rate / 2, win = n_fft,
    periodic Hann; vocos' safe_log floors at 1e-7; 'center' pads n_fft/2 and centres the frames,
    'same' pads (win - hop)/2 itself and does not centre."""
    pad = n_fft // 2 if padding == "center" else (n_fft - hop_length) // 2
    return {"sample_rate": sample_rate, "hop_length": hop_length, "n_fft": n_fft, "win_length": n_fft,
            "window": "hann (periodic)", "n_mels": n_mels, "mel_scale": "htk", "mel_norm": "none",
            "f_min": 0.0, "f_max": float(sample_rate / 2), "log": "log(max(x, 1e-07))",
            "padding": padding_text(pad, centred=padding == "center"), "magnitude": "sqrt(re^2 + im^2)"}


KNOWN_FEATURES = {S3GEN_FEATURES: s3gen_settings, S3GEN_FEATURES_BEFORE_MOVE: s3gen_settings,
                  VOCOS_MEL: vocos_mel_settings}


class VocosMismatch(ValueError):
    """The Vocos model cannot vocode S3Gen's mels; str() has one line per differing setting."""

    def __init__(self, lines: list[str], where: str = "this Vocos model"):
        super().__init__(f"{where} cannot vocode S3Gen's mels ({len(lines)} settings differ; "
                         "only a Vocos trained on S3Gen's mel features can):\n" + "\n".join(lines))
        self.lines = list(lines)


def feature_mismatches(feature_extractor: dict) -> list[str]:
    """One line per setting of the config's feature extractor that differs from S3Gen's mel."""
    class_path = feature_extractor.get("class_path")
    if class_path not in KNOWN_FEATURES:
        return [f"feature_extractor: {class_path!r} is not a mel extractor whose settings are known "
                f"(known: {', '.join(KNOWN_FEATURES)})"]
    try:
        settings = KNOWN_FEATURES[class_path](**feature_extractor.get("init_args", {}))
    except TypeError as e:
        return [f"feature_extractor: init_args do not fit {class_path}: {e}"]
    return [f"{key}: {settings[key]!r} (S3Gen's mel: {want!r})" for key, want in S3GEN_MEL.items()
            if settings[key] != want]


def model_mismatches(config: dict) -> list[str]:
    """Backbone and head must take 80-bin frames and give 480 samples per frame (one graph, no resampling)."""
    lines = []
    backbone, head = config.get("backbone", {}), config.get("head", {})
    b_args, h_args = backbone.get("init_args", {}), head.get("init_args", {})
    if backbone.get("class_path") != VOCOS_BACKBONE:
        lines.append(f"backbone: {backbone.get('class_path')!r} (exportable: {VOCOS_BACKBONE})")
    elif b_args.get("adanorm_num_embeddings") is not None:
        lines.append("backbone.adanorm_num_embeddings: set (an Encodec-bandwidth model; mel models have none)")
    if b_args.get("input_channels") != MEL_BINS:
        lines.append(f"backbone.input_channels: {b_args.get('input_channels')!r} (S3Gen's mel: {MEL_BINS})")
    if head.get("class_path") != ISTFT_HEAD:
        lines.append(f"head: {head.get('class_path')!r} (exportable: {ISTFT_HEAD})")
    if h_args.get("hop_length") != SAMPLES_PER_FRAME:
        lines.append(f"head.hop_length: {h_args.get('hop_length')!r} (S3Gen: {SAMPLES_PER_FRAME} samples per mel frame)")
    if h_args.get("padding", "same") != "same":
        lines.append(f"head.padding: {h_args.get('padding')!r} (S3Gen: 'same', hop_length samples per frame)")
    return lines


def check_vocos_config(config: dict, where: str = "this Vocos model") -> None:
    """Raise VocosMismatch naming every difference; silent when the model can vocode S3Gen's mels."""
    if not isinstance(config, dict) or "feature_extractor" not in config:
        raise VocosMismatch(["config: no feature_extractor section (not a vocos config.yaml)"], where)
    lines = feature_mismatches(config["feature_extractor"]) + model_mismatches(config)
    if lines:
        raise VocosMismatch(lines, where)


class S3GenMelFeatures(nn.Module):
    """S3Gen's log-mel as a Vocos feature extractor: audio (B, S) at 24 kHz -> (B, n_mels, S // hop).
    Buffers are not persistent: a checkpoint holds backbone.* and head.* only."""

    def __init__(self, sample_rate=SAMPLE_RATE, n_fft=S3GEN_N_FFT, hop_length=SAMPLES_PER_FRAME, n_mels=MEL_BINS,
                 f_min=0.0, f_max=S3GEN_FMAX):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop_length
        self.register_buffer("window", hann_window(n_fft), persistent=False)
        basis = slaney_mel_basis(sample_rate, n_fft, n_mels, f_min, f_max)
        self.register_buffer("mel_basis", torch.tensor(basis, dtype=torch.float32), persistent=False)

    def forward(self, audio: torch.Tensor, **kwargs) -> torch.Tensor:
        pad = (self.n_fft - self.hop) // 2
        audio = F.pad(audio.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.view_as_real(torch.stft(audio, self.n_fft, self.hop, self.n_fft, window=self.window,
                                             center=False, return_complex=True))
        magnitude = torch.sqrt(spec.pow(2).sum(-1) + 1e-9)
        return torch.log(torch.clamp(self.mel_basis @ magnitude, min=1e-5))


def s3gen_vocos_config(dim: int = 512, intermediate_dim: int = 1536, num_layers: int = 8) -> dict:
    """A Vocos config.yaml (as a dict) over S3Gen's mel; the defaults are vocos-mel-24khz's published
    backbone size, with the head's FFT sized to S3Gen's frames (n_fft 1920, hop 480)."""
    return {"feature_extractor": {"class_path": S3GEN_FEATURES, "init_args": {}},
            "backbone": {"class_path": VOCOS_BACKBONE,
                         "init_args": {"input_channels": MEL_BINS, "dim": dim, "intermediate_dim": intermediate_dim,
                                       "num_layers": num_layers}},
            "head": {"class_path": ISTFT_HEAD,
                     "init_args": {"dim": dim, "n_fft": S3GEN_N_FFT, "hop_length": SAMPLES_PER_FRAME, "padding": "same"}}}

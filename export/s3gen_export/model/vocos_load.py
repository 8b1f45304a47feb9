"""Load a Vocos model (config.yaml + pytorch_model.bin) with the `vocos` package's own modules.

vocos 0.1.0's package __init__ imports `vocos.pretrained`, which imports its feature extractors and with
them torchaudio and encodec; `vocos.heads` imports two mel-scale helpers from torchaudio. The torchaudio
wheels these machines get are CUDA builds that do not load beside the CPU torch, so `make setup` installs
vocos without its dependencies, and this module imports only the torch-only parts that inference needs
(vocos.models, vocos.modules, vocos.heads, vocos.spectral_ops): the package is entered without running its
__init__, and while vocos.heads is imported the two helpers come from `_mel_scale_module` below when
torchaudio itself cannot be imported. The gate (vocos_features) runs on the config before any weight is read.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from .vocos_features import S3GEN_FEATURES, S3GEN_FEATURES_BEFORE_MOVE, S3GenMelFeatures, check_vocos_config

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "pytorch_model.bin"


def _enter_vocos_package() -> None:
    """Make `vocos` importable as a package without executing its __init__ (see the module docstring)."""
    if "vocos" in sys.modules:
        return
    spec = importlib.util.find_spec("vocos")
    if spec is None:
        raise ImportError("the vocos package is not installed: `make setup` installs it (pip install --no-deps vocos==0.1.0)")
    sys.modules["vocos"] = importlib.util.module_from_spec(spec)


def _mel_scale_module() -> dict[str, types.ModuleType]:
    """torchaudio.functional.functional's HTK hz<->mel helpers (used by vocos' IMDCT head's init only)."""
    module = types.ModuleType("torchaudio.functional.functional")
    module._hz_to_mel = lambda freq, mel_scale="htk": 2595.0 * math.log10(1.0 + freq / 700.0)
    module._mel_to_hz = lambda mels, mel_scale="htk": 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    parents = {"torchaudio": types.ModuleType("torchaudio"), "torchaudio.functional": types.ModuleType("torchaudio.functional")}
    return {**parents, "torchaudio.functional.functional": module}


def _import_heads():
    try:
        return importlib.import_module("vocos.heads")
    except (ImportError, OSError):
        pass
    for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
        del sys.modules[name]   # a torchaudio that failed halfway must not be found again
    stand_ins = _mel_scale_module()
    sys.modules.update(stand_ins)
    try:
        return importlib.import_module("vocos.heads")
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)


def vocos_classes() -> dict[str, type]:
    """class_path -> class for everything an exportable config may name."""
    _enter_vocos_package()
    models, heads = importlib.import_module("vocos.models"), _import_heads()
    return {"vocos.models.VocosBackbone": models.VocosBackbone, "vocos.heads.ISTFTHead": heads.ISTFTHead,
            S3GEN_FEATURES: S3GenMelFeatures, S3GEN_FEATURES_BEFORE_MOVE: S3GenMelFeatures}


class VocosModel(nn.Module):
    """The three parts vocos' `Vocos` holds, under the same attribute (= state-dict) names."""

    def __init__(self, feature_extractor: nn.Module, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.feature_extractor, self.backbone, self.head = feature_extractor, backbone, head

    @torch.inference_mode()
    def decode(self, mel: torch.Tensor) -> torch.Tensor:
        """vocos' Vocos.decode: features (B, 80, T) -> audio (B, 480 T)."""
        return self.head(self.backbone(mel))


@dataclass(frozen=True)
class LoadedVocos:
    model: VocosModel
    config: dict
    record: dict    # the manifest's vocoder record


def read_config(folder: Path) -> dict:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"{path} does not exist: a Vocos folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    return yaml.safe_load(path.read_text())


def build_vocos(config: dict) -> VocosModel:
    classes = vocos_classes()

    def make(section: str) -> nn.Module:
        return classes[config[section]["class_path"]](**config[section].get("init_args", {}))

    return VocosModel(make("feature_extractor"), make("backbone"), make("head"))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_vocos(folder) -> LoadedVocos:
    """Gate the config (VocosMismatch, before anything else is read), then build the model with vocos'
    classes and load its weights strictly."""
    folder = Path(folder)
    config = read_config(folder)
    check_vocos_config(config, where=f"the Vocos model in {folder}")
    model = build_vocos(config)
    weights = folder / WEIGHTS_NAME
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    record = {"kind": "vocos", "source": folder.name, "config_sha256": sha256_of(folder / CONFIG_NAME),
              "weights_sha256": sha256_of(weights), "parameters": sum(p.numel() for p in model.parameters())}
    return LoadedVocos(model.eval(), config, record)


def write_vocos(folder, config: dict, seed: int = 0) -> Path:
    """A Vocos folder with random weights for `config` (tests, benchmarks): config.yaml + pytorch_model.bin."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(yaml.safe_dump(config, sort_keys=False))
    torch.manual_seed(seed)
    torch.save(build_vocos(config).state_dict(), folder / WEIGHTS_NAME)
    return folder

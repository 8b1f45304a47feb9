"""Prepare transforms: turn the loaded (checkpoint-faithful) model into an export-ready one.

Each transform is a small function on the module tree, applied in place and returning the model.
The model code itself already avoids in-place ops, data-dependent control flow and random draws;
`check_no_inplace` proves that for a traced graph.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..model.dsp import ConvSpectral, TorchSpectral
from ..model.s3gen import S3Gen
from .conv_layout import conv1d_as_2d


def fold_weight_norm(model: nn.Module) -> nn.Module:
    """Replace every weight_norm parametrization by its plain folded weight g * v / ||v||.

    Uses remove_parametrizations(leave_parametrized=True); upstream's own remove_weight_norm() is
    broken on parametrized modules."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


def count_weight_norm(model: nn.Module) -> int:
    return sum(1 for m in model.modules() if parametrize.is_parametrized(m, "weight"))


def use_conv_spectral(model: S3Gen) -> S3Gen:
    """Swap torch.stft/istft in the vocoder for their convolution forms (ONNX has no ISTFT)."""
    voc = model.mel2wav
    if isinstance(voc.spectral, TorchSpectral):
        voc.spectral = ConvSpectral(voc.cfg.n_fft, voc.cfg.hop_len)
    return model


def use_2d_vocoder_convs(model: S3Gen) -> S3Gen:
    """The vocoder's Conv1d layers as 1 x k Conv2d, for ONNX Runtime's NCHWc kernels (see conv_layout).
    Run after fold_weight_norm: a parametrized conv is a different class and is left as it is."""
    conv1d_as_2d(model.mel2wav)
    return model


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def prepare_for_export(model: S3Gen) -> S3Gen:
    """The export pipeline's transforms, in order."""
    return freeze(use_2d_vocoder_convs(use_conv_spectral(fold_weight_norm(model))))


INPLACE_TARGET_SUFFIX = "_"


def inplace_ops(graph: torch.fx.Graph) -> list[str]:
    """Names of in-place aten ops (add_, copy_, index_put_ ...) in an exported FX graph."""
    found = []
    for node in graph.nodes:
        if node.op == "call_function":
            name = getattr(node.target, "__name__", str(node.target))
            base = name.split(".")[0]
            if base.endswith(INPLACE_TARGET_SUFFIX) and not base.startswith("_"):
                found.append(name)
    return found

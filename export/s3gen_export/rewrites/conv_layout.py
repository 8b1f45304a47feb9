"""1-D convolutions as 1 x k 2-D ones: the same maths, but a 4-D Conv node is what ONNX Runtime's NCHWc
layout pass (blocked channels, its fastest CPU conv kernels) takes; 3-D Conv nodes never get it.

Measured on the vocoder (HiFT, 10 s of audio, one thread, ORT 1.32, AVX-512 EPYC): the ResBlock convs at
64-256 channels run 7-12% faster in NCHWc, which pays for the ReorderInput/ReorderOutput pair ORT puts
around each one (the Snake's Sin between convs keeps the rest of the graph in NCHW); the F0 predictor's
512-channel convs tie. ConvTranspose has no NCHWc kernel, so the upsampling layers stay 1-D.

`conv1d_as_2d` swaps a layer's class for a subclass with a 2-D forward: parameters, their names and
the state dict stay as they were, so loading and the eager reference are unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Conv1dAs2d(nn.Conv1d):
    """A Conv1d run as a (1, k) Conv2d on (B, C, 1, T)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x.unsqueeze(2), self.weight.unsqueeze(2), self.bias, stride=(1, self.stride[0]),
                     padding=(0, self.padding[0]), dilation=(1, self.dilation[0]), groups=self.groups)
        return y.squeeze(2)


def _check(name: str, conv: nn.Conv1d) -> None:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"{name}: only zero, explicit padding runs as a 1 x k Conv2d; got "
                         f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}")


def conv1d_as_2d(root: nn.Module, skip=lambda name: False) -> int:
    """Run every plain nn.Conv1d under `root` whose qualified name `skip` does not reject as a 1 x k
    Conv2d; returns how many were switched (already switched layers are left alone)."""
    switched = 0
    for name, module in root.named_modules():
        if type(module) is nn.Conv1d and not skip(name):
            _check(name, module)
            module.__class__ = Conv1dAs2d
            switched += 1
    return switched

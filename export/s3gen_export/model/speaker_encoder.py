"""CAMPPlus speaker encoder (x-vector): mean-subtracted Kaldi fbank (B, T, 80) -> embedding (B, 192).

State-dict names follow upstream's `speaker_encoder.*` entries (without that prefix): `head.*` (a 2-D
convolutional front end over frequency x time) and `xvector.*` (a TDNN, three densely connected
context-aware blocks with transitions, statistics pooling and a dense layer). Inference only (BatchNorm
in eval mode), nothing written in place, no data-dependent Python branches, so it exports with a
dynamic number of frames.

Statistics are pooled over every frame given, so padded frames change the result: callers run one
utterance per row, or rows of equal length.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class CAMPPlusConfig:
    feat_dim: int = 80
    embedding_size: int = 192
    growth_rate: int = 32
    bn_size: int = 4
    init_channels: int = 128
    head_channels: int = 32
    # (layers, kernel, dilation) of the three dense blocks
    blocks: tuple[tuple[int, int, int], ...] = ((12, 3, 1), (24, 3, 2), (16, 3, 2))
    # CAM context: the utterance mean plus the mean of the segment of this many frames around each frame
    segment_frames: int = 100


def bn_relu(channels: int) -> nn.Sequential:
    """Upstream's 'batchnorm-relu' nonlinearity; the submodule names are part of the state dict."""
    return nn.Sequential(OrderedDict([("batchnorm", nn.BatchNorm1d(channels)), ("relu", nn.ReLU())]))


class BasicResBlock(nn.Module):
    """2-D residual block; a stride downsamples frequency only (time keeps its resolution)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()   # identity unless the shape changes (names: shortcut.0/1)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FCM(nn.Module):
    """Front end: (B, 80, T) -> (B, 32 * 10, T); frequency is reduced 8x, time untouched."""

    def __init__(self, cfg: CAMPPlusConfig):
        super().__init__()
        c = cfg.head_channels
        self.conv1 = nn.Conv2d(1, c, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.layer1 = nn.Sequential(BasicResBlock(c, c, 2), BasicResBlock(c, c, 1))
        self.layer2 = nn.Sequential(BasicResBlock(c, c, 2), BasicResBlock(c, c, 1))
        self.conv2 = nn.Conv2d(c, c, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.out_channels = c * (cfg.feat_dim // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))
        return out.flatten(1, 2)   # (B, C, F', T) -> (B, C * F', T)


class TDNNLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                                padding=(kernel_size - 1) // 2, bias=False)
        self.nonlinear = bn_relu(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


def segment_means(x: torch.Tensor, seg: int) -> torch.Tensor:
    """Each frame gets the mean of its block of `seg` frames (the last block may be shorter).

    Upstream uses avg_pool1d(ceil_mode=True), whose partial last window divides by the frames it
    covers; ONNX AveragePool's ceil_mode windows are not reliably the same across runtimes, so the
    blocks are summed explicitly: pad to whole blocks with zeros, sum, divide by the real count."""
    frames = x.shape[-1]
    n_seg = (frames + seg - 1) // seg
    padded = F.pad(x, (0, n_seg * seg - frames))
    sums = padded.reshape(x.shape[0], x.shape[1], n_seg, seg).sum(-1)
    starts = torch.arange(n_seg, device=x.device) * seg
    counts = (frames - starts).clamp(max=seg).to(x.dtype)
    means = sums / counts
    return means.unsqueeze(-1).expand(-1, -1, -1, seg).reshape(x.shape[0], x.shape[1], n_seg * seg)[..., :frames]


class CAMLayer(nn.Module):
    """Context-aware masking: a local conv gated by a sigmoid of utterance + segment context."""

    def __init__(self, bn_channels: int, out_channels: int, kernel_size: int, dilation: int, seg: int,
                 reduction: int = 2):
        super().__init__()
        self.seg = seg
        self.linear_local = nn.Conv1d(bn_channels, out_channels, kernel_size,
                                      padding=(kernel_size - 1) // 2 * dilation, dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // reduction, 1)
        self.linear2 = nn.Conv1d(bn_channels // reduction, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = x.mean(-1, keepdim=True) + segment_means(x, self.seg)
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return self.linear_local(x) * gate


class CAMDenseTDNNLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bn_channels: int, kernel_size: int, dilation: int,
                 seg: int):
        super().__init__()
        self.nonlinear1 = bn_relu(in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = bn_relu(bn_channels)
        self.cam_layer = CAMLayer(bn_channels, out_channels, kernel_size, dilation, seg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseTDNNBlock(nn.Module):
    """Dense block: each layer's output is appended to its input along channels."""

    def __init__(self, num_layers: int, in_channels: int, growth: int, bn_channels: int, kernel_size: int,
                 dilation: int, seg: int):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"tdnnd{i + 1}", CAMDenseTDNNLayer(in_channels + i * growth, growth, bn_channels,
                                                               kernel_size, dilation, seg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.nonlinear = bn_relu(in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class StatsPool(nn.Module):
    """Mean and unbiased standard deviation over time: (B, C, T) -> (B, 2C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)


class DenseLayer(nn.Module):
    """1x1 conv on the pooled vector, then a BatchNorm without affine parameters ('batchnorm_')."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.nonlinear = nn.Sequential(OrderedDict([("batchnorm", nn.BatchNorm1d(out_channels, affine=False))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


def build_xvector(cfg: CAMPPlusConfig, in_channels: int) -> nn.Sequential:
    """The TDNN trunk, named as upstream: tdnn, block1..3, transit1..3, out_nonlinear, stats, dense."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["tdnn"] = TDNNLayer(in_channels, cfg.init_channels, 5, stride=2)
    channels = cfg.init_channels
    bn_channels = cfg.bn_size * cfg.growth_rate
    for i, (num_layers, kernel, dilation) in enumerate(cfg.blocks, start=1):
        layers[f"block{i}"] = CAMDenseTDNNBlock(num_layers, channels, cfg.growth_rate, bn_channels, kernel,
                                                dilation, cfg.segment_frames)
        channels += num_layers * cfg.growth_rate
        layers[f"transit{i}"] = TransitLayer(channels, channels // 2)
        channels //= 2
    layers["out_nonlinear"] = bn_relu(channels)
    layers["stats"] = StatsPool()
    layers["dense"] = DenseLayer(channels * 2, cfg.embedding_size)
    return nn.Sequential(layers)


class CAMPPlus(nn.Module):
    """fbank (B, T, 80), already mean-subtracted over frames -> x-vector (B, 192).

    This is upstream's CAMPPlus.forward, i.e. CAMPPlus.inference after its fbank step. T >= 3 frames
    (the pooled standard deviation needs 2 frames after the stride-2 TDNN)."""

    def __init__(self, cfg: CAMPPlusConfig = CAMPPlusConfig()):
        super().__init__()
        self.cfg = cfg
        self.head = FCM(cfg)
        self.xvector = build_xvector(cfg, self.head.out_channels)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.xvector(self.head(fbank.transpose(1, 2)))

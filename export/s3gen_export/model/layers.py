"""Small building blocks shared by the encoder, the estimator and the vocoder.

Everything here is export-friendly: masks come from lengths with tensor ops only (no `.item()`, no
data-dependent Python branches), and nothing is written in place.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sequence_mask(lengths: torch.Tensor, max_len: int | torch.Tensor) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool, True on valid frames."""
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def gather_ragged_concat(first: torch.Tensor, first_len: torch.Tensor,
                         second: torch.Tensor, second_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate two right-padded sequences row by row: row b is first[b, :first_len[b]] followed
    by second[b, :second_len[b]], right-padded with first[b, 0]'s neighbours (callers mask padding).

    first: (B, P, ...), second: (B, N, ...). Returns ((B, P + N, ...), first_len + second_len).
    A gather keeps it exact and free of per-row Python loops, so it exports with dynamic shapes.
    """
    p_max = first.shape[1]
    n_max = second.shape[1]
    both = torch.cat([first, second], dim=1)
    pos = torch.arange(p_max + n_max, device=first.device).unsqueeze(0)       # (1, P+N)
    from_second = pos - first_len.unsqueeze(1) + p_max                          # index into `both`
    index = torch.where(pos < first_len.unsqueeze(1), pos, from_second)
    index = index.clamp(0, p_max + n_max - 1)
    for _ in range(both.dim() - 2):
        index = index.unsqueeze(-1)
    index = index.expand(-1, -1, *both.shape[2:])
    return torch.gather(both, 1, index), first_len + second_len


class CausalConv1d(nn.Conv1d):
    """Conv1d that pads (kernel - 1) zeros on the left only (stride 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=0)
        self.left_pad = kernel_size - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left_pad, 0)))


class Transpose(nn.Module):
    def __init__(self, dim0: int, dim1: int):
        super().__init__()
        self.dim0, self.dim1 = dim0, dim1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(self.dim0, self.dim1)

"""Moving arrays between the caller's torch tensors and the runtime's numpy ones, with checks that name the
argument (upstream would fail deep inside the flow, or not at all)."""
from __future__ import annotations

import numpy as np
import torch

from s3gen_runtime.errors import InputError


def to_numpy(value, name: str) -> np.ndarray:
    """A tensor (any device) or array -> numpy; anything else is refused by name."""
    if torch.is_tensor(value):
        return value.detach().to("cpu").numpy()
    if isinstance(value, np.ndarray):
        return value
    raise InputError(f"{name} must be a torch tensor or numpy array, got {type(value).__name__}")


def single_row(value, name: str) -> np.ndarray:
    """(N,) or (1, N) -> (N,); upstream's S3Gen inference is batch 1."""
    array = to_numpy(value, name)
    if array.ndim == 2 and array.shape[0] == 1:
        return array[0]
    if array.ndim == 1:
        return array
    raise InputError(f"{name} must have shape (N,) or (1, N) (upstream S3Gen runs one utterance per call), "
                     f"got {tuple(array.shape)}")


def mono_waveform(value, name: str) -> np.ndarray:
    """(L,) or (1, L), tensor or array -> a non-empty 1-D float32 array."""
    wav = np.asarray(to_numpy(value, name), dtype=np.float32)
    if wav.ndim == 2 and wav.shape[0] == 1:
        wav = wav[0]
    if wav.ndim != 1 or wav.shape[0] == 0:
        raise InputError(f"{name} must be a non-empty mono waveform (L,) or (1, L), got shape {wav.shape}")
    return wav


def to_caller(array: np.ndarray, device, dtype=None) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.to(device=device, dtype=dtype) if dtype is not None else tensor.to(device=device)


__all__ = ["to_numpy", "single_row", "mono_waveform", "to_caller"]

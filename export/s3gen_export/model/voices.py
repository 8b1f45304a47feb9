"""Voices from upstream Chatterbox: the `gen` part of a `conds.pt` (Conditionals.save) holds exactly
what S3Gen needs: prompt_token (1, P), prompt_feat (1, F, 80) with F = 2P or 2P + 1, and the x-vector
embedding (1, 192)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from s3gen_runtime.errors import InputError
from s3gen_runtime.voice import Voice


def _array(gen: dict, key: str, path: Path) -> np.ndarray:
    value = gen.get(key)
    if not torch.is_tensor(value):
        raise InputError(f"{path}: gen['{key}'] is missing or not a tensor (got {type(value).__name__})")
    return value.detach().cpu().numpy()


def voice_from_conds(path: Path, trim_odd_frame: bool = False) -> Voice:
    """Read an upstream conds.pt (weights_only) and return its S3Gen voice, validated.

    Upstream leaves one extra mel frame (F = 2P + 1) when the reference clip was not a multiple of
    40 ms, and synthesises with it; the voice keeps it, so the runtime matches upstream. trim_odd_frame
    drops it (F = 2P), which changes the output: only for consumers that need 2 frames per token."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # noqa: BLE001 - any unreadable file gets the same clear message
        raise InputError(f"{path}: not a readable conds.pt ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("gen"), dict):
        raise InputError(f"{path}: expected a dict with a 'gen' dict (upstream Conditionals.save); "
                         f"got keys {sorted(data) if isinstance(data, dict) else type(data).__name__}")
    gen = data["gen"]
    tokens = _array(gen, "prompt_token", path).reshape(1, -1)
    if torch.is_tensor(gen.get("prompt_token_len")):
        tokens = tokens[:, : int(gen["prompt_token_len"].reshape(-1)[0])]
    feat = _array(gen, "prompt_feat", path).reshape(1, -1, 80)
    if trim_odd_frame and feat.shape[1] == 2 * tokens.shape[1] + 1:
        feat = feat[:, : 2 * tokens.shape[1]]
    try:
        return Voice.validated(tokens, feat, _array(gen, "embedding", path))
    except InputError as e:
        raise InputError(f"{path}: {e}") from e

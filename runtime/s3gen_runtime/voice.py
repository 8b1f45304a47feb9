"""A voice: the reference (prompt) tokens, their mel and the speaker x-vector.

S3Gen conditions on all three; they travel together in one .npz or .safetensors
file. The prompt mel has F = 2P frames for P prompt tokens, or 2P + 1: upstream's
embed_ref leaves one odd frame when the reference clip is not a multiple of 40 ms,
and synthesises with it (one generated frame fewer). Any other F is refused: upstream
would silently misalign prompt and mel, which shifts the voice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import MEL_BINS, SPEAKER_EMBED_DIM
from .errors import InputError
from .io import as_token_ids, check_prompt_frames

VOICE_KEYS = ("prompt_token", "prompt_feat", "embedding")
VOICE_SUFFIXES = (".npz", ".safetensors")


def _batched(a: np.ndarray, rank: int, name: str, layout: str) -> np.ndarray:
    """Add the batch dim to an unbatched array; a batch other than 1 is refused."""
    if a.ndim == rank - 1:
        a = a[None]
    if a.ndim != rank:
        raise InputError(f"{name} must have shape {layout}, got {a.shape}")
    if a.shape[0] != 1:
        raise InputError(f"{name} must have batch 1 (one voice), got shape {a.shape}")
    return a


def _float_array(value, name: str, rank: int, layout: str) -> np.ndarray:
    a = np.asarray(value)
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{name} must be floating point, got dtype {a.dtype}")
    a = _batched(a, rank, name, layout)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} contains NaN or Inf")
    return a.astype(np.float32)


@dataclass(frozen=True, eq=False)
class Voice:
    """prompt_token (1, P) int64; prompt_feat (1, F, 80) float32 with F = 2P or 2P + 1; embedding (1, 192) float32.

    Build it with `Voice.validated(...)` so the shapes and values are known good.
    """

    prompt_token: np.ndarray
    prompt_feat: np.ndarray
    embedding: np.ndarray

    @property
    def prompt_tokens(self) -> int:
        """P, the number of prompt tokens."""
        return int(self.prompt_token.shape[1])

    @property
    def prompt_frames(self) -> int:
        """F, the prompt mel's frames: 2P or 2P + 1."""
        return int(self.prompt_feat.shape[1])

    @classmethod
    def validated(cls, prompt_token, prompt_feat, embedding) -> "Voice":
        """Check and normalise the three arrays (unbatched inputs get batch 1)."""
        tok = _batched(np.asarray(prompt_token), 2, "prompt_token", "(1, P)")
        if tok.shape[1] < 1:
            raise InputError("prompt_token is empty: a voice needs at least one prompt token")
        tok = as_token_ids(tok[0], "prompt_token")[None]

        feat = _float_array(prompt_feat, "prompt_feat", 3, f"(1, F, {MEL_BINS})")
        if feat.shape[2] != MEL_BINS:
            hint = " (it looks channels-first; prompt_feat is frames-first)" if feat.shape[1] == MEL_BINS else ""
            raise InputError(f"prompt_feat must have {MEL_BINS} mel bins last, got shape {feat.shape}{hint}")
        check_prompt_frames(feat.shape[1], tok.shape[1])

        emb = _float_array(embedding, "embedding", 2, f"(1, {SPEAKER_EMBED_DIM})")
        if emb.shape[1] != SPEAKER_EMBED_DIM:
            raise InputError(f"embedding must be {SPEAKER_EMBED_DIM}-d, got shape {emb.shape}")
        return cls(tok, feat, emb)

    def arrays(self) -> dict:
        """The three arrays under their file keys."""
        return {"prompt_token": self.prompt_token, "prompt_feat": self.prompt_feat, "embedding": self.embedding}


def _suffix(path: Path) -> str:
    s = path.suffix.lower()
    if s not in VOICE_SUFFIXES:
        raise InputError(f"unsupported voice file {path}: use {' or '.join(VOICE_SUFFIXES)}")
    return s


def _read_arrays(path: Path) -> dict:
    if _suffix(path) == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files if k in VOICE_KEYS}
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read voice {path} as .npz: {e}") from e
    from safetensors.numpy import load_file   # lazy: only voices in this format need it

    try:
        return {k: v for k, v in load_file(str(path)).items() if k in VOICE_KEYS}
    except Exception as e:   # safetensors raises its own SafetensorError for bad headers
        raise InputError(f"cannot read voice {path} as .safetensors: {e}") from e


def load_voice(path) -> Voice:
    """A voice from .npz or .safetensors; keys other than the three are ignored."""
    p = Path(path)
    _suffix(p)
    if not p.is_file():
        raise InputError(f"voice file not found: {p}")
    arrays = _read_arrays(p)
    missing = [k for k in VOICE_KEYS if k not in arrays]
    if missing:
        raise InputError(f"voice {p} lacks {missing}; a voice file needs {list(VOICE_KEYS)}")
    try:
        return Voice.validated(**arrays)
    except InputError as e:
        raise InputError(f"voice {p}: {e}") from e


def save_voice(voice: Voice, path) -> Path:
    """Write a voice as .npz or .safetensors (by suffix)."""
    p = Path(path)
    suffix = _suffix(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v) for k, v in voice.arrays().items()}
    if suffix == ".npz":
        with open(p, "wb") as f:   # a file object: numpy would append ".npz" to "X.NPZ"
            np.savez(f, **arrays)
    else:
        from safetensors.numpy import save_file

        save_file(arrays, str(p))
    return p

"""Reading and checking user inputs (tokens, noise) and writing outputs (wav, npz).

Everything here is numpy + the standard library: the runtime never imports torch.
"""

from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np

from .constants import (
    MEL_BINS,
    N_HARMONICS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    SPEECH_VOCAB_SIZE,
    TOKEN_MEL_RATIO,
)
from .errors import InputError

TOKEN_SUFFIXES = (".npy", ".txt", ".npz")
NOISE_KEYS = ("z", "sine_phase", "sine_noise")
_MAX_LISTED = 5      # offending values quoted in one error message
_PCM_SCALE = 32767.0  # symmetric int16 scale: +1.0 and -1.0 both survive a round trip


def _listing(values, indices) -> str:
    """'7000 at index 3, -1 at index 9 (and 4 more)' for an error message."""
    parts = [f"{v} at index {i}" for v, i in zip(values[:_MAX_LISTED], indices[:_MAX_LISTED])]
    more = len(values) - _MAX_LISTED
    return ", ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def as_token_ids(arr, name: str = "tokens") -> np.ndarray:
    """A 1-D array of speech-token ids as int64, checked against [0, SPEECH_VOCAB_SIZE).

    Integer dtypes are taken as they are; float arrays only when every value is a
    whole number (tokens that went through float storage lose nothing below 2**24).
    Bools, strings and fractional values are refused: they are never token ids.
    """
    a = np.asarray(arr)
    if a.ndim != 1:
        raise InputError(f"{name} must be 1-D here, got shape {a.shape}")
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise InputError(f"{name} must be integer token ids, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(a) | (a != np.round(a)))
        if bad.size:
            raise InputError(f"{name} must be whole numbers, got {_listing(a[bad].tolist(), bad.tolist())}")
    # Compare before casting so huge uint64 or float values cannot wrap into range.
    bad = np.flatnonzero((a < 0) | (a >= SPEECH_VOCAB_SIZE))
    if bad.size:
        listed = [int(v) for v in a[bad].tolist()]
        raise InputError(
            f"{name}: {bad.size} id(s) outside the vocabulary range [0, {SPEECH_VOCAB_SIZE}): "
            f"{_listing(listed, bad.tolist())}"
        )
    return a.astype(np.int64)


def validate_tokens(arr) -> np.ndarray:
    """One request's speech tokens as int64 of shape (N,); accepts (N,) or (1, N)."""
    a = np.asarray(arr)
    if a.ndim == 2:
        if a.shape[0] != 1:
            raise InputError(
                f"tokens have batch {a.shape[0]} (shape {a.shape}); this helper takes one request: "
                "pass shape (N,) or (1, N)"
            )
        a = a[0]
    elif a.ndim != 1:
        raise InputError(f"tokens must have shape (N,) or (1, N), got rank {a.ndim} shape {a.shape}")
    if a.size == 0:
        raise InputError("tokens are empty: need at least one speech token")
    return as_token_ids(a, "tokens")


def _existing(path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"file not found: {p}")
    return p


def _load_npz(path: Path) -> dict:
    """All arrays of an .npz (no pickles: input files are untrusted)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path} as .npz: {e}") from e


def _parse_token_text(text: str, path) -> list[int]:
    words = [w for w in re.split(r"[\s,]+", text) if w]
    out = []
    for i, w in enumerate(words):
        try:
            out.append(int(w))
        except ValueError:
            raise InputError(f"{path}: word {i} is {w!r}, not an integer token id") from None
    return out


def load_tokens(path) -> np.ndarray:
    """Speech tokens from .npy, .txt (whitespace/comma separated) or .npz (key speech_tokens)."""
    p = _existing(path)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {p} as .npy: {e}") from e
    elif suffix == ".txt":
        arr = np.asarray(_parse_token_text(p.read_text(encoding="utf-8"), p), dtype=np.int64)
    elif suffix == ".npz":
        arrays = _load_npz(p)
        if "speech_tokens" not in arrays:
            raise InputError(f"{p} has no 'speech_tokens' array (it has: {sorted(arrays)})")
        arr = arrays["speech_tokens"]
    else:
        raise InputError(f"unsupported token file {p}: use one of {', '.join(TOKEN_SUFFIXES)}")
    return validate_tokens(arr)


def _float_field(arrays: dict, key: str, rank: int) -> np.ndarray:
    a = np.asarray(arrays[key])
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"noise '{key}' must be floating point, got dtype {a.dtype}")
    if a.ndim != rank:
        raise InputError(f"noise '{key}' must have rank {rank}, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"noise '{key}' contains NaN or Inf")
    return a.astype(np.float32)


def load_noise(path) -> dict:
    """Recorded noise (z, sine_phase, sine_noise) from an .npz; other keys are ignored.

    Golden reference files are therefore valid noise files: replaying their noise
    reproduces the upstream run.
    """
    p = _existing(path)
    if p.suffix.lower() != ".npz":
        raise InputError(f"noise files are .npz, got {p}")
    arrays = _load_npz(p)
    missing = [k for k in NOISE_KEYS if k not in arrays]
    if missing:
        raise InputError(f"{p} lacks noise array(s) {missing}; a noise file needs {list(NOISE_KEYS)}")
    return {k: _float_field(arrays, k, 3) for k in NOISE_KEYS}


def check_prompt_frames(frames: int, prompt_tokens: int) -> None:
    """F must be 2P or 2P + 1: the two lengths upstream's embed_ref produces (and synthesises exactly)."""
    even = TOKEN_MEL_RATIO * prompt_tokens
    if frames not in (even, even + 1):
        raise InputError(
            f"prompt_feat must have 2P or 2P+1 frames for P prompt tokens; it has {frames} frames for "
            f"{prompt_tokens} tokens (needs {even} or {even + 1}); fix the voice rather than truncating it"
        )


def vocoded_frames(prompt_tokens: int, new_tokens: int, prompt_frames: int | None = None) -> int:
    """Frames the vocoder gets: T - F with T = 2 (P + N); 2N, or 2N - 1 after an odd prompt (F = 2P + 1).
    prompt_frames defaults to 2P."""
    frames = TOKEN_MEL_RATIO * (prompt_tokens + new_tokens)
    prompt_frames = TOKEN_MEL_RATIO * prompt_tokens if prompt_frames is None else int(prompt_frames)
    check_prompt_frames(prompt_frames, prompt_tokens)
    return frames - prompt_frames


def expected_noise_shapes(prompt_tokens: int, new_tokens: int, prompt_frames: int | None = None) -> dict:
    """Noise shapes for P prompt and N new tokens after a prompt mel of F frames (default 2P), batch 1."""
    mel_frames = TOKEN_MEL_RATIO * (prompt_tokens + new_tokens)
    # only the frames after the prompt mel are vocoded
    samples = SAMPLES_PER_FRAME * vocoded_frames(prompt_tokens, new_tokens, prompt_frames)
    return {
        "z": (1, MEL_BINS, mel_frames),
        "sine_phase": (1, N_HARMONICS, 1),
        "sine_noise": (1, N_HARMONICS, samples),
    }


def check_noise_shapes(noise: dict, prompt_tokens: int, new_tokens: int, prompt_frames: int | None = None) -> None:
    """Raise InputError unless `noise` fits a request of P prompt and N new tokens (prompt mel F frames)."""
    want = expected_noise_shapes(prompt_tokens, new_tokens, prompt_frames)
    missing = [k for k in want if k not in noise]
    if missing:
        raise InputError(f"noise lacks {missing}; it needs {list(want)}")
    odd = "" if prompt_frames in (None, TOKEN_MEL_RATIO * prompt_tokens) else f" after {prompt_frames} prompt frames"
    for key, shape in want.items():
        got = tuple(np.shape(noise[key]))
        if got != shape:
            raise InputError(
                f"noise '{key}' has shape {got} but a request with {prompt_tokens} prompt and "
                f"{new_tokens} new tokens{odd} needs {shape}"
            )


def _as_wav(wav) -> np.ndarray:
    w = np.asarray(wav)
    if w.ndim == 2 and w.shape[0] == 1:
        w = w[0]
    if w.ndim != 1:
        raise InputError(f"wav must have shape (S,) or (1, S), got {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise InputError(f"wav must be floating point, got dtype {w.dtype}")
    if not np.all(np.isfinite(w)):
        raise InputError("wav contains NaN or Inf; refusing to write it")
    return w.astype(np.float32)


def _as_mel(mel) -> np.ndarray:
    m = np.asarray(mel)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[0] != 1 or m.shape[1] != MEL_BINS:
        raise InputError(f"mel must have shape (1, {MEL_BINS}, F) or ({MEL_BINS}, F), got {np.shape(mel)}")
    return m.astype(np.float32)


def save_output(path, mel, wav, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write a result: .wav (16-bit PCM mono, clipped to [-1, 1]) or .npz (mel and wav)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".wav", ".npz"):
        raise InputError(f"unsupported output {p}: use .wav or .npz")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise InputError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    w = _as_wav(wav)
    p.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".wav":
        pcm = np.round(np.clip(w, -1.0, 1.0) * _PCM_SCALE).astype("<i2")
        with wave.open(str(p), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(int(sample_rate))
            f.writeframes(pcm.tobytes())
    else:
        with open(p, "wb") as f:   # a file object: numpy would append ".npz" to "X.NPZ"
            np.savez(f, mel=_as_mel(mel), wav=w[None])
    return p


def read_wav(path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM mono wav as float32 in [-1, 1] and its sample rate."""
    p = _existing(path)
    try:
        with wave.open(str(p), "rb") as f:
            channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            data = f.readframes(f.getnframes())
    except (wave.Error, EOFError) as e:
        raise InputError(f"cannot read {p} as wav: {e}") from e
    if channels != 1 or width != 2:
        raise InputError(f"{p}: expected 16-bit mono, got {channels} channel(s) of {8 * width}-bit")
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(_PCM_SCALE)), rate

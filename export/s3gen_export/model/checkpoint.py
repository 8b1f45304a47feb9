"""Checkpoint I/O for S3Gen: read, normalise, check and write flat state dicts.

Upstream Chatterbox files (`s3gen.safetensors`, Turbo `s3gen_meanflow.safetensors`,
older `s3gen.pt`) hold one flat state dict: `flow.*` and `mel2wav.*` (tokens -> wav), plus the voice
models `speaker_encoder.*` (CAMPPlus) and `tokenizer.*` (S3TokenizerV2), which turn a reference audio
into a voice. The voice part is optional: when a file has it, it is checked like the rest (all of it,
with the right shapes); when it has none, the model gets no voice graphs. The tokenizer's
`_mel_filters` and `window` are computed buffers upstream allows to be missing; they are dropped.

Weight-normed convolutions appear in one of three forms; all map onto the model's
`parametrizations.weight.original0/1` names:
  - "parametrizations": `<p>.parametrizations.weight.original0` (g, [out, 1, ...]) and
    `.original1` (v) -- torch.nn.utils.parametrizations.weight_norm, upstream files;
  - "weight_g": `<p>.weight_g` / `<p>.weight_v` -- the old torch.nn.utils.weight_norm;
  - "folded": `<p>.weight` = g * v / ||v|| (norm over all dims but 0).

`.pt`-style files are read with `torch.load(weights_only=True)` only: a file that
needs arbitrary pickled objects is refused.
"""
from __future__ import annotations

import logging
import os
import pickletools
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from s3gen_runtime.manifest import sha256_file

__all__ = [
    "CheckpointError",
    "VOICE_PREFIXES",
    "COMPUTED_BUFFERS",
    "MEANFLOW_KEY",
    "WEIGHT_NORM_FORMS",
    "read_state_dict",
    "drop_computed_buffers",
    "has_voice",
    "detect_variant",
    "to_parametrized_weight_norm",
    "convert_weight_norm",
    "check_state_dict",
    "load_checkpoint",
    "save_checkpoint",
    "file_sha256",
]

log = logging.getLogger("s3gen_export.model.checkpoint")

VOICE_PREFIXES = ("speaker_encoder.", "tokenizer.")
# upstream recomputes these (mel basis, Hann window) and loads non-strictly around them
COMPUTED_BUFFERS = ("tokenizer._mel_filters", "tokenizer.window")
MEANFLOW_KEY = "flow.decoder.estimator.time_embed_mixer.weight"
WEIGHT_NORM_FORMS = ("parametrizations", "weight_g", "folded")

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

_G = ".parametrizations.weight.original0"
_V = ".parametrizations.weight.original1"
_WG = ".weight_g"
_WV = ".weight_v"
_W = ".weight"

# How many names each problem list shows before "... and N more".
_SHOW = 20


class CheckpointError(ValueError):
    """A checkpoint file cannot be read, is unsafe, or does not match the model."""


# ---------------------------------------------------------------------------
# reading


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a flat state dict (name -> tensor) from `.safetensors` or a torch file.

    Torch files (`.pt`, `.pth`, `.bin`, `.ckpt`) are loaded with `weights_only=True`;
    a `{"state_dict": {...}}` or `{"model": {...}}` wrapper is unwrapped.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint is not a file: {path}")
    suffix = _suffix(path)
    if suffix in SAFETENSORS_SUFFIXES:
        obj = _read_safetensors(path)
    elif suffix in PICKLE_SUFFIXES:
        obj = _read_torch(path)
    else:
        known = ", ".join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)
        raise CheckpointError(f"{path}: unknown checkpoint suffix {path.suffix!r} (expected one of {known})")
    return _as_flat_tensor_dict(obj, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # SafetensorError, OSError, ...
        raise CheckpointError(f"{path}: cannot read as safetensors (corrupt or truncated file?): {e}") from e


def _read_torch(path: Path) -> object:
    try:
        with warnings.catch_warnings():
            # the weights-only unpickler warns about pickle protocols it was not written for
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e)
        if "Weights only load failed" in msg:
            unsafe = "Unsupported global" in msg or _is_wellformed_pickle(path)
            if unsafe:
                detail = _unsupported_detail(msg)
                raise CheckpointError(
                    f"{path}: this file needs unsafe pickle loading (it holds pickled objects "
                    f"other than tensors and plain containers{': ' + detail if detail else ''}); "
                    "refused. Re-save it as a plain dict of tensors, preferably .safetensors, "
                    "in an environment you trust."
                ) from e
        first = msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot read as a torch checkpoint (corrupt or truncated file?): {first}") from e


def _unsupported_detail(msg: str) -> str:
    for line in msg.splitlines():
        line = line.strip()
        if "Unsupported global" in line:
            return line[line.index("Unsupported global"):].split(" was not")[0]
    return ""


def _is_wellformed_pickle(path: Path) -> bool:
    """Whether the file (or the data.pkl inside a torch zip) parses as a complete pickle."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.endswith("data.pkl")]
                if not names:
                    return False
                with zf.open(names[0]) as f:
                    for _ in pickletools.genops(f):
                        pass
        else:
            with open(path, "rb") as f:
                for _ in pickletools.genops(f):
                    pass
        return True
    except Exception:
        return False


def _as_flat_tensor_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    bad = [(k, type(v).__name__) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        shown = ", ".join(f"{k!r} ({t})" for k, t in bad[:_SHOW])
        more = f" ... and {len(bad) - _SHOW} more" if len(bad) > _SHOW else ""
        raise CheckpointError(f"{path}: {len(bad)} entries are not named tensors: {shown}{more}")
    return dict(obj)


# ---------------------------------------------------------------------------
# normalising


def drop_computed_buffers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the tokenizer's computed buffers: the log-mel front end lives outside the graphs."""
    dropped = [k for k in COMPUTED_BUFFERS if k in sd]
    if dropped:
        log.debug("dropped computed buffers not used by the graphs: %s", ", ".join(dropped))
    return {k: t for k, t in sd.items() if k not in COMPUTED_BUFFERS}


def has_voice(sd: Iterable[str]) -> bool:
    """Whether a state dict holds any voice-model entry (speaker_encoder.* or tokenizer.*)."""
    return any(k.startswith(VOICE_PREFIXES) for k in sd)


def detect_variant(sd: Mapping[str, object]) -> str:
    """Return "meanflow" (Turbo) iff the time-embedding mixer is present, else "standard"."""
    return "meanflow" if MEANFLOW_KEY in sd else "standard"


def _norm_except_dim0(w: torch.Tensor) -> torch.Tensor:
    """||w|| over every dim but 0, shaped [out, 1, ...] (the `g` of weight_norm(dim=0))."""
    return torch.norm_except_dim(w, 2, 0)


def _fold(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The effective weight g * v / ||v|| exactly as the torch weight_norm parametrization computes it."""
    return torch._weight_norm(v, g, 0)


def to_parametrized_weight_norm(
    sd: Mapping[str, torch.Tensor], expected_names: Iterable[str]
) -> dict[str, torch.Tensor]:
    """Map `weight_g/weight_v` pairs and folded `.weight` onto `parametrizations.weight.original0/1`.

    Only for prefixes where `expected_names` has both parametrized names, the state
    dict has neither, and the state dict has the other form. Everything else is
    passed through unchanged (the key check reports what still does not fit).
    """
    order = list(dict.fromkeys(expected_names))
    expected = set(order)
    out = dict(sd)
    converted = {"weight_g": 0, "folded": 0}
    for name in order:
        if not name.endswith(_G):
            continue
        prefix = name[: -len(_G)]
        g_name, v_name = prefix + _G, prefix + _V
        if v_name not in expected or g_name in out or v_name in out:
            continue
        wg, wv, w = prefix + _WG, prefix + _WV, prefix + _W
        if wg in out and wv in out and wg not in expected and wv not in expected:
            out[g_name] = out.pop(wg)
            out[v_name] = out.pop(wv)
            converted["weight_g"] += 1
        elif w in out and w not in expected:
            weight = out.pop(w)
            if weight.is_floating_point():
                weight = weight.float()
            out[g_name] = _norm_except_dim0(weight)
            out[v_name] = weight
            converted["folded"] += 1
    if any(converted.values()):
        log.info(
            "weight norm: %d weight_g/weight_v pairs and %d folded weights mapped to parametrizations.weight.original0/1",
            converted["weight_g"],
            converted["folded"],
        )
    return out


def convert_weight_norm(sd: Mapping[str, torch.Tensor], form: str) -> dict[str, torch.Tensor]:
    """Rewrite every `parametrizations.weight.original0/1` pair into `form`.

    "parametrizations" leaves the dict as is, "weight_g" renames the pair to
    `weight_g/weight_v`, "folded" replaces it by `.weight` = g * v / ||v||.
    Key order is kept (the new names take the place of original0).
    """
    if form not in WEIGHT_NORM_FORMS:
        raise ValueError(f"weight_norm must be one of {WEIGHT_NORM_FORMS}, got {form!r}")
    if form == "parametrizations":
        return dict(sd)
    out: dict[str, torch.Tensor] = {}
    for name, t in sd.items():
        if name.endswith(_G) and name[: -len(_G)] + _V in sd:
            prefix = name[: -len(_G)]
            v = sd[prefix + _V]
            if form == "weight_g":
                out[prefix + _WG] = t
                out[prefix + _WV] = v
            else:
                out[prefix + _W] = _fold(t, v)
        elif name.endswith(_V) and name[: -len(_V)] + _G in sd:
            continue  # written together with its original0
        else:
            out[name] = t
    return out


# ---------------------------------------------------------------------------
# checking


def _capped(lines: list[str]) -> list[str]:
    shown = [f"  {x}" for x in lines[:_SHOW]]
    if len(lines) > _SHOW:
        shown.append(f"  ... and {len(lines) - _SHOW} more")
    return shown


def check_state_dict(sd: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise CheckpointError listing every missing, unexpected and misshapen key."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    misshapen = [
        f"{k}: got {tuple(sd[k].shape)}, expected {tuple(int(s) for s in expected[k])}"
        for k in expected
        if k in sd and tuple(sd[k].shape) != tuple(int(s) for s in expected[k])
    ]
    if not (missing or unexpected or misshapen):
        return
    parts = []
    counts = []
    if missing:
        parts += [f"missing keys ({len(missing)}):"] + _capped(missing)
        counts.append(f"{len(missing)} missing")
    if unexpected:
        parts += [f"unexpected keys ({len(unexpected)}):"] + _capped(unexpected)
        counts.append(f"{len(unexpected)} unexpected")
    if misshapen:
        parts += [f"wrong shapes ({len(misshapen)}):"] + _capped(misshapen)
        counts.append(f"{len(misshapen)} with wrong shape")
    raise CheckpointError(
        "state dict does not match the model (" + ", ".join(counts) + "):\n" + "\n".join(parts)
    )


# ---------------------------------------------------------------------------
# loading and saving


def load_checkpoint(
    path: str | os.PathLike,
    expected_for_variant: Callable[[str], Mapping[str, tuple[int, ...]]],
    voice_layout: Mapping[str, tuple[int, ...]] | None = None,
) -> tuple[str, dict[str, torch.Tensor]]:
    """Read a checkpoint and return (variant, state dict matching the model).

    Steps: read; drop the tokenizer's computed buffers; detect the variant; map weight-norm forms onto
    the model's names; check names and shapes against `expected_for_variant(variant)`, plus
    `voice_layout` (the speaker encoder and tokenizer entries, the same for every variant) when the file
    has any voice entry. A file without voice entries loads without them (logged once). Floating tensors
    come back as float32, in the expected order.
    """
    path = Path(path)
    raw = drop_computed_buffers(read_state_dict(path))
    variant = detect_variant(raw)
    expected = dict(expected_for_variant(variant))
    voice = has_voice(raw)
    if voice and voice_layout is not None:
        expected.update(voice_layout)
    sd = to_parametrized_weight_norm(raw, expected.keys())
    del raw
    try:
        check_state_dict(sd, expected)
    except CheckpointError as e:
        raise CheckpointError(f"{path} (detected variant: {variant}): {e}") from None
    out = {}
    for name in expected:
        t = sd[name]
        out[name] = t.float() if t.is_floating_point() else t
    log.info("loaded %s: variant %s, %d tensors", path, variant, len(out))
    if not voice:
        log.info("%s has no speaker_encoder.*/tokenizer.* entries: no voice graphs (speaker encoder, "
                 "tokenizer) can be made from it", path.name)
    return variant, out


def save_checkpoint(
    sd: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    weight_norm: str = "parametrizations",
) -> Path:
    """Write `sd` (parametrized weight-norm names) to `.safetensors` or a torch file.

    `weight_norm` picks the form written: "parametrizations", "weight_g" or
    "folded". Torch files hold a plain dict of tensors (loadable with
    weights_only=True). The file is written to a temporary name and moved in place.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES:
        known = ", ".join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)
        raise CheckpointError(f"{path}: unknown checkpoint suffix {path.suffix!r} (expected one of {known})")
    out = convert_weight_norm(sd, weight_norm)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in out.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"cannot save {name!r}: not a tensor ({type(t).__name__})")
        t = t.detach().cpu().contiguous()
        if t.numel():
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen:  # safetensors refuses tensors that share memory
                t = t.clone()
                ptr = t.untyped_storage().data_ptr()
            seen.add(ptr)
        tensors[name] = t
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        if suffix in SAFETENSORS_SUFFIXES:
            from safetensors.torch import save_file

            save_file(tensors, str(tmp))
        else:
            torch.save(tensors, str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (the same helper the runtime verifies artifacts with)."""
    return sha256_file(path, chunk_size)

"""encode -> solve -> vocode: speech tokens + a voice -> 24 kHz audio from an artifact folder.

Every check (tokens, voice, noise, solver, steps, cfg_rate, lengths against the buckets)
runs before the first graph does, so a bad request costs nothing and leaves nothing half done.

A batch is one padded pass through each graph. Rows are right-padded; the graphs' masks make
padding inert, so a row gets (to float32 reassociation) what it gets alone. The runtime object
holds no per-call state: one instance serves many threads.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from .audio import apply_trim_fade
from .backends import known_backends, open_runner
from .backends.base import INT8_SUFFIX, Runner
from .buckets import Bucket, pick_bucket, stack_padded
from .constants import MAX_CFG_RATE, SAMPLE_RATE, SAMPLES_PER_FRAME, TOKEN_MEL_RATIO
from .errors import ArtifactError, BucketError, InputError
from .io import check_noise_shapes, validate_tokens
from .manifest import Manifest, load_manifest
from .noise import draw_noise
from .solvers import CountingVelocity, get_solver, nfe, solve
from .voice import Voice

# The graphs each variant runs. estimator_cfg has guidance inside; estimator is used when cfg_rate = 0.
GRAPHS = {"standard": ("encoder", "estimator_cfg", "estimator", "vocoder"),
          "meanflow": ("encoder", "estimator", "vocoder")}
PRECISIONS = ("fp32", "int8")
_F32 = np.float32


@dataclass(frozen=True)
class Request:
    """One utterance: speech tokens (N,) or (1, N), a voice, and a seed or explicit noise."""

    tokens: Any
    voice: Voice
    seed: int | None = None
    noise: dict | None = None


@dataclass(frozen=True)
class Result:
    """wav (960 N,) float32 with the fade-in applied; mel (80, 2N); timings in seconds for the batch
    (encoder, estimator, vocoder, total); nfe = estimator calls; seed = the seed the noise came from
    (None when the noise was given)."""

    wav: np.ndarray
    mel: np.ndarray
    sample_rate: int
    timings: dict
    nfe: int
    seed: int | None = None


@dataclass(frozen=True)
class Settings:
    """A resolved solver setting."""

    solver: str
    steps: int
    cfg_rate: float

    @property
    def guided(self) -> bool:
        return self.cfg_rate > 0.0

    @property
    def nfe(self) -> int:
        return nfe(self.solver, self.steps)


@dataclass(frozen=True)
class _Row:
    """One validated request."""

    tokens: np.ndarray      # (N,) int64
    voice: Voice
    noise: dict             # z (1, 80, 2(P+N)), sine_phase (1, 9, 1), sine_noise (1, 9, 960 N), float32
    seed: int | None

    @property
    def prompt(self) -> int:
        return self.voice.prompt_tokens

    @property
    def new(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def frames(self) -> int:
        return TOKEN_MEL_RATIO * (self.prompt + self.new)


@dataclass(frozen=True)
class Layout:
    """Padded sizes of one batch: encoder input widths, solver frames, vocoder frames."""

    prompt_width: int
    token_width: int
    frames: int
    vocoder_frames: int
    bucket: Bucket = field(compare=False)


# ---------------------------------------------------------------- validation (pure)

def check_cfg_rate(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"cfg_rate must be a number >= 0, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0.0:
        raise InputError(f"cfg_rate must be finite and >= 0, got {value}")
    if value > MAX_CFG_RATE:
        raise InputError(f"cfg_rate must be at most {MAX_CFG_RATE:g} (MAX_CFG_RATE), got {value:g}")
    return value


def resolve_settings(manifest: Manifest, solver=None, steps=None, cfg_rate=None) -> Settings:
    """The caller's overrides on top of the manifest's tuning (when present) or defaults."""
    base = manifest.tuning if manifest.tuning is not None else manifest.defaults
    variant = manifest.checkpoint.variant
    solver = base.solver if solver is None else solver
    steps = base.steps if steps is None else steps
    cfg_rate = check_cfg_rate(base.cfg_rate if cfg_rate is None else cfg_rate)
    if not isinstance(solver, str):
        raise InputError(f"solver must be a solver name, got {solver!r}")
    get_solver(solver)
    if variant == "meanflow" and solver != "meanflow":
        raise InputError(f"meanflow artifacts run only the 'meanflow' solver (trained for its r input), got {solver!r}")
    if variant != "meanflow" and solver == "meanflow":
        raise InputError(f"solver 'meanflow' needs meanflow artifacts; these are {variant!r}: "
                         "use euler, heun, midpoint or dpmpp2m")
    if variant == "meanflow" and cfg_rate > 0.0:
        raise InputError(f"meanflow artifacts have no guided estimator: cfg_rate must be 0, got {cfg_rate}")
    settings = Settings(solver, steps, cfg_rate)
    settings.nfe   # validates steps
    return settings


def check_seed(seed) -> int:
    """A usable seed; None draws a fresh one (returned so the caller can replay it)."""
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0 or None, got {seed!r}")
    return int(seed)


def check_noise(noise, prompt: int, new: int) -> dict:
    """Explicit noise as float32 arrays of the request's shapes, finite."""
    if not isinstance(noise, dict):
        raise InputError(f"noise must be a dict with z, sine_phase and sine_noise, got {type(noise).__name__}")
    check_noise_shapes(noise, prompt, new)
    out = {}
    for key in ("z", "sine_phase", "sine_noise"):
        a = np.asarray(noise[key])
        if not np.issubdtype(a.dtype, np.floating):
            raise InputError(f"noise '{key}' must be floating point, got dtype {a.dtype}")
        if not np.all(np.isfinite(a)):
            raise InputError(f"noise '{key}' contains NaN or Inf")
        out[key] = a.astype(_F32)
    return out


def check_voice(voice) -> Voice:
    """Re-validated: a Voice built without Voice.validated may hold anything."""
    if not isinstance(voice, Voice):
        raise InputError(f"voice must be a s3gen_runtime.voice.Voice (load_voice or Voice.validated), "
                         f"got {type(voice).__name__}")
    return Voice.validated(voice.prompt_token, voice.prompt_feat, voice.embedding)


def validate_request(request, buckets) -> _Row:
    if not isinstance(request, Request):
        raise InputError(f"expected a Request, got {type(request).__name__}")
    tokens = validate_tokens(request.tokens)
    voice = check_voice(request.voice)
    prompt, new = voice.prompt_tokens, int(tokens.shape[0])
    pick_bucket(buckets, TOKEN_MEL_RATIO * (prompt + new))   # BucketError names the frames and the limit
    if request.noise is not None:
        return _Row(tokens, voice, check_noise(request.noise, prompt, new), None)
    seed = check_seed(request.seed)
    return _Row(tokens, voice, draw_noise(seed, prompt, new), seed)


def validate_requests(requests, buckets) -> list[_Row]:
    """Every request checked; in a batch the message says which one failed."""
    if not isinstance(requests, (list, tuple)) or not requests:
        raise InputError("requests must be a non-empty list of Request")
    rows = []
    for i, request in enumerate(requests):
        try:
            rows.append(validate_request(request, buckets))
        except InputError as e:
            if len(requests) == 1:
                raise
            raise type(e)(f"request {i}: {e}") from e
    return rows


def plan_layout(rows: list[_Row], buckets, pad_to_bucket: bool) -> Layout:
    """Padded sizes. The encoder sees prompt and tokens padded separately, so its length is
    2 (longest prompt + longest tokens); that is what must fit a bucket."""
    prompt_width = max(r.prompt for r in rows)
    token_width = max(r.new for r in rows)
    encoder_frames = TOKEN_MEL_RATIO * (prompt_width + token_width)
    try:
        bucket = pick_bucket(buckets, encoder_frames)
    except BucketError as e:
        raise BucketError(f"the batch pads to {encoder_frames} mel frames (longest prompt {prompt_width} + longest "
                          f"tokens {token_width}, times {TOKEN_MEL_RATIO}): {e}; split the batch") from e
    if pad_to_bucket:
        return Layout(prompt_width, bucket.tokens - prompt_width, bucket.mel_frames, bucket.mel_frames, bucket)
    # No work on frames no row has: solve over the longest row, vocode the longest new part.
    return Layout(prompt_width, token_width, max(r.frames for r in rows),
                  TOKEN_MEL_RATIO * token_width, bucket)


# ---------------------------------------------------------------- feeds (pure)

def encoder_feeds(rows: list[_Row], layout: Layout) -> dict[str, np.ndarray]:
    return {
        "tokens": stack_padded([r.tokens[None] for r in rows], layout.token_width, 1),
        "token_lengths": np.array([r.new for r in rows], dtype=np.int64),
        "prompt_tokens": stack_padded([r.voice.prompt_token for r in rows], layout.prompt_width, 1),
        "prompt_lengths": np.array([r.prompt for r in rows], dtype=np.int64),
        "prompt_feat": stack_padded([r.voice.prompt_feat for r in rows], TOKEN_MEL_RATIO * layout.prompt_width, 1),
        "embedding": np.concatenate([r.voice.embedding for r in rows], axis=0),
    }


def initial_noise(rows: list[_Row], frames: int) -> np.ndarray:
    """x0: each row's own z, left-aligned, zeros over its padding."""
    return stack_padded([r.noise["z"] for r in rows], frames, 2)


def vocoder_feeds(mels: list[np.ndarray], rows: list[_Row], frames: int) -> dict[str, np.ndarray]:
    return {
        "mel": stack_padded([m[None] for m in mels], frames, 2),
        "mel_lengths": np.array([m.shape[1] for m in mels], dtype=np.int64),
        "sine_phase": np.concatenate([r.noise["sine_phase"] for r in rows], axis=0),
        "sine_noise": stack_padded([r.noise["sine_noise"] for r in rows], SAMPLES_PER_FRAME * frames, 2),
    }


def make_velocity(runner: Runner, conditioning: dict, settings: Settings, meanflow: bool):
    """The solvers' velocity(x, t, r) for one batch: one estimator call per NFE."""
    batch = conditioning["mu"].shape[0]
    cfg = np.full(batch, settings.cfg_rate, dtype=_F32)

    def velocity(x, t, r):
        feeds = {"x": x, **conditioning, "t": np.full(batch, t, dtype=_F32)}
        if settings.guided:
            feeds["cfg_rate"] = cfg
        if meanflow:
            feeds["r"] = np.full(batch, r, dtype=_F32)
        return runner.run(feeds, ["velocity"])["velocity"]

    return velocity


# ---------------------------------------------------------------- components

def select_components(manifest: Manifest, precision: str) -> dict[str, str]:
    """Role -> component name. int8 takes '<role>_int8' where present (graphs kept in fp32,
    such as the vocoder, stay fp32); artifacts with no int8 graph at all are refused."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    roles = GRAPHS[manifest.checkpoint.variant]
    chosen = {}
    for role in roles:
        name = role + INT8_SUFFIX if precision == "int8" and role + INT8_SUFFIX in manifest.components else role
        component = manifest.component(name)
        want = "int8" if name.endswith(INT8_SUFFIX) else "fp32"
        if component.precision != want:
            raise ArtifactError(f"component {name!r} is recorded as {component.precision}, expected {want}")
        chosen[role] = name
    if precision == "int8" and not any(n.endswith(INT8_SUFFIX) for n in chosen.values()):
        raise ArtifactError(f"these artifacts have no int8 graphs (components: {', '.join(sorted(manifest.components))}); "
                            "re-export with --int8")
    return chosen


# ---------------------------------------------------------------- the runtime

class S3GenRuntime:
    """Loads an artifact folder (every file's sha256 checked) and synthesises speech from it.

    backend_options go to the backend (onnxruntime: providers, intra_op_threads).
    """

    def __init__(self, folder, backend: str = "onnxruntime", precision: str = "fp32", pad_to_bucket: bool = False,
                 **backend_options):
        if not isinstance(pad_to_bucket, bool):
            raise InputError(f"pad_to_bucket must be True or False, got {pad_to_bucket!r}")
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if backend not in known_backends():   # before hashing a GB of graphs
            raise InputError(f"unknown backend {backend!r}; known backends: {', '.join(known_backends())}")
        self.folder = Path(folder)
        self.manifest = load_manifest(self.folder, verify=True)
        self.precision = precision
        self.pad_to_bucket = pad_to_bucket
        self.backend = backend
        self.components = MappingProxyType(select_components(self.manifest, precision))
        self.runners = MappingProxyType({role: open_runner(self.folder, self.manifest, name, backend, **backend_options)
                                         for role, name in self.components.items()})

    @property
    def variant(self) -> str:
        return self.manifest.checkpoint.variant

    @property
    def buckets(self) -> tuple:
        return self.manifest.buckets

    @property
    def defaults(self):
        return self.manifest.defaults

    def resolve(self, solver=None, steps=None, cfg_rate=None) -> Settings:
        """The setting a call with these overrides would use (tuning or defaults underneath)."""
        return resolve_settings(self.manifest, solver, steps, cfg_rate)

    def synthesize(self, tokens, voice: Voice, *, seed: int | None = None, noise: dict | None = None,
                   solver: str | None = None, steps: int | None = None, cfg_rate: float | None = None) -> Result:
        """One utterance. Explicit noise overrides the seed; no seed and no noise draws a fresh seed."""
        return self.synthesize_batch([Request(tokens, voice, seed, noise)], solver=solver, steps=steps,
                                     cfg_rate=cfg_rate)[0]

    def synthesize_batch(self, requests, *, solver: str | None = None, steps: int | None = None,
                         cfg_rate: float | None = None) -> list[Result]:
        """Several utterances in one padded batch; results in request order."""
        settings = self.resolve(solver, steps, cfg_rate)
        rows = validate_requests(requests, self.buckets)
        layout = plan_layout(rows, self.buckets, self.pad_to_bucket)
        return self._run(rows, layout, settings)

    def _run(self, rows: list[_Row], layout: Layout, settings: Settings) -> list[Result]:
        clock = time.perf_counter
        start = clock()
        enc = self.runners["encoder"].run(encoder_feeds(rows, layout))
        # Rows are left-aligned, so frames past the longest row are padding for every row.
        conditioning = {k: np.ascontiguousarray(enc[k][..., :layout.frames]) if k != "spks" else enc[k]
                        for k in ("mask", "mu", "spks", "cond")}
        after_encoder = clock()

        estimator = self.runners["estimator_cfg" if settings.guided else "estimator"]
        velocity = CountingVelocity(make_velocity(estimator, conditioning, settings, self.variant == "meanflow"))
        x1 = solve(settings.solver, velocity, initial_noise(rows, layout.frames), settings.steps)
        mels = [np.ascontiguousarray(x1[b, :, TOKEN_MEL_RATIO * r.prompt: r.frames]) for b, r in enumerate(rows)]
        after_solver = clock()

        wav = self.runners["vocoder"].run(vocoder_feeds(mels, rows, layout.vocoder_frames), ["wav"])["wav"]
        end = clock()
        timings = {"encoder": after_encoder - start, "estimator": after_solver - after_encoder,
                   "vocoder": end - after_solver, "total": end - start}
        results = []
        for b, (row, mel) in enumerate(zip(rows, mels)):
            samples = SAMPLES_PER_FRAME * mel.shape[1]
            results.append(Result(apply_trim_fade(wav[b, :samples]), mel, SAMPLE_RATE, dict(timings),
                                  velocity.calls, row.seed))
        return results


__all__ = ["S3GenRuntime", "Request", "Result", "Settings", "Layout", "GRAPHS", "PRECISIONS", "resolve_settings",
           "select_components", "plan_layout"]

"""encode -> solve -> vocode: speech tokens + a voice -> 24 kHz audio from an artifact folder.

`S3GenRuntime.synthesize_batch` is composed of public stages that other callers (benchmarks,
tuning, streaming, serving) use directly, so there is one copy of each:

    batch = runtime.prepare(requests)                 # every check; no graph runs
    conditioning = runtime.encode(batch)              # encoder graph once
    settings = runtime.resolve(solver, steps, cfg_rate)
    x1 = runtime.solve(conditioning, settings)        # one estimator call per NFE
    wavs = runtime.vocode(batch, conditioning.mels(x1))

Every check (tokens, voice, noise, solver, steps, cfg_rate, lengths against the buckets) runs
before the first graph does, so a bad request costs nothing and leaves nothing half done.

The runtime object holds no per-call state (what a call needs lives in the Batch and Conditioning it
returns): one instance serves many threads.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .audio import apply_trim_fade
from .backends import known_backends, open_runner
from .backends.base import INT8_SUFFIX, Runner
from .batching import (Batch, Request, check_mels, encoder_feeds, initial_noise, make_batch, split_rows,
                       vocoder_feeds)
from .constants import MAX_CFG_RATE, MEL_BINS, SAMPLE_RATE, SAMPLES_PER_FRAME
from .errors import ArtifactError, InputError
from .manifest import Manifest, load_manifest
from .heap import release_free_heap
from .runner_set import RunnerSet
from .selftest import selftest_runner
from .solvers import Velocity, get_solver, nfe, solve
from .voice import Voice

# The graphs each variant runs. estimator_cfg has guidance inside; estimator is used when cfg_rate = 0.
GRAPHS = {"standard": ("encoder", "estimator_cfg", "estimator", "vocoder"),
          "meanflow": ("encoder", "estimator", "vocoder")}
# Opened on first use: in the standard variant the unguided estimator repeats estimator_cfg's weights.
LAZY_ROLES = {"standard": ("estimator",), "meanflow": ()}
PRECISIONS = ("fp32", "int8")
_F32 = np.float32


@dataclass(frozen=True)
class Result:
    """wav (480 M,) float32 with the fade-in applied; mel (80, M) with M = 2N, or 2N - 1 after an odd
    prompt (F = 2P + 1, as upstream); timings in seconds for the batch
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


# ---------------------------------------------------------------- settings (pure)

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


# ---------------------------------------------------------------- conditioning (per call)

@dataclass(frozen=True)
class Conditioning:
    """What the estimator is conditioned on for one batch, and where each row's mel lies.

    mask (B, 1, T), mu (B, 80, T), cond (B, 80, T): encoder outputs trimmed to the solver's T frames;
    spks (B, 80); x0 (B, 80, T): each row's initial noise, zeros over its padding; spans: per row
    (first generated frame, end of the row): frames before the first are the prompt mel's F frames
    (2P or 2P + 1), so a row's mel is cut at its own F, as upstream cuts it."""

    mask: np.ndarray
    mu: np.ndarray
    spks: np.ndarray
    cond: np.ndarray
    x0: np.ndarray
    spans: tuple

    @property
    def frames(self) -> int:
        return int(self.x0.shape[2])

    def __len__(self) -> int:
        return int(self.x0.shape[0])

    def feeds(self) -> dict:
        """The estimator's conditioning inputs (everything but x, t, r and cfg_rate)."""
        return {"mask": self.mask, "mu": self.mu, "spks": self.spks, "cond": self.cond}

    def mels(self, x1: np.ndarray) -> list:
        """Each row's generated mel (80, T_b - F_b) from a solution x1 (B, 80, T): prompt and padding cut off."""
        return [np.ascontiguousarray(x1[b, :, a:e]) for b, (a, e) in enumerate(self.spans)]

    def row(self, index: int) -> "Conditioning":
        """Row `index` alone, cut to its own length. The masks make padding and other rows inert, so
        solving it gives the row's batch result up to float32 reassociation."""
        end = self.spans[index][1]

        def pick(a):
            return np.ascontiguousarray(a[index:index + 1, ..., :end])

        return Conditioning(pick(self.mask), pick(self.mu), np.ascontiguousarray(self.spks[index:index + 1]),
                            pick(self.cond), pick(self.x0), (self.spans[index],))


def trim_conditioning(outputs: dict, batch: Batch) -> Conditioning:
    """The encoder's outputs cut to the solver's frames: rows are left-aligned, so frames past the
    longest row (the encoder runs on prompt and tokens padded separately) are padding for every row."""
    frames = batch.layout.frames
    cut = {k: np.ascontiguousarray(outputs[k][..., :frames]) for k in ("mask", "mu", "cond")}
    return Conditioning(spks=outputs["spks"], x0=initial_noise(batch), spans=tuple(r.span for r in batch.rows), **cut)


def make_velocity(runner: Runner, conditioning: Conditioning, settings: Settings, meanflow: bool) -> Velocity:
    """The solvers' velocity(x, t, r) for one batch: one estimator call per NFE."""
    batch = len(conditioning)
    cond = conditioning.feeds()
    cfg = np.full(batch, settings.cfg_rate, dtype=_F32)

    def velocity(x, t, r):
        feeds = {"x": x, **cond, "t": np.full(batch, t, dtype=_F32)}
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
    """Loads an artifact folder and synthesises speech from it.

    Each graph file is read once, and the bytes loaded are the bytes whose sha256 is checked; the
    unguided estimator (cfg_rate = 0 only) is opened on first use. int8 graphs run their self-test
    probe on this CPU as they open and are refused below their SNR floors (selftest.py).
    backend_options go to the backend (onnxruntime: providers, intra_op_threads, allow_spinning,
    memory_arena, arena_shrinkage).
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
        self.manifest = load_manifest(self.folder, verify=False)   # each runner verifies the bytes it loads
        self.precision = precision
        self.pad_to_bucket = pad_to_bucket
        self.backend = backend
        self.components = MappingProxyType(select_components(self.manifest, precision))
        self.selftest_snr_db: dict[str, dict] = {}

        def open_role(role: str) -> Runner:
            name = self.components[role]
            runner = open_runner(self.folder, self.manifest, name, backend, **backend_options)
            if runner.component.precision == "int8":
                self.selftest_snr_db[name] = selftest_runner(self.folder, runner)
            return runner

        self.runners = RunnerSet(open_role, self.components, eager=[r for r in self.components if r not in LAZY_ROLES[self.variant]])
        self._voice_preparer = None
        self._voice_lock = threading.Lock()
        self._backend_options = dict(backend_options)
        release_free_heap()   # what loading freed goes back to the OS (heap.py)

    @property
    def variant(self) -> str:
        return self.manifest.checkpoint.variant

    @property
    def vocoder(self) -> str:
        """Which vocoder the `vocoder` graph is: 'hift' (the checkpoint's) or 'vocos'."""
        return self.manifest.vocoder.kind

    @property
    def buckets(self) -> tuple:
        return self.manifest.buckets

    @property
    def rows_independent(self) -> bool:
        """Whether a row of a batch comes out as it would alone. Not with int8 graphs: they quantize
        activations with one scale per tensor, taken over every row and the padding, so a row's output
        would depend on what it is batched with (measured: 0.47 max abs wav difference on the load test)."""
        return all(self.manifest.component(name).precision != "int8" for name in self.components.values())

    @property
    def defaults(self):
        return self.manifest.defaults

    def resolve(self, solver=None, steps=None, cfg_rate=None) -> Settings:
        """The setting a call with these overrides would use (tuning or defaults underneath)."""
        return resolve_settings(self.manifest, solver, steps, cfg_rate)

    # ------------------------------------------------------------ stages

    def prepare(self, requests) -> Batch:
        """Validate requests (a list of Request) and plan their padded batch; no graph runs.
        Raises InputError (BucketError when too long) naming the request that failed."""
        return make_batch(requests, self.buckets, self.pad_to_bucket)

    def encode(self, batch: Batch) -> Conditioning:
        """Run the encoder graph once for the whole batch."""
        self._check_batch(batch)
        return trim_conditioning(self.runners["encoder"].run(encoder_feeds(batch)), batch)

    def velocity(self, conditioning: Conditioning, settings: Settings) -> Velocity:
        """velocity(x, t, r) -> guided velocity (B, 80, T): one estimator call (the guided graph
        when settings.cfg_rate > 0), for solvers of one's own or for timing single calls."""
        settings = self._check_settings(settings)
        runner = self.runners["estimator_cfg" if settings.guided else "estimator"]
        return make_velocity(runner, conditioning, settings, self.variant == "meanflow")

    def solve(self, conditioning: Conditioning, settings: Settings, x0: np.ndarray | None = None) -> np.ndarray:
        """Integrate the flow from x0 (default: conditioning.x0, the rows' own noise) to x1 (B, 80, T)
        with settings.solver and settings.steps; conditioning.mels(x1) cuts out each row's mel."""
        velocity = self.velocity(conditioning, settings)
        x0 = conditioning.x0 if x0 is None else x0
        if np.shape(x0) != conditioning.x0.shape:
            raise InputError(f"x0 must have shape {conditioning.x0.shape} (batch, {MEL_BINS}, frames), "
                             f"got {np.shape(x0)}")
        return solve(settings.solver, velocity, x0, settings.steps)

    def vocode(self, batch: Batch, mels, *, fade: bool = True) -> list:
        """One vocoder run for the batch: each row's mel (80, M) -> its waveform (480 M,) float32,
        with upstream's 40 ms fade-in unless fade=False (e.g. for a later part of a stream)."""
        self._check_batch(batch)
        mels = check_mels(mels, batch)
        runner = self.runners["vocoder"]
        names = [t.name for t in runner.component.inputs]
        wav = runner.run(vocoder_feeds(mels, batch, names), ["wav"])["wav"]
        cut = [np.ascontiguousarray(wav[b, :SAMPLES_PER_FRAME * m.shape[1]]) for b, m in enumerate(mels)]
        return [apply_trim_fade(w) for w in cut] if fade else cut

    # ------------------------------------------------------------ whole calls

    def synthesize(self, tokens, voice: Voice, *, seed: int | None = None, noise: dict | None = None,
                   solver: str | None = None, steps: int | None = None, cfg_rate: float | None = None) -> Result:
        """One utterance. Explicit noise overrides the seed; no seed and no noise draws a fresh seed."""
        return self.synthesize_batch([Request(tokens, voice, seed, noise)], solver=solver, steps=steps,
                                     cfg_rate=cfg_rate)[0]

    def synthesize_batch(self, requests, *, solver: str | None = None, steps: int | None = None,
                         cfg_rate: float | None = None) -> list[Result]:
        """Several utterances in one padded batch (prepare, encode, solve, vocode); results in request order.
        With int8 graphs each request runs alone (rows_independent), after all of them were checked."""
        settings = self.resolve(solver, steps, cfg_rate)
        batch = self.prepare(requests)
        if len(batch) == 1 or self.rows_independent:
            return self._synthesize(batch, settings)
        return [result for row in split_rows(batch, self.buckets, self.pad_to_bucket)
                for result in self._synthesize(row, settings)]

    def _synthesize(self, batch: Batch, settings: Settings) -> list[Result]:
        clock = time.perf_counter
        start = clock()
        conditioning = self.encode(batch)
        after_encoder = clock()
        mels = conditioning.mels(self.solve(conditioning, settings))
        after_solver = clock()
        wavs = self.vocode(batch, mels)
        end = clock()
        del conditioning
        release_free_heap()   # the request's buffers go back to the OS, not only to the heap
        timings = {"encoder": after_encoder - start, "estimator": after_solver - after_encoder,
                   "vocoder": end - after_solver, "total": end - start}
        return [Result(wav, mel, SAMPLE_RATE, dict(timings), settings.nfe, row.seed)
                for row, mel, wav in zip(batch.rows, mels, wavs)]

    def stream(self, tokens, voice: Voice, *, seed: int | None = None, noise: dict | None = None,
               solver: str | None = None, steps: int | None = None, cfg_rate: float | None = None,
               first_chunk_tokens: int | None = None, chunk_tokens: int | None = None, growth: float | None = None,
               left_context_frames: int | None = None, hold_frames: int | None = None):
        """Streaming synthesis (streaming.py): tokens as a whole array or an iterable of token chunks;
        yields StreamChunks (wav piece, latency, timings) and returns the StreamResult (their
        concatenation). Options are checked now; the graphs run as the generator is consumed."""
        from .streaming import stream

        return stream(self, tokens, voice, seed=seed, noise=noise, solver=solver, steps=steps, cfg_rate=cfg_rate,
                      first_chunk_tokens=first_chunk_tokens, chunk_tokens=chunk_tokens, growth=growth,
                      left_context_frames=left_context_frames, hold_frames=hold_frames)

    # ------------------------------------------------------------ voices

    def prepare_voice(self, source, sample_rate: int | None = None, *, normalize_loudness: bool | None = None):
        """A voice from a recording: a file path, or samples with their sample_rate (voice_prep.py). The two
        voice graphs open on the first call, so a runtime that never prepares voices never holds them."""
        from .voice_prep import VoicePreparer

        with self._voice_lock:
            if self._voice_preparer is None:
                # TensorRT engines are not built for the voice graphs (a voice is prepared once): ONNX Runtime
                backend, options = ((self.backend, self._backend_options) if self.backend != "tensorrt"
                                    else ("onnxruntime", {}))
                self._voice_preparer = VoicePreparer(self.folder, backend, self.manifest, **options)
        if sample_rate is None:
            return self._voice_preparer.from_file(source, normalize_loudness=normalize_loudness)
        return self._voice_preparer.from_array(source, sample_rate, normalize_loudness=normalize_loudness)

    # ------------------------------------------------------------ checks

    def _check_batch(self, batch) -> None:
        """A Batch from prepare(), planned for one of these artifacts' buckets."""
        if not isinstance(batch, Batch):
            raise InputError(f"expected a Batch from S3GenRuntime.prepare, got {type(batch).__name__}")
        if batch.layout.bucket not in self.buckets:
            raise InputError(f"this batch was planned for bucket {batch.layout.bucket.name!r}, "
                             f"which these artifacts do not have")

    def _check_settings(self, settings) -> Settings:
        """Settings built by hand are held to the same checks as resolve()'s (variant, limits)."""
        if not isinstance(settings, Settings):
            raise InputError(f"expected Settings (S3GenRuntime.resolve), got {type(settings).__name__}")
        return self.resolve(settings.solver, settings.steps, settings.cfg_rate)


__all__ = ["S3GenRuntime", "Result", "Settings", "Conditioning", "GRAPHS", "PRECISIONS",
           "resolve_settings", "check_cfg_rate", "select_components", "make_velocity"]

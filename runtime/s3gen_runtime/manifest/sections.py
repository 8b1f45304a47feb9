"""The manifest's small sections: who made the artifacts (tool, versions, checkpoint), the audio
constants they assume, the solver setting to use (defaults, tuning) and the bucket table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .. import constants as C
from ..buckets import Bucket
from ..errors import InputError, ManifestError
from ..solvers import SOLVERS
from .fields import (json_copy, key_path, read_bool, read_choice, read_dict, read_float, read_int, read_object,
                     read_opt_str, read_sha256, read_str)

TOOL_NAME = "s3gen-aot"


def read_setting(d: dict, path: str) -> tuple:
    """(solver, steps, cfg_rate) within the limits a request has (MAX_STEPS, MAX_CFG_RATE)."""
    cfg_rate = read_float(d, "cfg_rate", path, nonnegative=True)
    if cfg_rate > C.MAX_CFG_RATE:
        raise ManifestError(f"{key_path(path, 'cfg_rate')} must be <= {C.MAX_CFG_RATE:g}, got {cfg_rate:g}")
    return (read_choice(d, "solver", path, tuple(SOLVERS)),
            read_int(d, "steps", path, minimum=1, maximum=C.MAX_STEPS), cfg_rate)


@dataclass(frozen=True)
class Tool:
    name: str
    version: str

    @classmethod
    def from_dict(cls, data, path: str = "tool") -> "Tool":
        d = read_object(data, path, ("name", "version"))
        name = read_str(d, "name", path)
        if name != TOOL_NAME:
            raise ManifestError(f"{path}.name is {name!r}: this runtime reads artifacts made by {TOOL_NAME!r}")
        return cls(name, read_str(d, "version", path))

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True)
class Versions:
    """Library versions the artifacts were made with (None: not used)."""

    python: str
    torch: Optional[str]
    onnx: Optional[str]
    onnxruntime: Optional[str]
    tensorrt: Optional[str]

    _KEYS = ("python", "torch", "onnx", "onnxruntime", "tensorrt")

    @classmethod
    def from_dict(cls, data, path: str = "versions") -> "Versions":
        d = read_object(data, path, cls._KEYS)
        return cls(read_str(d, "python", path), *(read_opt_str(d, k, path) for k in cls._KEYS[1:]))

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self._KEYS}


@dataclass(frozen=True)
class Checkpoint:
    file: str
    sha256: str
    variant: str

    @classmethod
    def from_dict(cls, data, path: str = "checkpoint") -> "Checkpoint":
        d = read_object(data, path, ("file", "sha256", "variant"))
        return cls(read_str(d, "file", path), read_sha256(d, "sha256", path), read_choice(d, "variant", path, C.VARIANTS))

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "variant": self.variant}


@dataclass(frozen=True)
class Audio:
    """The audio constants the graphs were exported for."""

    sample_rate: int
    mel_bins: int
    mel_rate: int
    token_rate: int
    samples_per_frame: int
    vocab_size: int
    speaker_embed_dim: int
    n_harmonics: int
    max_mel_frames: int

    _KEYS = ("sample_rate", "mel_bins", "mel_rate", "token_rate", "samples_per_frame", "vocab_size",
             "speaker_embed_dim", "n_harmonics", "max_mel_frames")

    @classmethod
    def current(cls) -> "Audio":
        """This runtime's constants (the only ones it can run)."""
        return cls(C.SAMPLE_RATE, C.MEL_BINS, C.MEL_RATE, C.TOKEN_RATE, C.SAMPLES_PER_FRAME,
                   C.SPEECH_VOCAB_SIZE, C.SPEAKER_EMBED_DIM, C.N_HARMONICS, C.MAX_MEL_FRAMES)

    @classmethod
    def from_dict(cls, data, path: str = "audio") -> "Audio":
        d = read_object(data, path, cls._KEYS)
        return cls(*(read_int(d, k, path, minimum=1) for k in cls._KEYS))

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self._KEYS}

    def check_runtime(self, path: str = "audio") -> None:
        """Refuse constants that differ from this runtime's: its DSP and shapes assume them."""
        mine = Audio.current()
        for k in self._KEYS:
            if getattr(self, k) != getattr(mine, k):
                raise ManifestError(
                    f"{path}.{k} is {getattr(self, k)} but this runtime is built for {getattr(mine, k)}"
                )


@dataclass(frozen=True)
class Defaults:
    solver: str
    steps: int
    cfg_rate: float

    @classmethod
    def from_dict(cls, data, path: str = "defaults") -> "Defaults":
        return cls(*read_setting(read_object(data, path, ("solver", "steps", "cfg_rate")), path))

    def to_dict(self) -> dict:
        return {"solver": self.solver, "steps": self.steps, "cfg_rate": self.cfg_rate}

    @classmethod
    def upstream(cls, variant: str) -> "Defaults":
        """The setting upstream runs for a model variant: an export's defaults, the reference's and the
        benchmark's (torch-free, so the benchmark's runtime processes can use it)."""
        if variant == "meanflow":
            return cls("meanflow", C.DEFAULT_STEPS[variant], 0.0)
        return cls("euler", C.DEFAULT_STEPS[variant], C.DEFAULT_CFG_RATE)


def bucket_from_dict(data, path: str) -> Bucket:
    d = read_object(data, path, ("name", "mel_frames"))
    name, frames = read_str(d, "name", path), read_int(d, "mel_frames", path)
    try:
        return Bucket(name, frames)
    except InputError as e:
        raise ManifestError(f"{path}: {e}") from e


def bucket_to_dict(b: Bucket) -> dict:
    return {"name": b.name, "mel_frames": b.mel_frames}


@dataclass(frozen=True)
class Tuning:
    """The solver setting chosen by measurement (on real weights) and what was measured."""

    solver: str
    steps: int
    cfg_rate: float
    target_db: float
    measured: dict

    @classmethod
    def from_dict(cls, data, path: str = "tuning") -> "Tuning":
        d = read_object(data, path, ("solver", "steps", "cfg_rate", "target_db", "measured"))
        return cls(*read_setting(d, path), read_float(d, "target_db", path),
                   json_copy(read_dict(d, "measured", path), key_path(path, "measured")))

    def to_dict(self) -> dict:
        return {"solver": self.solver, "steps": self.steps, "cfg_rate": self.cfg_rate,
                "target_db": self.target_db, "measured": json_copy(self.measured, "measured")}


VOCODER_KINDS = ("hift", "vocos")


@dataclass(frozen=True)
class VocoderSource:
    """Which vocoder the `vocoder` graph is: the checkpoint's HiFT, or a Vocos model exported beside it
    (its folder name and the sha256 of its config.yaml and weights). Absent from older manifests: HiFT."""

    kind: str
    source: str
    config_sha256: Optional[str] = None
    weights_sha256: Optional[str] = None
    parameters: Optional[int] = None

    @classmethod
    def from_dict(cls, data, path: str = "vocoder") -> "VocoderSource":
        d = read_object(data, path, ("kind", "source", "config_sha256", "weights_sha256", "parameters"))
        kind = read_choice(d, "kind", path, VOCODER_KINDS)
        hashes = [None if d[k] is None else read_sha256(d, k, path) for k in ("config_sha256", "weights_sha256")]
        if kind == "vocos" and None in hashes:
            raise ManifestError(f"{path}: a vocos vocoder records config_sha256 and weights_sha256")
        parameters = None if d["parameters"] is None else read_int(d, "parameters", path, minimum=1)
        return cls(kind, read_str(d, "source", path), *hashes, parameters)

    @classmethod
    def hift(cls) -> "VocoderSource":
        return cls("hift", "checkpoint")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "source": self.source, "config_sha256": self.config_sha256,
                "weights_sha256": self.weights_sha256, "parameters": self.parameters}


@dataclass(frozen=True)
class GraphBuild:
    """How one graph of the folder was made: the key of what it was made from (its weights, spec, precision
    settings, the exporter's code and library versions; equal keys mean the export would write the same
    graph), whether this export reused it from the folder, and the seconds it took when it was made."""

    key: str
    reused: bool
    export_s: float
    validate_s: float

    @classmethod
    def from_dict(cls, data, path: str) -> "GraphBuild":
        d = read_object(data, path, ("key", "reused", "export_s", "validate_s"))
        return cls(read_sha256(d, "key", path), read_bool(d, "reused", path),
                   read_float(d, "export_s", path, nonnegative=True), read_float(d, "validate_s", path, nonnegative=True))

    def to_dict(self) -> dict:
        return {"key": self.key, "reused": self.reused, "export_s": self.export_s, "validate_s": self.validate_s}


@dataclass(frozen=True)
class ExportRecord:
    """The export run that wrote the folder: worker processes, wall seconds, and one GraphBuild per graph.
    Absent from manifests written before incremental export (nothing in them can be reused)."""

    jobs: int
    seconds: float
    graphs: dict   # graph name -> GraphBuild

    @classmethod
    def from_dict(cls, data, path: str = "export") -> "ExportRecord":
        d = read_object(data, path, ("jobs", "seconds", "graphs"))
        graphs = {name: GraphBuild.from_dict(g, key_path(key_path(path, "graphs"), name))
                  for name, g in read_dict(d, "graphs", path).items()}
        return cls(read_int(d, "jobs", path, minimum=1), read_float(d, "seconds", path, nonnegative=True), graphs)

    def to_dict(self) -> dict:
        return {"jobs": self.jobs, "seconds": self.seconds, "graphs": {n: g.to_dict() for n, g in self.graphs.items()}}

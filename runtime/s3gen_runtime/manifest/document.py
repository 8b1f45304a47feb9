"""The manifest as a whole: schema version first, then every section, strictly; canonical JSON out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

from ..errors import ArtifactError, ManifestError
from .fields import read_dict, read_list, read_object, type_error
from .graphs import VOICE_COMPONENTS, Component, Engine
from .sections import (Audio, Checkpoint, Defaults, ExportRecord, Tool, Tuning, Versions, VocoderSource,
                       bucket_from_dict, bucket_to_dict)

# 2: fused-attention estimators, int8 self-test records
SCHEMA_VERSION = 2
SUPPORTED_SCHEMA_VERSIONS = (2,)
MANIFEST_NAME = "manifest.json"


def _no_duplicate_keys(pairs) -> dict:
    """json object hook: a repeated key would otherwise silently keep the last value."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ManifestError(f"duplicate key {key!r} in {MANIFEST_NAME}")
        out[key] = value
    return out


_TOP_KEYS = ("schema_version", "tool", "versions", "checkpoint", "audio", "defaults", "buckets",
             "components", "engines", "tuning")
# optional: manifests written before Vocos support have no "vocoder" record (their vocoder is HiFT), and those
# written before incremental export no "export" record
_OPTIONAL_KEYS = ("vocoder", "export")


def _check_schema_version(data) -> None:
    """Checked before anything else: a newer manifest may have keys we do not know."""
    if not isinstance(data, dict):
        raise ManifestError(f"manifest must be a JSON object, got {type(data).__name__}")
    if "schema_version" not in data:
        raise ManifestError("missing key schema_version")
    v = data["schema_version"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise type_error("schema_version", "an integer", v)
    if v not in SUPPORTED_SCHEMA_VERSIONS:
        readable = ", ".join(map(str, SUPPORTED_SCHEMA_VERSIONS))
        raise ManifestError(
            f"schema_version {v} is not supported: this runtime reads schema_version {readable}; "
            "use the s3gen-aot version that exported these artifacts, or re-export them"
        )


def _check_voice_components(components: dict) -> None:
    """The voice graphs are optional, but come as a pair (a voice needs both) and only in fp32."""
    present = [n for n in VOICE_COMPONENTS if n in components]
    if present and len(present) != len(VOICE_COMPONENTS):
        missing = [n for n in VOICE_COMPONENTS if n not in components]
        raise ManifestError(f"components has {', '.join(present)} but not {', '.join(missing)}: "
                            "the voice graphs come together")
    for name in present:
        if components[name].precision != "fp32":
            raise ManifestError(f"components.{name}.precision must be fp32 (voice graphs are never quantized), "
                                f"got {components[name].precision!r}")


@dataclass(frozen=True)
class Manifest:
    tool: Tool
    versions: Versions
    checkpoint: Checkpoint
    audio: Audio
    defaults: Defaults
    buckets: tuple            # of Bucket, smallest first
    components: dict          # graph name -> Component
    engines: tuple = ()       # of Engine
    tuning: Optional[Tuning] = None
    schema_version: int = field(default=SCHEMA_VERSION)
    vocoder: VocoderSource = field(default_factory=VocoderSource.hift)
    export: Optional[ExportRecord] = None

    @classmethod
    def from_dict(cls, data) -> "Manifest":
        _check_schema_version(data)
        d = read_object(data, "", _TOP_KEYS + tuple(k for k in _OPTIONAL_KEYS if k in data))
        buckets = tuple(bucket_from_dict(b, f"buckets[{i}]") for i, b in enumerate(read_list(d, "buckets", "")))
        frames = [b.mel_frames for b in buckets]
        if not buckets or frames != sorted(set(frames)) or len({b.name for b in buckets}) != len(buckets):
            raise ManifestError(f"buckets must be non-empty, unique and sorted by mel_frames, got {frames}")
        components = {name: Component.from_dict(c, f"components.{name}")
                      for name, c in read_dict(d, "components", "").items()}
        _check_voice_components(components)
        engines = tuple(Engine.from_dict(e, f"engines[{i}]") for i, e in enumerate(read_list(d, "engines", "")))
        bucket_names = [b.name for b in buckets]
        for i, e in enumerate(engines):
            if e.graph not in components:
                raise ManifestError(f"engines[{i}].graph {e.graph!r} is not a component ({', '.join(components)})")
            if e.bucket not in bucket_names:
                raise ManifestError(f"engines[{i}].bucket {e.bucket!r} is not a bucket ({', '.join(bucket_names)})")
        tuning = None if d["tuning"] is None else Tuning.from_dict(d["tuning"])
        # a record of a graph that is no longer a component (removed by hand, or replaced) is history, and is
        # never reused: reuse needs the component and the record
        export = ExportRecord.from_dict(d["export"]) if "export" in d else None
        return cls(Tool.from_dict(d["tool"]), Versions.from_dict(d["versions"]),
                   Checkpoint.from_dict(d["checkpoint"]), Audio.from_dict(d["audio"]),
                   Defaults.from_dict(d["defaults"]), buckets, components, engines, tuning, d["schema_version"],
                   VocoderSource.from_dict(d["vocoder"]) if "vocoder" in d else VocoderSource.hift(), export)

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "tool": self.tool.to_dict(),
            "versions": self.versions.to_dict(),
            "checkpoint": self.checkpoint.to_dict(),
            "audio": self.audio.to_dict(),
            "defaults": self.defaults.to_dict(),
            "buckets": [bucket_to_dict(b) for b in self.buckets],
            "components": {name: c.to_dict() for name, c in self.components.items()},
            "engines": [e.to_dict() for e in self.engines],
            "tuning": None if self.tuning is None else self.tuning.to_dict(),
            # absent means the checkpoint's HiFT: manifests of HiFT exports read and write as before
            **({} if self.vocoder == VocoderSource.hift() else {"vocoder": self.vocoder.to_dict()}),
            **({} if self.export is None else {"export": self.export.to_dict()}),
        }

    def dumps(self) -> str:
        """Canonical JSON: indent 2, sorted keys, no NaN."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def loads(cls, text: str) -> "Manifest":
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{MANIFEST_NAME} is not valid JSON: {e}") from e
        return cls.from_dict(data)

    def component(self, name: str) -> Component:
        if name not in self.components:
            raise ArtifactError(
                f"no component {name!r} in these artifacts; available: {', '.join(sorted(self.components)) or 'none'}"
            )
        return self.components[name]

    @property
    def has_voice(self) -> bool:
        """Whether these artifacts can make a voice from reference audio (speaker_encoder and tokenizer)."""
        return all(n in self.components for n in VOICE_COMPONENTS)

    def check_validated(self) -> None:
        """Refuse artifacts whose own validation record says a graph or engine missed its tolerances:
        running them would produce audio known to be wrong."""
        for where, passed, failures in self._validation_records():
            if not passed:
                raise ManifestError(f"{where}.validation.passed is false: {'; '.join(failures)}; "
                                    "these artifacts did not validate: re-export them (engines: rebuild)")

    def _validation_records(self):
        for name, c in self.components.items():
            yield f"components.{name}", c.validation.passed, c.validation.failures()
        for i, e in enumerate(self.engines):
            yield f"engines[{i}] ({e.graph} {e.bucket})", not e.failures(), e.failures()

    def files(self) -> list:
        """(key path, relative file, sha256) of every component and engine file."""
        out = [(f"components.{n}", c.file, c.sha256) for n, c in self.components.items()]
        out += [(f"components.{n}.selftest", c.selftest.file, c.selftest.sha256)
                for n, c in self.components.items() if c.selftest is not None]
        out += [(f"engines[{i}]", e.file, e.sha256) for i, e in enumerate(self.engines)]
        return out

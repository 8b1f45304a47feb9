"""The artifact manifest: written by the export side, read strictly here.

An artifact folder holds manifest.json plus the files it names. The runtime
refuses what it does not understand: another schema_version, unknown or missing
keys, wrong types, audio constants other than its own, and (with verify=True)
files that are missing or whose sha256 differs from the record.

Every section is a frozen dataclass with a strict `from_dict(data, path)` and a
`to_dict()`; `path` is the key path used in error messages, e.g.
`components.encoder.inputs[0].dtype`.

Modules, by concern: `fields` (the strict JSON readers), `sections` (tool, versions,
checkpoint, audio, defaults, tuning, buckets, the
export record), `graphs` (components with their
validation records, TensorRT engines), `document` (the Manifest and its schema
version), `files` (hashes, atomic write, checked load).
"""

from .document import MANIFEST_NAME, SCHEMA_VERSION, SUPPORTED_SCHEMA_VERSIONS, Manifest
from .files import load_manifest, read_verified_file, sha256_file, verify_file, verify_files, write_manifest
from .graphs import (COMPONENT_FORMATS, COMPONENT_PRECISIONS, TENSOR_DTYPES, VOICE_COMPONENTS, Component, Engine, SelfTest, TensorSpec, Tolerance,
                     Validation, ValidationCase)
from .sections import (TOOL_NAME, VOCODER_KINDS, Audio, Checkpoint, Defaults, ExportRecord, GraphBuild, Tool, Tuning,
                       Versions, VocoderSource)

__all__ = ["Manifest", "SCHEMA_VERSION", "SUPPORTED_SCHEMA_VERSIONS", "MANIFEST_NAME", "TOOL_NAME",
           "COMPONENT_FORMATS", "COMPONENT_PRECISIONS", "TENSOR_DTYPES", "VOICE_COMPONENTS",
           "Tool", "Versions", "Checkpoint", "Audio", "Defaults", "Tuning", "VocoderSource", "VOCODER_KINDS",
           "ExportRecord", "GraphBuild",
           "TensorSpec", "ValidationCase", "Tolerance", "Validation", "Component", "Engine", "SelfTest",
           "load_manifest", "write_manifest", "verify_files", "verify_file", "read_verified_file", "sha256_file"]

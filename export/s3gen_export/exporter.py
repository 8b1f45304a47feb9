"""The export pipeline: checkpoint -> prepared model -> one ONNX graph per spec -> validation ->
(optional int8) -> manifest. Each stage is a function; the CLI strings them together."""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from s3gen_runtime import __version__ as runtime_version
from s3gen_runtime.buckets import DEFAULT_BUCKETS, make_buckets
from s3gen_runtime.manifest import (MANIFEST_NAME, SCHEMA_VERSION, Audio, Defaults, Manifest, VocoderSource, sha256_file,
                                    write_manifest)

from .checkpoint import file_sha256
from .components import specs_for_variant
from .graphs import ExportedGraph, ExportError
from .model.s3gen import S3Gen, load_s3gen
from .onnx_export import export_component
from .transforms import prepare_for_export
from .validate import validate_component
from .vocos_export import load_vocoder, vocos_spec

Progress = Callable[[str], None]


@dataclass
class ExportResult:
    folder: Path
    variant: str
    graphs: list[ExportedGraph] = field(default_factory=list)
    manifest: Manifest | None = None

    @property
    def passed(self) -> bool:
        return all(g.report is not None and g.report.passed for g in self.graphs)


def check_output_folder(out: Path, force: bool) -> None:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"output {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"output folder {out} is not empty; pass --force to overwrite it")
    out.mkdir(parents=True, exist_ok=True)


def export_graphs(model: S3Gen, out: Path, checkpoint_sha: str, progress: Progress = print,
                  specs=None) -> list[ExportedGraph]:
    graphs = []
    specs = specs or specs_for_variant(model.variant, voice=model.has_voice)
    for i, spec in enumerate(specs):
        start = time.perf_counter()
        progress(f"[{i + 1}/{len(specs)}] exporting {spec.name} ({spec.description})")
        path = export_component(model, spec, Path(out) / f"{spec.name}.onnx",
                                metadata={"variant": model.variant, "checkpoint_sha256": checkpoint_sha,
                                          "schema_version": str(SCHEMA_VERSION), "precision": "fp32"})
        progress(f"      {path.name}: {path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - start:.1f} s")
        graphs.append(ExportedGraph(spec, path))
    return graphs


def validate_graphs(model: S3Gen, graphs: list[ExportedGraph], progress: Progress = print) -> None:
    for g in graphs:
        if g.precision != "fp32":
            continue   # quantized graphs are validated against fp32 by quantize.py
        start = time.perf_counter()
        g.report = validate_component(model, g.spec, g.path, progress=progress)
        progress(g.report.table() + f"\n  ({time.perf_counter() - start:.1f} s)")


def library_versions() -> dict:
    import onnx
    import onnxruntime
    import torch
    return {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "tensorrt": None}


def component_record(out: Path, g: ExportedGraph) -> dict:
    return {"file": g.path.relative_to(out).as_posix(), "sha256": sha256_file(g.path), "format": "onnx",
            "precision": g.precision, "opset": g.spec.opset, "spec_hash": g.spec.spec_hash(),
            "inputs": [t.to_manifest() for t in g.spec.inputs], "outputs": [t.to_manifest() for t in g.spec.outputs],
            "validation": g.report.to_manifest(), "selftest": selftest_record(out, g.selftest)}


def selftest_record(out: Path, selftest: dict | None) -> dict | None:
    if selftest is None:
        return None
    return {**selftest, "sha256": sha256_file(Path(out) / selftest["file"])}


def build_manifest(out: Path, variant: str, checkpoint: Path, checkpoint_sha: str, graphs: list[ExportedGraph],
                   buckets=DEFAULT_BUCKETS, vocoder: dict | None = None) -> Manifest:
    data = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "s3gen-aot", "version": runtime_version},
        "versions": library_versions(),
        "checkpoint": {"file": Path(checkpoint).name, "sha256": checkpoint_sha, "variant": variant},
        "audio": Audio.current().to_dict(),
        "defaults": Defaults.upstream(variant).to_dict(),
        "buckets": [{"name": b.name, "mel_frames": b.mel_frames} for b in make_buckets(buckets)],
        "components": {g.name: component_record(Path(out), g) for g in graphs},
        "engines": [],
        "tuning": None,
        "vocoder": vocoder or VocoderSource.hift().to_dict(),
    }
    return Manifest.from_dict(data)


def export_checkpoint(checkpoint: Path, out: Path, *, force: bool = False, int8: bool = False,
                      buckets=DEFAULT_BUCKETS, progress: Progress = print, vocos: Path | None = None) -> ExportResult:
    """Export every graph of the checkpoint's variant into `out`, validate them, write the manifest.
    With `vocos` (a Vocos folder), that model is the `vocoder` graph instead of the checkpoint's HiFT.

    Raises VocosMismatch before anything is written if the Vocos model was trained on other features;
    ExportError (after writing the graphs, without a manifest) if any graph misses its tolerances."""
    checkpoint, out = Path(checkpoint), Path(out)
    make_buckets(buckets)   # bad bucket tables fail before minutes of export
    vocoder = load_vocoder(vocos, progress) if vocos is not None else None
    check_output_folder(out, force)
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    progress(f"loading {checkpoint}")
    checkpoint_sha = file_sha256(checkpoint)
    model = prepare_for_export(load_s3gen(checkpoint))
    progress(f"variant {model.variant}; checkpoint sha256 {checkpoint_sha[:12]}...")
    if not model.has_voice:
        progress("no speaker_encoder.*/tokenizer.* in the checkpoint: no voice graphs (speaker_encoder, tokenizer)")
    specs = specs_for_variant(model.variant, voice=model.has_voice)
    if vocoder is not None:
        specs = tuple(vocos_spec(vocoder.model) if s.name == "vocoder" else s for s in specs)
    result = ExportResult(out, model.variant, export_graphs(model, out, checkpoint_sha, progress, specs))
    validate_graphs(model, result.graphs, progress)
    if int8:
        from .quantize import quantize_graphs
        result.graphs += quantize_graphs(model, result.graphs, out, progress)
    failed = [g.name for g in result.graphs if not g.report.passed]
    if failed:
        raise ExportError(f"validation failed for {', '.join(failed)}: see the error tables above; no manifest written")
    result.manifest = build_manifest(out, model.variant, checkpoint, checkpoint_sha, result.graphs, buckets,
                                     vocoder.record if vocoder is not None else None)
    write_manifest(out, result.manifest)
    progress(f"wrote {out / MANIFEST_NAME}")
    return result

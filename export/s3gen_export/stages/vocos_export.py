"""A Vocos model as the artifacts' `vocoder` graph: in a full export (exporter, `--vocoder vocos:DIR`) or
swapped into an existing artifact folder (`replace_vocoder`: one small graph instead of minutes of export)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from s3gen_runtime.manifest import load_manifest, write_manifest

from ..components.vocos_vocoder import vocos_spec
from .graphs import ExportedGraph, ExportError, component_record
from .onnx_export import export_component
from .validate import validate_component
from ..model.vocos_load import LoadedVocos, load_vocos

Progress = Callable[[str], None]


def parse_vocoder_option(value: str) -> Path | None:
    """--vocoder: 'hift' (the checkpoint's own) -> None; 'vocos:DIR' -> DIR."""
    if value == "hift":
        return None
    if value.startswith("vocos:") and value[len("vocos:"):]:
        return Path(value[len("vocos:"):])
    raise ValueError(f"--vocoder must be 'hift' or 'vocos:DIR' (a folder with config.yaml and pytorch_model.bin), "
                     f"got {value!r}")


def load_vocoder(folder: Path, progress: Progress = print) -> LoadedVocos:
    """Gate, then load (VocosMismatch names every setting that differs from S3Gen's mel)."""
    loaded = load_vocos(folder)
    progress(f"vocoder: Vocos from {folder} ({loaded.record['parameters'] / 1e6:.1f} M parameters, "
             f"config sha256 {loaded.record['config_sha256'][:12]}...): features match S3Gen's mel")
    return loaded


def export_vocos_graph(loaded: LoadedVocos, path: Path, metadata: dict, progress: Progress = print) -> ExportedGraph:
    """Export and validate the Vocos `vocoder` graph (against the vocos package's eager decode)."""
    spec = vocos_spec(loaded.model)
    start = time.perf_counter()
    Path(path).unlink(missing_ok=True)   # never write through a link into another artifact folder
    export_component(None, spec, path, metadata=metadata)
    graph = ExportedGraph(spec, Path(path))
    graph.report = validate_component(None, spec, path, progress=progress)
    progress(graph.report.table() + f"\n  ({time.perf_counter() - start:.1f} s)")
    return graph


def replace_vocoder(folder, vocos_folder, progress: Progress = print) -> dict:
    """Make the artifact folder's `vocoder` the Vocos model in `vocos_folder`; returns the new manifest dict.
    TensorRT engines of the old vocoder are dropped (they would be another model)."""
    folder = Path(folder)
    manifest = load_manifest(folder, verify=False)
    loaded = load_vocoder(vocos_folder, progress)
    metadata = {"variant": manifest.checkpoint.variant, "checkpoint_sha256": manifest.checkpoint.sha256,
                "schema_version": str(manifest.schema_version), "precision": "fp32", "vocoder": "vocos"}
    graph = export_vocos_graph(loaded, folder / "vocoder.onnx", metadata, progress)
    if not graph.report.passed:
        raise ExportError("validation failed for the Vocos vocoder: see the error table above; manifest unchanged")
    data = manifest.to_dict()
    data["components"]["vocoder"] = component_record(folder, graph)
    data["engines"] = [e for e in data["engines"] if e["graph"] != "vocoder"]
    data["vocoder"] = loaded.record
    if "export" in data:   # the old vocoder's build record would let a re-export "reuse" the Vocos file as HiFT
        data["export"]["graphs"].pop("vocoder", None)
    write_manifest(folder, type(manifest).from_dict(data))
    return data


__all__ = ["parse_vocoder_option", "load_vocoder", "export_vocos_graph", "replace_vocoder", "vocos_spec"]

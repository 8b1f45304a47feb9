"""The export pipeline: checkpoint -> prepared model -> one job per graph (export, validate against eager,
optional int8), run side by side in worker processes -> manifest. Graphs whose inputs are unchanged since the
folder's last export, or the same as in another export named to reuse from, are reused; everything is written in a staging folder and swapped in at the end
(incremental.py). Each stage is a function; the CLI strings them together."""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx

from s3gen_runtime import __version__ as runtime_version
from s3gen_runtime.backends.base import INT8_SUFFIX
from s3gen_runtime.buckets import DEFAULT_BUCKETS, make_buckets
from s3gen_runtime.manifest import (MANIFEST_NAME, SCHEMA_VERSION, Audio, Defaults, ExportRecord, GraphBuild, Manifest,
                                    VocoderSource, sha256_file, write_manifest)

from .model.checkpoint import file_sha256
from .components import ComponentSpec, specs_for_variant
from .graph_jobs import GraphJob, default_jobs, run_jobs
from .stages.graphs import ExportedGraph, ExportError, component_record
from .stages.onnx_export import set_metadata
from .incremental import (carry_over, export_context, graph_key, library_versions as _library_versions, link_into,
                          previous_manifest, reusable, staging_folder, swap_in, weights_hash)
from .model.s3gen import S3Gen, load_s3gen
from .stages.quantize import QUANTIZABLE
from .rewrites.transforms import prepare_for_export
from .stages.vocos_export import load_vocoder, vocos_spec

Progress = Callable[[str], None]
# The order jobs start in: longest first, so the last graph to finish is a short one (seconds measured on
# 2 cores: bench section i, export_time.json).
JOB_ORDER = ("encoder", "estimator_cfg", "estimator", "speaker_encoder", "vocoder", "tokenizer")


@dataclass
class ExportResult:
    folder: Path
    variant: str
    graphs: list[ExportedGraph] = field(default_factory=list)
    manifest: Manifest | None = None
    reused: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.report is not None and g.report.passed for g in self.graphs)


def check_output_folder(out: Path, force: bool) -> None:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"output {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"output folder {out} is not empty and holds no valid artifacts to re-export into; "
                          "pass --force to overwrite it")
    out.mkdir(parents=True, exist_ok=True)


def library_versions() -> dict:
    """The manifest's `versions` record."""
    versions = _library_versions()
    return {**{k: versions[k] for k in ("python", "torch", "onnx", "onnxruntime")}, "tensorrt": None}


def graph_keys(model: S3Gen, specs: tuple[ComponentSpec, ...], int8: bool) -> dict[str, str]:
    """name -> key for every graph file the export makes (fp32, and int8 copies when asked)."""
    context = export_context()
    keys = {}
    for spec in specs:
        source = None if spec.build_reference is not None else model
        weights = weights_hash(spec.build_module(source))
        keys[spec.name] = graph_key(weights, spec.spec_hash(), "fp32", context)
        if int8 and spec.name in QUANTIZABLE and not spec.fp32_only:
            keys[spec.name + INT8_SUFFIX] = graph_key(weights, spec.spec_hash(), "int8", context)
    return keys


def build_manifest(out: Path, variant: str, checkpoint: Path, checkpoint_sha: str, components: dict,
                   buckets=DEFAULT_BUCKETS, vocoder: dict | None = None, export: ExportRecord | None = None) -> Manifest:
    """`components`: graph name -> its manifest record (component_record)."""
    data = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "s3gen-aot", "version": runtime_version},
        "versions": library_versions(),
        "checkpoint": {"file": Path(checkpoint).name, "sha256": checkpoint_sha, "variant": variant},
        "audio": Audio.current().to_dict(),
        "defaults": Defaults.upstream(variant).to_dict(),
        "buckets": [{"name": b.name, "mel_frames": b.mel_frames} for b in make_buckets(buckets)],
        "components": components,
        "engines": [],
        "tuning": None,
        "vocoder": vocoder or VocoderSource.hift().to_dict(),
        **({"export": export.to_dict()} if export is not None else {}),
    }
    return Manifest.from_dict(data)


def reuse_source(folder: Path) -> Manifest:
    """The manifest of a folder named to reuse graphs from; one that is no complete, untampered export is
    refused by name rather than silently exported around."""
    manifest = previous_manifest(folder)
    if manifest is None or manifest.export is None:
        raise ExportError(f"--reuse-from {folder}: not a complete s3gen-aot export (no manifest with graph keys, "
                          "or a file whose sha256 does not match it)")
    return manifest


def pick_reused(sources: list[tuple[Path, Manifest]], keys: dict[str, str]) -> dict[str, tuple[Path, Manifest]]:
    """graph name -> the first source folder holding that graph under the same key (same weights, spec,
    precision, exporter and library versions: the graph the export would write)."""
    picked = {}
    for name, key in keys.items():
        for folder, manifest in sources:
            if reusable(manifest, name, key):
                picked[name] = (folder, manifest)
                break
    return picked


def reuse_files(reused: dict[str, tuple[Path, Manifest]], staging: Path, variant: str,
                checkpoint_sha: str) -> dict[str, dict]:
    """Bring the reused graphs (and their self-test probes) into the staging folder; returns their manifest
    records. A graph of this checkpoint's export is linked. One from another checkpoint's export (same key:
    the same weights and spec) is copied with its variant and checkpoint stamped anew, since the runtime
    refuses a graph whose metadata names another checkpoint than the manifest."""
    records = {}
    for name, (src, manifest) in reused.items():
        component = manifest.components[name]
        record = component.to_dict()
        if (manifest.checkpoint.sha256, manifest.checkpoint.variant) == (checkpoint_sha, variant):
            link_into(src / component.file, staging / component.file)
        else:
            record["sha256"] = restamped_copy(src / component.file, staging / component.file,
                                              {"variant": variant, "checkpoint_sha256": checkpoint_sha})
        if component.selftest is not None:
            link_into(src / component.selftest.file, staging / component.selftest.file)
        records[name] = record
    return records


def restamped_copy(src: Path, dst: Path, metadata: dict) -> str:
    """`src` written to `dst` with its s3gen.* metadata updated; returns the new file's sha256."""
    proto = onnx.load(str(src))
    set_metadata(proto, metadata)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(dst))
    return sha256_file(dst)


def plan_jobs(checkpoint: Path, specs, keys: dict, reused: set, staging: Path, metadata: dict, int8: bool,
              vocos: Path | None) -> list[GraphJob]:
    """One job per graph that is not reused whole; a reused fp32 graph whose int8 copy is new only quantizes."""
    jobs = []
    for spec in sorted(specs, key=lambda s: JOB_ORDER.index(s.name) if s.name in JOB_ORDER else len(JOB_ORDER)):
        int8_name = spec.name + INT8_SUFFIX
        wants_int8 = int8_name in keys and int8_name not in reused
        if spec.name in reused and not wants_int8:
            continue
        jobs.append(GraphJob(checkpoint, spec.name, staging, metadata, int8=wants_int8,
                             vocos=vocos if spec.name == "vocoder" else None, fp32_ready=spec.name in reused))
    return jobs


def export_checkpoint(checkpoint: Path, out: Path, *, force: bool = False, int8: bool = False,
                      buckets=DEFAULT_BUCKETS, progress: Progress = print, vocos: Path | None = None,
                      jobs: int | None = None, reuse_from: tuple[Path, ...] = ()) -> ExportResult:
    """Export every graph of the checkpoint's variant into `out`, validate them, write the manifest.
    With `vocos` (a Vocos folder), that model is the `vocoder` graph instead of the checkpoint's HiFT.

    `out` may hold an earlier export: graphs whose key is unchanged are reused (`force`: rebuild those).
    `reuse_from`: other export folders, searched after `out` in the order given, whose graphs are linked in
    when their key is the same, e.g. the speaker encoder, tokenizer and HiFT of a standard export when
    exporting the meanflow checkpoint that carries the same weights for them.
    `jobs`: worker processes (default: one per core, as memory allows). `out` changes in one step at the end;
    on any failure it is left as it was.

    Raises VocosMismatch before anything is written if the Vocos model was trained on other features;
    ExportError (the graphs kept in a staging folder beside `out`, which is unchanged) if any graph misses
    its tolerances."""
    started = time.perf_counter()
    checkpoint, out = Path(checkpoint), Path(out)
    make_buckets(buckets)   # bad bucket tables fail before minutes of export
    vocoder = load_vocoder(vocos, progress) if vocos is not None else None
    others = [(Path(f), reuse_source(Path(f))) for f in reuse_from]
    previous = None if force else previous_manifest(out)
    check_output_folder(out, force or previous is not None)
    sources = ([(out, previous)] if previous is not None else []) + others
    progress(f"loading {checkpoint}")
    checkpoint_sha = file_sha256(checkpoint)
    model = prepare_for_export(load_s3gen(checkpoint))
    progress(f"variant {model.variant}; checkpoint sha256 {checkpoint_sha[:12]}...")
    if not model.has_voice:
        progress("no speaker_encoder.*/tokenizer.* in the checkpoint: no voice graphs (speaker_encoder, tokenizer)")
    specs = specs_for_variant(model.variant, voice=model.has_voice)
    if vocoder is not None:
        specs = tuple(vocos_spec(vocoder.model) if s.name == "vocoder" else s for s in specs)
    keys = graph_keys(model, specs, int8)
    origin = pick_reused(sources, keys)
    reused = set(origin)
    for folder in dict.fromkeys(f for f, _ in origin.values()):
        names = ", ".join(n for n, (f, _) in origin.items() if f == folder)
        where = "" if folder == out else f" of {folder}"
        progress(f"reusing {names}{where} (same weights, spec, exporter and versions)")
    staging = staging_folder(out)
    try:
        reused_records = reuse_files(origin, staging, model.variant, checkpoint_sha)
        metadata = {"variant": model.variant, "checkpoint_sha256": checkpoint_sha,
                    "schema_version": str(SCHEMA_VERSION), "precision": "fp32"}
        todo = plan_jobs(checkpoint, specs, keys, reused, staging, metadata, int8, vocos)
        workers = min(jobs or default_jobs(len(todo)), max(1, len(todo)))
        if todo:
            progress(f"exporting {', '.join(j.spec_name for j in todo)} with {workers} worker(s)")
        built = run_jobs(todo, workers, progress, model=model)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    by_spec = {s.name: s for s in specs}
    result = ExportResult(out, model.variant, reused=sorted(reused))
    result.graphs = [ExportedGraph(by_spec[b.spec_name], staging / b.file, precision=b.precision, report=b.report,
                                   name=b.name, selftest=b.selftest) for b in built]
    failed = [g.name for g in result.graphs if not g.report.passed]
    if failed:
        raise ExportError(f"validation failed for {', '.join(failed)}: see the error tables above; {out} is "
                          f"unchanged and the graphs are in {staging}")
    components = {**reused_records,
                  **{g.name: component_record(staging, g) for g in result.graphs}}
    builds = {**{n: GraphBuild(keys[n], True, m.export.graphs[n].export_s, m.export.graphs[n].validate_s)
                 for n, (_, m) in origin.items()},
              **{b.name: GraphBuild(keys[b.name], False, round(b.export_s, 2), round(b.validate_s, 2)) for b in built}}
    record = ExportRecord(max(workers, 1) if todo else 1, round(time.perf_counter() - started, 2), builds)
    result.manifest = build_manifest(out, model.variant, checkpoint, checkpoint_sha, components, buckets,
                                     vocoder.record if vocoder is not None else None, record)
    carried = carry_over(out, staging)
    if carried:
        progress(f"kept {len(carried)} other file(s) of {out}: {', '.join(carried[:5])}{' ...' if len(carried) > 5 else ''}")
    write_manifest(staging, result.manifest)
    swap_in(staging, out)
    for g in result.graphs:
        g.path = out / g.path.relative_to(staging)
    progress(f"wrote {out / MANIFEST_NAME} ({len(built)} graph file(s) made, {len(reused)} reused) "
             f"in {time.perf_counter() - started:.1f} s")
    return result

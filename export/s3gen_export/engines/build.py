"""The TensorRT build (GPU): one engine per graph and bucket, validated and recorded in the manifest.

`build_engines` builds every engine with one optimization profile, reusing a timing cache file in
the artifact folder across builds, validates each (see `validation`) and records the ones that
pass in the manifest's `engines` list (with `versions.tensorrt`). TensorRT is imported lazily.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable

from s3gen_runtime.backends.tensorrt.compat import TensorRTUnavailableError, import_tensorrt, sm_tag, trt_logger
from s3gen_runtime.errors import InputError, S3GenError
from s3gen_runtime.manifest import Engine, Manifest, load_manifest, sha256_file, write_manifest

from .errors import EngineBuildError
from .mixed_precision import to_mixed_precision
from .precision import apply_fp32_layers, fp32_layer_names, name_nodes
from .profiles import (
    buildable_graphs,
    check_batches,
    check_precision,
    engine_file_name,
    plan_profiles,
    profile_to_json,
    profiles_frames_low,
    resolve_buckets,
)
from .validation import ort_reference, validate_built, validation_summary
from ..rewrites.fused_attention import decompose_multi_head_attention

Progress = Callable[[str], None]
ENGINE_DIR = "engines"


def timing_cache_path(folder: Path, sm: str, trt_version: str) -> Path:
    return Path(folder) / ENGINE_DIR / f"timing.{sm_tag(sm)}.trt{trt_version}.cache"


def _write_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _weak_typing(trt) -> bool:
    return all(hasattr(trt.BuilderFlag, f) for f in ("FP16", "BF16", "OBEY_PRECISION_CONSTRAINTS"))


def build_serialized_engine(trt, builder, model_bytes: bytes, profiles: dict, precision: str, *,
                            strongly_typed: bool, fp32_nodes=(), node_names=(), timing_cache=None,
                            workspace_bytes: int | None = None) -> tuple[bytes, int]:
    """Parse one ONNX graph and build an engine with one optimization profile.

    Returns (engine bytes, number of layers pinned to fp32). With strongly_typed the graph's own
    types decide (convert it with to_mixed_precision first); otherwise fp16/bf16 are enabled as
    builder flags and the fp32 nodes are pinned with per-layer precision constraints.
    """
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger(trt))
    if not parser.parse(model_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError("TensorRT could not parse the graph: " + "; ".join(errors[:5]))
    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)   # fp32 layers stay true fp32 (as in the ORT reference)
    pinned = 0
    if precision != "fp32" and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = apply_fp32_layers(network, fp32_nodes, node_names, trt)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if timing_cache is not None:
        config.set_timing_cache(timing_cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError("TensorRT failed to build the engine (see the TensorRT log above)")
    return bytes(serialized), pinned


def _load_timing_cache(config, path: Path, progress: Progress):
    """The timing cache at `path` (a new one when absent or unreadable, e.g. from another TensorRT)."""
    data = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(data)
    except Exception:
        cache = None
    if cache is None and data:
        progress(f"timing cache {path} is unreadable (another TensorRT version?); starting a new one")
        cache = config.create_timing_cache(b"")
    elif data:
        progress(f"reusing timing cache {path}")
    return cache


def _save_timing_cache(cache, path: Path) -> None:
    if cache is not None:
        _write_atomic(path, bytes(cache.serialize()))


def update_manifest(manifest: Manifest, records: list[dict], trt_version: str | None) -> Manifest:
    """The manifest with `records` added (replacing engines of the same file) and versions.tensorrt set."""
    new = [Engine.from_dict(r, f"engines[{i}]") for i, r in enumerate(records)]
    files = {e.file for e in new}
    engines = tuple(e for e in manifest.engines if e.file not in files) + tuple(new)
    versions = manifest.versions if trt_version is None else dataclasses.replace(manifest.versions, tensorrt=trt_version)
    return dataclasses.replace(manifest, engines=engines, versions=versions)


def load_for_tensorrt(onnx_path):
    """The graph TensorRT is given: the ORT graph with its fused attention back in standard ops
    (TensorRT's parser has no contrib ops; it fuses MatMul-Softmax-MatMul itself)."""
    import onnx

    proto, _ = decompose_multi_head_attention(onnx.load(str(onnx_path)))
    return proto


def build_engines(folder, precision: str, buckets=None, min_batch: int = 1, opt_batch: int = 1, max_batch: int = 4,
                  timing_cache=None, progress: Progress = print, *, strongly_typed: bool | None = None,
                  graphs=None, validate: bool = True, tolerances: dict | None = None,
                  workspace_gb: float | None = None, device: int = 0, seed: int = 0) -> list[Engine]:
    """Build, validate and record one TensorRT engine per graph and bucket of the artifact folder.

    precision: fp32 | fp16 | bf16. buckets: None (all) or names/sizes from the manifest's table.
    timing_cache: a path (default: engines/timing.<sm>.trt<version>.cache in the folder), loaded if
    present and saved after every engine. strongly_typed: None picks per-layer fp32 constraints
    where TensorRT still has weak typing (10.x) and a mixed-precision strongly typed graph where it
    does not (>= 11); True forces the latter. Engines that miss their tolerances are deleted and
    the build raises EngineBuildError after recording the ones that passed.
    """
    folder = Path(folder)
    check_precision(precision)
    min_batch, opt_batch, max_batch = check_batches(min_batch, opt_batch, max_batch)
    if strongly_typed is not None and not isinstance(strongly_typed, bool):
        raise InputError(f"strongly_typed must be True, False or None, got {strongly_typed!r}")
    trt = import_tensorrt()   # before anything slow: a missing install is the commonest failure
    from s3gen_runtime.backends import gpu
    try:
        gpu.require_device(device)
    except gpu.CudaError as e:
        raise TensorRTUnavailableError(f"cannot build TensorRT engines: {e}") from e
    manifest = load_manifest(folder, verify=True)
    pairs = resolve_buckets(manifest, buckets)
    names = buildable_graphs(manifest, graphs)
    if not names:
        raise EngineBuildError(f"no fp32 ONNX graphs in {folder} to build engines from")
    gpu.set_device(device)
    cc, gpu_name, trt_version = gpu.compute_capability(device), gpu.device_name(device), trt.__version__
    if strongly_typed is None:
        strongly_typed = precision != "fp32" and not _weak_typing(trt)
    if precision != "fp32" and not strongly_typed and not _weak_typing(trt):
        raise EngineBuildError(f"TensorRT {trt_version} has no weakly typed fp16/bf16 builds; "
                               "use --strongly-typed")
    progress(f"TensorRT {trt_version} on {gpu_name} (compute capability {cc}); {precision}"
             f"{' strongly typed' if strongly_typed and precision != 'fp32' else ''}; "
             f"batch {min_batch}..{max_batch} (opt {opt_batch})")

    builder = trt.Builder(trt_logger(trt))
    cache_path = Path(timing_cache) if timing_cache is not None else timing_cache_path(folder, cc, trt_version)
    cache_config = builder.create_builder_config()   # owns the timing cache shared by every build
    cache = _load_timing_cache(cache_config, cache_path, progress)
    workspace = int(workspace_gb * (1 << 30)) if workspace_gb else None

    total = len(names) * len(pairs)
    step, passed, failed = 0, [], []
    for graph in names:
        component = manifest.component(graph)
        onnx_path = folder / component.file
        proto = load_for_tensorrt(onnx_path)
        name_nodes(proto)
        keep = fp32_layer_names(proto) if precision != "fp32" else []
        node_names = [n.name for n in proto.graph.node]
        if precision != "fp32" and strongly_typed:
            model_bytes = to_mixed_precision(proto, precision, keep).SerializeToString()
        else:
            model_bytes = proto.SerializeToString()
        del proto
        reference = ort_reference(onnx_path, [s.name for s in component.outputs]) if validate else None
        for bucket, prev in pairs:
            step += 1
            label = f"[{step}/{total}] {graph} {bucket.name} {precision}"
            start = time.perf_counter()
            profiles = plan_profiles(component, bucket, prev, min_batch, opt_batch, max_batch)
            try:
                data, pinned = build_serialized_engine(
                    trt, builder, model_bytes, profiles, precision, strongly_typed=strongly_typed,
                    fp32_nodes=keep, node_names=node_names, timing_cache=cache, workspace_bytes=workspace)
            except EngineBuildError as e:
                failed.append(f"{graph} {bucket.name}: {e}")
                progress(f"{label} ... FAILED: {e}")
                continue
            _save_timing_cache(cache, cache_path)
            rel = f"{ENGINE_DIR}/{engine_file_name(graph, bucket, precision, cc)}"
            staging = f"{ENGINE_DIR}/.building.{Path(rel).name}"   # the recorded engine stays until this one passes
            _write_atomic(folder / staging, data)
            del data
            build_seconds = time.perf_counter() - start
            record = {
                "file": staging, "sha256": sha256_file(folder / staging), "graph": graph, "bucket": bucket.name,
                "precision": precision, "tensorrt": trt_version, "gpu": gpu_name, "compute_capability": cc,
                "min_batch": min_batch, "max_batch": max_batch,
                "build_options": {
                    "profile": profile_to_json(profiles), "opt_batch": opt_batch,
                    "frames_range": [profiles_frames_low(bucket, prev), bucket.mel_frames],
                    "prev_bucket": prev.name if prev is not None else None,
                    "onnx_sha256": component.sha256, "spec_hash": component.spec_hash,
                    "strongly_typed": bool(strongly_typed and precision != "fp32"),
                    "fp32_layers": len(keep), "fp32_trt_layers_pinned": pinned, "tf32": False,
                    "workspace_bytes": workspace, "build_seconds": round(build_seconds, 2),
                },
                "validation": None,
            }
            summary = "not validated"
            if validate:
                try:
                    record["validation"] = validate_built(folder, record, component, bucket, prev, precision,
                                                          (min_batch, opt_batch, max_batch), reference, tolerances,
                                                          seed, device)
                except S3GenError as e:   # the engine would not even load: a failure like any other
                    record["validation"] = {"passed": False, "cases": [], "error": str(e)}
                record["validation"]["reference"] = "onnxruntime fp32 (" + ", ".join(reference.providers) + ")"
                summary = validation_summary(record["validation"])
            progress(f"{label} ... {time.perf_counter() - start:.1f} s ({summary})")
            if validate and not record["validation"]["passed"]:
                (folder / staging).unlink(missing_ok=True)
                failed.append(f"{graph} {bucket.name}: {summary}")
                continue
            os.replace(folder / staging, folder / rel)
            record["file"] = rel
            passed.append(record)
            # recorded at once: an interrupted build keeps every engine that passed
            manifest = update_manifest(load_manifest(folder, verify=False), [record], trt_version)
            write_manifest(folder, manifest)

    if passed:
        progress(f"recorded {len(passed)} engine(s) in {folder / 'manifest.json'}")
    if failed:
        raise EngineBuildError(f"{len(failed)} of {total} engine(s) failed (not recorded): " + "; ".join(failed))
    return [e for e in manifest.engines if e.file in {r['file'] for r in passed}]

"""TensorRT engines: one per graph and shape bucket, built, validated and recorded in the manifest.

Stages (each a function; `s3gen-aot build-engines` strings them together), one module each:

1. plan (pure, `profiles`): `plan_profiles` gives every dynamic axis a range inside one bucket
   only (min just above the previous bucket, opt = max = the bucket), so each engine's profile
   stays tight; `engine_file_name` names the file after graph, bucket, precision and GPU architecture.
2. precision policy (pure, `precision` and `mixed_precision`): `fp32_layer_names` picks the ONNX
   nodes that stay fp32 in an fp16/bf16 engine: LayerNormalization and Softmax (and decomposed
   norms), the time embedding, the sine source and the STFT/ISTFT path of the vocoder. It is
   applied either as per-layer precision constraints (TensorRT 10 "weakly typed" builds) or, for
   strongly typed networks (`--strongly-typed`, and always on TensorRT >= 11, which removed weak
   typing), by rewriting the graph to fp16/bf16 with fp32 islands and explicit Casts
   (`to_mixed_precision`) before TensorRT parses it.
3. build (GPU, `build`): `build_engines` builds every engine with one optimization profile,
   reusing a timing cache file in the artifact folder across builds.
4. validate (GPU, `validation`): `validate_engine` runs the engine through the runtime's
   TensorRTRunner (so the record, sha256 and compatibility checks run too) against ONNX Runtime
   fp32 on random inputs at the bucket's min, opt and max shapes, with per-output tolerances per
   precision. A miss fails the build.
5. record (`build`): passing engines go into the manifest's `engines` list (with `versions.tensorrt`).

Only steps 3 and 4 need TensorRT and a GPU; both are imported lazily.
"""
from __future__ import annotations

from .build import (
    build_engines,
    build_serialized_engine,
    timing_cache_path,
    update_manifest,
)
from .errors import EngineBuildError
from .mixed_precision import to_mixed_precision
from .precision import (
    apply_fp32_layers,
    fp32_layer_names,
    fp32_node_indices,
    match_layer_to_nodes,
    module_path,
    name_nodes,
)
from .profiles import (
    axis_ranges,
    buildable_graphs,
    check_batches,
    check_precision,
    engine_file_name,
    plan_profiles,
    profile_to_json,
    resolve_buckets,
    validation_shapes,
)
from .validation import (
    compare_outputs,
    engine_tolerances,
    ort_reference,
    random_feeds,
    validate_engine,
    validation_summary,
)

__all__ = ["EngineBuildError", "check_precision", "check_batches", "axis_ranges", "plan_profiles", "profile_to_json",
           "validation_shapes", "engine_file_name", "module_path", "fp32_node_indices", "fp32_layer_names",
           "name_nodes", "match_layer_to_nodes", "apply_fp32_layers", "to_mixed_precision", "engine_tolerances",
           "random_feeds", "compare_outputs", "validate_engine", "validation_summary", "ort_reference",
           "resolve_buckets", "buildable_graphs", "timing_cache_path", "build_serialized_engine", "update_manifest",
           "build_engines"]

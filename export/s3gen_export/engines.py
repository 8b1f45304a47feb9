"""TensorRT engines: one per graph and shape bucket, built, validated and recorded in the manifest.

Stages (each a function; `s3gen-aot build-engines` strings them together):

1. plan (pure): `plan_profiles` gives every dynamic axis a range inside one bucket only (min just
   above the previous bucket, opt = max = the bucket), so each engine's profile stays tight;
   `engine_file_name` names the file after graph, bucket, precision and GPU architecture.
2. precision policy (pure): `fp32_layer_names` picks the ONNX nodes that stay fp32 in an fp16/bf16
   engine: LayerNormalization and Softmax (and decomposed norms), the time embedding, the sine
   source and the STFT/ISTFT path of the vocoder. It is applied either as per-layer precision
   constraints (TensorRT 10 "weakly typed" builds) or, for strongly typed networks (`--strongly-typed`,
   and always on TensorRT >= 11, which removed weak typing), by rewriting the graph to fp16/bf16
   with fp32 islands and explicit Casts (`to_mixed_precision`) before TensorRT parses it.
3. build (GPU): `build_engines` builds every engine with one optimization profile, reusing a
   timing cache file in the artifact folder across builds.
4. validate (GPU): `validate_engine` runs the engine through the runtime's TensorRTRunner (so the
   record, sha256 and compatibility checks run too) against ONNX Runtime fp32 on random inputs at
   the bucket's min, opt and max shapes, with per-output tolerances per precision. A miss fails
   the build.
5. record: passing engines go into the manifest's `engines` list (with `versions.tensorrt`).

Only steps 3 and 4 need TensorRT and a GPU; both are imported lazily.
"""
from __future__ import annotations

import ast
import dataclasses
import os
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from s3gen_runtime.backends.tensorrt import (
    ENGINE_PRECISIONS,
    TensorRTUnavailableError,
    check_engine_compatible,   # noqa: F401  (re-exported: one definition, in the runtime)
    import_tensorrt,
    sm_tag,
)
from s3gen_runtime.buckets import Bucket
from s3gen_runtime.constants import SAMPLES_PER_FRAME, SPEECH_VOCAB_SIZE, TOKEN_MEL_RATIO
from s3gen_runtime.errors import InputError, S3GenError
from s3gen_runtime.manifest import Engine, Manifest, Tolerance, load_manifest, sha256_file, write_manifest

Progress = Callable[[str], None]
ENGINE_DIR = "engines"
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


class EngineBuildError(S3GenError):
    """An engine could not be built, or missed its tolerances (the CLI exits non-zero)."""


# ================================================================ planning (pure)

def check_precision(precision) -> str:
    if precision not in ENGINE_PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(ENGINE_PRECISIONS)}, got {precision!r}")
    return precision


def check_batches(min_batch, opt_batch, max_batch) -> tuple[int, int, int]:
    """Positive integers with min <= opt <= max, or an InputError saying which rule broke."""
    values = []
    for name, v in (("min_batch", min_batch), ("opt_batch", opt_batch), ("max_batch", max_batch)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
        values.append(int(v))
    lo, opt, hi = values
    if not lo <= opt <= hi:
        raise InputError(f"batch sizes must satisfy min_batch <= opt_batch <= max_batch, got "
                         f"{lo} <= {opt} <= {hi}")
    return lo, opt, hi


def _check_buckets(bucket, prev_bucket) -> None:
    if not isinstance(bucket, Bucket):
        raise InputError(f"bucket must be a s3gen_runtime.buckets.Bucket, got {type(bucket).__name__}")
    if prev_bucket is not None:
        if not isinstance(prev_bucket, Bucket):
            raise InputError(f"prev_bucket must be a Bucket or None, got {type(prev_bucket).__name__}")
        if prev_bucket.mel_frames >= bucket.mel_frames:
            raise InputError(f"the previous bucket {prev_bucket.name} ({prev_bucket.mel_frames} frames) must be "
                             f"smaller than {bucket.name} ({bucket.mel_frames} frames)")


def _split_tokens(total: int) -> tuple[int, int]:
    """(prompt, new) tokens adding up to `total` (each >= 1): a typical prompt takes a quarter."""
    total = max(int(total), 2)
    prompt = max(1, total // 4)
    return prompt, total - prompt


def axis_ranges(bucket: Bucket, prev_bucket: Bucket | None, min_batch: int = 1, opt_batch: int = 1,
                max_batch: int = 4) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) of every named axis for one bucket.

    frames / mel_frames: just above the previous bucket .. the bucket (so the buckets' engines tile
    the lengths without overlap); samples = 480 x mel_frames; tokens and prompt_tokens: each
    1 .. the bucket's token capacity (they are padded separately and only their sum is bounded:
    the full capacity for both, opt half of it each); prompt_frames = 2 x prompt_tokens.
    """
    _check_buckets(bucket, prev_bucket)
    b = check_batches(min_batch, opt_batch, max_batch)
    top = bucket.mel_frames
    low = prev_bucket.mel_frames + 1 if prev_bucket is not None else 1
    frames = (low, top, top)
    cap = bucket.tokens
    tokens = (1, max(1, cap // 2), cap)
    return {
        "batch": b,
        "frames": frames,
        "mel_frames": frames,
        "samples": tuple(SAMPLES_PER_FRAME * v for v in frames),
        "tokens": tokens,
        "prompt_tokens": tokens,
        "prompt_frames": tuple(TOKEN_MEL_RATIO * v for v in tokens),
    }


def plan_profiles(component, bucket: Bucket, prev_bucket: Bucket | None, min_batch: int = 1, opt_batch: int = 1,
                  max_batch: int = 4) -> dict[str, tuple[tuple, tuple, tuple]]:
    """input name -> (min_shape, opt_shape, max_shape) for one engine's optimization profile.

    `component` is an export ComponentSpec or the manifest's Component (both have `.inputs` with
    `.name` and `.shape`, strings naming the dynamic axes). Fixed sizes stay fixed.
    """
    ranges = axis_ranges(bucket, prev_bucket, min_batch, opt_batch, max_batch)
    out = {}
    for spec in component.inputs:
        dims = ([], [], [])
        for axis in spec.shape:
            if isinstance(axis, str):
                if axis not in ranges:
                    raise InputError(f"input {spec.name!r}: no profile rule for axis {axis!r} "
                                     f"(known: {', '.join(sorted(ranges))})")
                triple = ranges[axis]
            else:
                triple = (int(axis),) * 3
            for k in range(3):
                dims[k].append(int(triple[k]))
        out[spec.name] = tuple(tuple(d) for d in dims)
    return out


def profile_to_json(profiles: dict) -> dict:
    return {name: {"min": list(lo), "opt": list(opt), "max": list(hi)} for name, (lo, opt, hi) in profiles.items()}


def validation_shapes(component, bucket: Bucket, prev_bucket: Bucket | None, min_batch: int = 1, opt_batch: int = 1,
                      max_batch: int = 4) -> dict[str, dict[str, tuple]]:
    """case ('min', 'opt', 'max') -> input name -> shape: real requests at the bucket's edges.

    Unlike the profile's corners, each case is a shape a request can have: the encoder's prompt
    and new tokens add up to the bucket's capacity (its positional table is bounded), and derived
    axes keep their ratios.
    """
    ranges = axis_ranges(bucket, prev_bucket, min_batch, opt_batch, max_batch)
    cases = {}
    for k, case in enumerate(("min", "opt", "max")):
        frames = ranges["frames"][k]
        prompt, new = _split_tokens(-(-frames // TOKEN_MEL_RATIO))
        axes = {"batch": ranges["batch"][k], "frames": frames, "mel_frames": frames,
                "samples": SAMPLES_PER_FRAME * frames, "tokens": new, "prompt_tokens": prompt,
                "prompt_frames": TOKEN_MEL_RATIO * prompt}
        shapes = {}
        for spec in component.inputs:
            shape = []
            for axis in spec.shape:
                if isinstance(axis, str) and axis not in axes:
                    raise InputError(f"input {spec.name!r}: no validation rule for axis {axis!r}")
                shape.append(axes[axis] if isinstance(axis, str) else int(axis))
            shapes[spec.name] = tuple(shape)
        cases[case] = shapes
    return cases


_NAME_OK = re.compile(r"[A-Za-z0-9_\-]+")


def engine_file_name(graph: str, bucket, precision: str, sm) -> str:
    """'estimator_cfg.mel1024.fp16.sm90.engine': graph, bucket, precision and GPU architecture."""
    bucket_name = bucket.name if isinstance(bucket, Bucket) else bucket
    for what, value in (("graph", graph), ("bucket", bucket_name)):
        if not isinstance(value, str) or not _NAME_OK.fullmatch(value):
            raise InputError(f"{what} name must be letters, digits, '_' or '-', got {value!r}")
    check_precision(precision)
    return f"{graph}.{bucket_name}.{precision}.{sm_tag(sm)}.engine"


# ================================================================ precision policy (pure)

# Ops whose fp16 error (or overflow) breaks flow models: normalisations and softmax.
FP32_OPS = frozenset({"LayerNormalization", "Softmax", "LogSoftmax", "GroupNormalization",
                      "InstanceNormalization", "RMSNormalization", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"})
# A LayerNorm the exporter decomposed: ReduceMean -> Sub -> Pow -> ReduceMean -> Add -> Sqrt -> Div (-> Mul, Add).
NORM_ROOTS = frozenset({"ReduceMean", "ReduceL2", "ReduceSumSquare"})
NORM_CHAIN_OPS = frozenset({"ReduceMean", "Sub", "Pow", "Mul", "Add", "Sqrt", "Reciprocal", "Div", "Clip", "Max"})
NORM_CHAIN_DEPTH = 5
# Torch modules (dotted path components) that stay fp32: the time embedding and its MLPs, the
# vocoder's sine source (phase accumulation), spectral helpers and everything from conv_post on.
FP32_MODULES = ("time_embeddings", "time_mlp", "time_embed_mixer", "spectral", "conv_post", "m_source")
# Graph inputs whose batch-only subgraph is the time embedding (sinusoid, MLPs, per-block projections).
TIME_INPUTS = ("t", "r")
# The vocoder's source path: from the sine source to the first learned layers that consume its STFT.
SOURCE_MODULE = "m_source"
SOURCE_SINK_MODULES = ("source_downs",)
POST_MODULE = "conv_post"

_FLOAT_TYPES = (1, 10, 16, 11)   # TensorProto FLOAT, FLOAT16, BFLOAT16, DOUBLE


def module_path(node) -> str | None:
    """The torch module path the exporter recorded for a node ('decoder.time_mlp.linear_1'), or None.

    torch's ONNX exporter stores a Python-literal list of scopes under metadata_props key
    `pkg.torch.onnx.name_scopes`; the last entry is the op itself, the one before it its module.
    """
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            if isinstance(scopes, (list, tuple)) and len(scopes) >= 2 and isinstance(scopes[-2], str):
                return scopes[-2]
            return None
    return None


def _in_modules(path: str | None, modules: Iterable[str]) -> bool:
    if not path:
        return False
    parts = set(path.split("."))
    return any(m in parts for m in modules)


def _elem_types(graph) -> dict[str, int]:
    types = {}
    for v in list(graph.input) + list(graph.output) + list(graph.value_info):
        if v.type.HasField("tensor_type"):
            types[v.name] = v.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    types[node.output[0]] = a.t.data_type
    return types


def _typed_graph(proto):
    """The graph with element types for every tensor (shape inference where the file lacks them)."""
    graph = proto.graph
    types = _elem_types(graph)
    produced = [o for n in graph.node for o in n.output if o]
    if any(o not in types for o in produced):
        import onnx
        try:
            inferred = onnx.shape_inference.infer_shapes(proto)
            types.update(_elem_types(inferred.graph))
        except Exception:   # partial types are still usable; unknown ones count as non-float
            pass
    return graph, types


def _is_float(types: dict, name: str) -> bool:
    return types.get(name) in _FLOAT_TYPES


def _producers_consumers(graph):
    producer, consumers = {}, defaultdict(list)
    for i, node in enumerate(graph.node):
        for o in node.output:
            if o:
                producer[o] = i
        for inp in node.input:
            if inp:
                consumers[inp].append(i)
    return producer, consumers


def _descendants(graph, start: set[int], consumers) -> set[int]:
    seen, stack = set(start), list(start)
    while stack:
        i = stack.pop()
        for o in graph.node[i].output:
            for j in consumers.get(o, ()):
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
    return seen


def _ancestors(graph, start: set[int], producer) -> set[int]:
    seen, stack = set(start), list(start)
    while stack:
        i = stack.pop()
        for inp in graph.node[i].input:
            j = producer.get(inp)
            if j is not None and j not in seen:
                seen.add(j)
                stack.append(j)
    return seen


def _time_nodes(graph, types, time_inputs) -> set[int]:
    """Nodes computed from the time inputs alone (constants and integer shape arithmetic aside)."""
    graph_inputs = {i.name for i in graph.input}
    timed = {n for n in time_inputs if n in graph_inputs}
    if not timed:
        return set()
    static = {i.name for i in graph.initializer}
    out = set()
    for i, node in enumerate(graph.node):
        inputs = [x for x in node.input if x]
        if all(x in static for x in inputs):
            static.update(o for o in node.output if o)
            continue
        neutral = [x in static or not _is_float(types, x) for x in inputs]
        if any(x in timed for x in inputs) and all(x in timed or n for x, n in zip(inputs, neutral)):
            out.add(i)
            timed.update(o for o in node.output if o)
    return out


def _norm_chain_nodes(graph, consumers) -> set[int]:
    out = set()
    for i, node in enumerate(graph.node):
        if node.op_type not in NORM_ROOTS:
            continue
        out.add(i)
        frontier = [i]
        for _ in range(NORM_CHAIN_DEPTH):
            nxt = []
            for k in frontier:
                for o in graph.node[k].output:
                    for j in consumers.get(o, ()):
                        if graph.node[j].op_type in NORM_CHAIN_OPS and j not in out:
                            out.add(j)
                            nxt.append(j)
            frontier = nxt
    return out


def fp32_node_indices(proto, *, time_inputs=TIME_INPUTS, modules=FP32_MODULES) -> list[int]:
    """Indices of the nodes that stay fp32 (see fp32_layer_names), in graph order."""
    graph, types = _typed_graph(proto)
    producer, consumers = _producers_consumers(graph)
    paths = [module_path(n) for n in graph.node]
    keep = {i for i, n in enumerate(graph.node) if n.op_type in FP32_OPS}
    keep |= _norm_chain_nodes(graph, consumers)
    keep |= {i for i, p in enumerate(paths) if _in_modules(p, modules)}
    keep |= _time_nodes(graph, types, time_inputs)
    post = {i for i, p in enumerate(paths) if _in_modules(p, (POST_MODULE,))}
    if post:   # the spectral head and the ISTFT: everything computed from conv_post's output ...
        after = _descendants(graph, post, consumers)
        keep |= after
        # ... and the ISTFT's helpers (window envelope, sample mask) computed beside it in the same
        # forward (the module that owns conv_post), not the network that feeds conv_post.
        owner = {p.rsplit(".", 1)[0] for i in post for p in [paths[i]] if p and "." in p}
        helpers = _ancestors(graph, after, producer) - _ancestors(graph, post, producer) - after
        keep |= {i for i in helpers if paths[i] in owner}
    source = {i for i, p in enumerate(paths) if _in_modules(p, (SOURCE_MODULE,))}
    sinks = {i for i, p in enumerate(paths) if _in_modules(p, SOURCE_SINK_MODULES)}
    if source and sinks:   # the STFT of the source: between the sine source and the layers fed by it
        keep |= (_descendants(graph, source, consumers) & _ancestors(graph, sinks, producer)) - sinks
    # Only nodes with a floating-point output have a precision to keep.
    return sorted(i for i in keep if any(_is_float(types, o) for o in graph.node[i].output if o))


def fp32_layer_names(onnx_proto, *, time_inputs=TIME_INPUTS, modules=FP32_MODULES) -> list[str]:
    """Names of the ONNX nodes an fp16/bf16 engine must keep in fp32, in graph order.

    Chosen by op type (LayerNormalization, Softmax and other normalisations; ReduceMean/Pow chains
    of a decomposed LayerNorm), by the torch module path the exporter recorded (time embedding
    and MLPs, time_embed_mixer, the sine source, spectral helpers, conv_post), by data flow (the
    batch-only subgraph computed from the time inputs t/r; everything downstream of conv_post: the
    magnitude/phase head and the ISTFT; the STFT between the sine source and the source_downs
    convolutions), keeping only nodes with a floating-point output. TensorRT names its layers
    after these node names (see `match_layer_to_nodes`). Unnamed nodes cannot be matched and are
    left out: run `name_nodes` first on graphs that have them.
    """
    graph = onnx_proto.graph
    return [graph.node[i].name for i in fp32_node_indices(onnx_proto, time_inputs=time_inputs, modules=modules)
            if graph.node[i].name]


def name_nodes(proto, prefix: str = "s3gen_node_") -> int:
    """Give every unnamed node a unique name (in place); returns how many were named."""
    taken = {n.name for n in proto.graph.node if n.name}
    count = 0
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            name, k = f"{prefix}{i}", 0
            while name in taken:
                k += 1
                name = f"{prefix}{i}_{k}"
            node.name = name
            taken.add(name)
            count += 1
    return count


_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]\x1e\x1f]+)\]")


def match_layer_to_nodes(layer_name: str, metadata: str | None, node_names) -> list[str]:
    """The ONNX node(s) a TensorRT layer came from.

    TensorRT's ONNX parser records '[ONNX Layer: <node>]' in the layer's metadata (TensorRT >= 10;
    several, separated by \\x1f, for fused layers) and names the layer after the node; helper layers
    it adds for one node get the node name plus a suffix ('node_x_1', 'node_x/const'). Metadata
    wins; otherwise the exact name; otherwise the longest node name the layer name starts with,
    followed by a separator, unless the layer's full name is itself another node's name.
    """
    names = node_names if isinstance(node_names, (set, frozenset, dict)) else set(node_names)
    found = _ONNX_LAYER.findall(metadata or "")
    if found:
        return [n.strip() for n in found if n.strip() in names]
    if layer_name in names:
        return [layer_name]
    best = None
    for m in re.finditer(r"[/_:. ]", layer_name or ""):
        prefix = layer_name[:m.start()]
        if prefix in names:
            best = prefix
    return [best] if best is not None else []


# Layer types that carry no arithmetic precision of their own.
_NO_PRECISION_LAYERS = ("CONSTANT", "SHAPE", "ASSERTION", "CAST", "IDENTITY", "CONDITION", "CONDITIONAL_INPUT",
                        "CONDITIONAL_OUTPUT", "ITERATOR", "LOOP_OUTPUT", "RECURRENCE", "TRIP_LIMIT", "FILL")


def apply_fp32_layers(network, fp32_nodes, node_names, trt) -> int:
    """Pin the TensorRT layers of the fp32 ONNX nodes to fp32 (weakly typed builds); returns the count.

    Sets `layer.precision = trt.float32` and every floating-point output to fp32; the builder
    must also get BuilderFlag.OBEY_PRECISION_CONSTRAINTS for TensorRT to honour them.
    """
    wanted = set(fp32_nodes)
    names = set(node_names)
    skip = {getattr(trt.LayerType, t) for t in _NO_PRECISION_LAYERS if hasattr(trt.LayerType, t)}
    floats = {getattr(trt, t) for t in ("float32", "float16", "bfloat16") if hasattr(trt, t)}
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        nodes = match_layer_to_nodes(layer.name, getattr(layer, "metadata", None), names)
        if not any(n in wanted for n in nodes) or layer.type in skip:
            continue
        outs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in floats]
        if not outs:
            continue
        layer.precision = trt.float32
        for j in outs:
            layer.set_output_type(j, trt.float32)
        count += 1
    return count


# ---------------------------------------------------------------- strongly typed: mixed-precision graphs

_LOW_TYPES = {"fp16": 10, "bf16": 16}   # TensorProto FLOAT16, BFLOAT16
_FP16_MAX = 65504.0
# Float inputs that are parameters, not data: they keep fp32 whatever the node's precision.
NON_DATA_SLOTS = {"Resize": frozenset({1, 2}), "Upsample": frozenset({1})}
# Ops kept fp32 always: index-like float arithmetic and attribute-typed constants.
ALWAYS_FP32_OPS = frozenset({"Range", "CumSum", "Constant", "RandomNormal", "RandomUniform", "RandomNormalLike",
                             "RandomUniformLike", "EyeLike", "Multinomial", "Bernoulli"})
_CONTROL_FLOW = frozenset({"If", "Loop", "Scan", "SequenceMap"})


def _float32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (uint16); NaN stays NaN."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    out = (rounded >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        out[nan] = np.uint16(0x7FC0)
    return out


def _low_tensor(array: np.ndarray, precision: str, name: str):
    """An fp16/bf16 TensorProto of a float32 array (fp16 saturates at +-65504 instead of overflowing)."""
    from onnx import TensorProto
    a = np.asarray(array, dtype=np.float32)
    t = TensorProto()
    t.name = name
    t.dims.extend(a.shape)
    if precision == "fp16":
        t.data_type = TensorProto.FLOAT16
        t.raw_data = np.clip(a, -_FP16_MAX, _FP16_MAX).astype("<f2").tobytes()
    else:
        t.data_type = TensorProto.BFLOAT16
        t.raw_data = _float32_to_bf16_bits(a).astype("<u2").tobytes()
    return t


def to_mixed_precision(proto, precision: str, keep_fp32: Iterable[str] = ()):
    """A copy of the graph computing in fp16/bf16 except the `keep_fp32` nodes, with explicit Casts.

    For strongly typed TensorRT networks (which take each tensor's type from the graph). Graph
    inputs and outputs keep their types (the manifest's I/O contract does not change); float32
    initializers are converted where low-precision nodes use them (and kept where fp32 nodes do);
    a Cast is inserted wherever a tensor crosses between the two.

    The result is type-checked by ONNX shape inference in strict mode. ONNX opset 18 schemas do
    not list bfloat16 for some ops TensorRT runs in bf16 (Conv), so a bf16 graph is checked through
    its fp16 twin: the same conversion with only the low type differing.
    """
    import onnx

    check_precision(precision)
    if precision == "fp32":
        raise InputError("to_mixed_precision converts to fp16 or bf16; fp32 graphs need no conversion")
    keep = set(keep_fp32)
    model = _convert_mixed(proto, precision, keep)
    twin = model if precision == "fp16" else _convert_mixed(proto, "fp16", keep)
    try:
        checked = onnx.shape_inference.infer_shapes(twin, check_type=True, strict_mode=True)
    except Exception as e:
        raise EngineBuildError(f"the {precision} graph does not type-check: {e}") from e
    return checked if precision == "fp16" else model


def _convert_mixed(proto, precision: str, keep: set):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    low = _LOW_TYPES[precision]
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph, types = _typed_graph(model)
    for node in graph.node:
        if node.op_type in _CONTROL_FLOW or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                                for a in node.attribute):
            raise EngineBuildError(f"to_mixed_precision does not handle control flow (node {node.name!r}, "
                                   f"{node.op_type}); build with precision fp32")

    FLOAT = TensorProto.FLOAT
    low_nodes = set()
    for i, node in enumerate(graph.node):
        outs = [o for o in node.output if o]
        if node.name in keep or node.op_type in ALWAYS_FP32_OPS or any(o not in types for o in outs):
            continue
        low_nodes.add(i)
    produced: dict[str, int] = {}
    for v in graph.input:
        if types.get(v.name) == FLOAT:
            produced[v.name] = FLOAT
    for i, node in enumerate(graph.node):
        for o in node.output:
            if o and types.get(o) == FLOAT:
                produced[o] = low if i in low_nodes else FLOAT

    # Graph outputs made by low-precision nodes: rename inside, Cast back to float32 at the end.
    renames = {}
    for out in graph.output:
        if produced.get(out.name) == low:
            renames[out.name] = f"{out.name}__{precision}"
    if renames:
        for node in graph.node:
            for k, name in enumerate(node.output):
                if name in renames:
                    node.output[k] = renames[name]
            for k, name in enumerate(node.input):
                if name in renames:
                    node.input[k] = renames[name]
        for old, new in renames.items():
            produced[new] = produced.pop(old)
            types[new] = FLOAT

    inits = {t.name: t for t in graph.initializer if t.data_type == FLOAT}
    low_inits: dict[str, str] = {}
    casts: dict[tuple[str, int], str] = {}
    new_nodes = []
    suffix = {low: precision, FLOAT: "fp32"}

    def as_type(name: str, want: int) -> str:
        if name in inits:
            if want == FLOAT:
                return name
            if name not in low_inits:
                low_name = f"{name}__{precision}"
                graph.initializer.append(_low_tensor(numpy_helper.to_array(inits[name]), precision, low_name))
                low_inits[name] = low_name
            return low_inits[name]
        have = produced.get(name)
        if have is None or have == want:
            return name
        key = (name, want)
        if key not in casts:
            cast_out = f"{name}__to_{suffix[want]}"
            new_nodes.append(helper.make_node("Cast", [name], [cast_out], name=f"{cast_out}__cast", to=want))
            casts[key] = cast_out
        return casts[key]

    for i, node in enumerate(graph.node):
        want = low if i in low_nodes else FLOAT
        slots = NON_DATA_SLOTS.get(node.op_type, frozenset())
        for k, name in enumerate(node.input):
            if name and (name in inits or name in produced):
                node.input[k] = as_type(name, FLOAT if k in slots else want)
        if i in low_nodes:
            _lower_attributes(node, low, precision)
        new_nodes.append(node)
    for old, new in renames.items():
        new_nodes.append(helper.make_node("Cast", [new], [old], name=f"{old}__cast_out", to=FLOAT))

    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {x for n in graph.node for x in n.input}
    kept_inits = [t for t in graph.initializer if t.name in used or t.name in {o.name for o in graph.output}]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    del graph.value_info[:]
    return model


def _lower_attributes(node, low: int, precision: str) -> None:
    """Attributes that fix a float32 output type, moved to the low type."""
    from onnx import TensorProto, helper, numpy_helper
    if node.op_type == "Cast":
        for a in node.attribute:
            if a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = low
    elif node.op_type == "ConstantOfShape":
        for a in node.attribute:
            if a.name == "value":
                if a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(_low_tensor(numpy_helper.to_array(a.t), precision, a.t.name))
                return
        node.attribute.append(helper.make_attribute("value", _low_tensor(np.zeros(1, np.float32), precision, "")))


# ================================================================ validation

# Per output, the SNR floors (dB) of reduced-precision engines against ONNX Runtime fp32. fp32
# engines use the graph's own export tolerances (recorded in the manifest). 'mask' is exact
# whatever the precision (0/1 survives fp16 and bf16).
LOW_PRECISION_SNR_DB = {
    "fp16": {"velocity": 30.0, "mu": 30.0, "spks": 40.0, "cond": 40.0, "wav": 25.0, "f0": 30.0},
    "bf16": {"velocity": 20.0, "mu": 20.0, "spks": 30.0, "cond": 30.0, "wav": 15.0, "f0": 20.0},
}
DEFAULT_LOW_SNR_DB = {"fp16": 30.0, "bf16": 20.0}
EXACT_OUTPUTS = ("mask",)


def engine_tolerances(component, precision: str, overrides: dict | None = None) -> dict[str, Tolerance]:
    """Output name -> Tolerance for an engine of `precision` (overrides: name -> Tolerance)."""
    check_precision(precision)
    recorded = dict(component.validation.tolerance)
    out = {}
    for spec in component.outputs:
        name = spec.name
        if precision == "fp32":
            out[name] = recorded.get(name, Tolerance(1e-3, 1e-3))
        elif name in EXACT_OUTPUTS:
            out[name] = Tolerance(0.0, 0.0)
        else:
            floor = LOW_PRECISION_SNR_DB[precision].get(name, DEFAULT_LOW_SNR_DB[precision])
            out[name] = Tolerance(0.0, 0.0, floor)
    for name, tol in (overrides or {}).items():
        if name not in out:
            raise InputError(f"tolerance override for unknown output {name!r}; outputs: {sorted(out)}")
        out[name] = tol
    return out


# lengths input -> (the input whose axis it measures, that axis)
LENGTH_INPUTS = {"token_lengths": ("tokens", 1), "prompt_lengths": ("prompt_tokens", 1), "mel_lengths": ("mel", 2)}


def _row_lengths(rng, batch: int, size: int) -> np.ndarray:
    """Row 0 uses the whole axis, the others a random part of it (padding must be inert)."""
    lens = rng.integers(1, size + 1, batch)
    lens[0] = size
    return lens.astype(np.int64)


def random_feeds(component, shapes: dict[str, tuple], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs a request could have, at the given shapes: ids in the vocabulary, lengths within the
    padded axes (row 0 full), a 0/1 mask, t in [0, 0.9], r > t, cfg_rate 0.7, sine phase with the
    fundamental at 0, log-mel-like mels, gaussian noise elsewhere."""
    feeds: dict[str, np.ndarray] = {}
    lengths: dict[str, np.ndarray] = {}
    batch = None
    for spec in component.inputs:
        batch = shapes[spec.name][0] if batch is None else batch
    for name, (target, axis) in LENGTH_INPUTS.items():
        if name in shapes and target in shapes:
            lengths[name] = _row_lengths(rng, batch, shapes[target][axis])
    for spec in component.inputs:
        name, shape, dtype = spec.name, tuple(shapes[spec.name]), np.dtype(spec.dtype)
        if name in lengths:
            a = lengths[name]
        elif dtype.kind in "iu":
            a = rng.integers(0, SPEECH_VOCAB_SIZE, shape)
        elif name == "mask":
            lens = _row_lengths(rng, shape[0], shape[-1])
            a = (np.arange(shape[-1])[None, :] < lens[:, None]).astype(np.float32).reshape(shape)
        elif name == "t":
            a = rng.uniform(0.0, 0.9, shape)
        elif name == "r":
            a = np.minimum(feeds["t"] + rng.uniform(0.05, 0.5, shape), 1.0) if "t" in feeds else rng.uniform(0.1, 1, shape)
        elif name == "cfg_rate":
            a = np.full(shape, 0.7)
        elif name == "sine_phase":
            a = rng.uniform(-np.pi, np.pi, shape)
            a[:, 0] = 0.0
        elif name in ("mel", "prompt_feat"):
            a = rng.standard_normal(shape) * 2.0 - 5.0
        else:
            a = rng.standard_normal(shape)
        feeds[name] = np.ascontiguousarray(np.asarray(a).astype(dtype))
    return feeds


def compare_outputs(got: dict, ref: dict, tolerances: dict) -> dict:
    """One case's errors per output and the problems (shape, NaN/Inf, tolerance misses)."""
    from .validate import CaseResult, compare
    result = CaseResult("case")
    for name, tol in tolerances.items():
        if name not in got:
            result.problems.append(f"{name}: missing from the engine's outputs")
            continue
        compare(name, np.asarray(got[name]), np.asarray(ref[name]), tol, result)
    return {"max_abs": result.max_abs, "max_rel": result.max_rel, "snr_db": result.snr_db,
            "problems": list(result.problems)}


def validate_engine(run, reference, component, cases: dict[str, dict[str, tuple]], precision: str, *,
                    tolerances: dict | None = None, seed: int = 0) -> dict:
    """Run `run(feeds)` (the engine) and `reference(feeds)` (ONNX Runtime fp32) on random inputs at
    each case's shapes; returns the manifest validation record ({'passed', 'cases', 'tolerance'}).

    Both callables take name -> array and return name -> array.
    """
    tols = engine_tolerances(component, precision, tolerances)
    record_cases = []
    for k, (case, shapes) in enumerate(cases.items()):
        feeds = random_feeds(component, shapes, np.random.default_rng(seed + k))
        try:
            got = run(dict(feeds))
        except S3GenError as e:
            record_cases.append({"name": case, "shapes": {n: list(s) for n, s in shapes.items()},
                                 "max_abs": {}, "max_rel": {}, "snr_db": {}, "problems": [f"engine failed: {e}"]})
            continue
        errors = compare_outputs(got, reference(dict(feeds)), tols)
        record_cases.append({"name": case, "shapes": {n: list(s) for n, s in shapes.items()}, **errors})
    return {"passed": all(not c["problems"] for c in record_cases), "cases": record_cases,
            "tolerance": {n: t.to_dict() for n, t in tols.items()}}


def validation_summary(record: dict) -> str:
    """'min 41.2 dB, opt 40.8 dB, max 39.9 dB' (worst SNR per case) or the first problem."""
    if record.get("error"):
        return f"FAIL: {record['error']}"
    parts = []
    for case in record["cases"]:
        if case["problems"]:
            return f"FAIL {case['name']}: {case['problems'][0]}"
        snr = [v for v in case["snr_db"].values()]
        parts.append(f"{case['name']} {min(snr):.1f} dB" if snr else case["name"])
    return ", ".join(parts)


def ort_reference(onnx_path: Path, output_names: list[str]):
    """A callable running the fp32 ONNX graph under ONNX Runtime (CUDA without TF32 when available)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = None
    if "CUDAExecutionProvider" in ort.get_available_providers():
        try:
            session = ort.InferenceSession(str(onnx_path), options, providers=[
                ("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"])
        except Exception:
            session = None
    if session is None:
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def run(feeds):
        return dict(zip(output_names, session.run(output_names, feeds)))

    run.providers = session.get_providers()
    return run


# ================================================================ building (TensorRT, GPU)

def resolve_buckets(manifest: Manifest, buckets=None) -> list[tuple[Bucket, Bucket | None]]:
    """(bucket, previous chosen bucket) pairs, smallest first. `buckets`: None (all of the manifest's),
    or names ('mel1024') / sizes (1024) from the manifest's table. Profiles tile the chosen ones."""
    table = list(manifest.buckets)
    if buckets is None:
        chosen = table
    else:
        if isinstance(buckets, (str, int)):
            buckets = [buckets]
        chosen = []
        for b in buckets:
            match = [x for x in table if (isinstance(b, Bucket) and x == b) or x.name == b or
                     (isinstance(b, str) and b.isdigit() and x.mel_frames == int(b)) or
                     (isinstance(b, (int, np.integer)) and not isinstance(b, bool) and x.mel_frames == b)]
            if not match:
                raise InputError(f"bucket {b!r} is not in these artifacts' table: "
                                 f"{', '.join(f'{x.name} ({x.mel_frames})' for x in table)}")
            if match[0] not in chosen:
                chosen.append(match[0])
        if not chosen:
            raise InputError("no buckets chosen")
        chosen.sort(key=lambda x: x.mel_frames)
    return [(b, chosen[i - 1] if i else None) for i, b in enumerate(chosen)]


def buildable_graphs(manifest: Manifest, graphs=None) -> list[str]:
    """The fp32 ONNX components (int8 graphs are for ONNX Runtime on CPU: TensorRT gets fp32)."""
    names = [n for n, c in manifest.components.items() if c.format == "onnx" and c.precision == "fp32"]
    if graphs is None:
        return names
    graphs = [graphs] if isinstance(graphs, str) else list(graphs)
    unknown = [g for g in graphs if g not in names]
    if unknown:
        raise InputError(f"cannot build engines for {unknown}: buildable graphs are {names}")
    return [n for n in names if n in graphs]


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
    parser = trt.OnnxParser(network, _trt_logger(trt))
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


_TRT_LOGGER = None


def _trt_logger(trt):
    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        from s3gen_runtime.backends import tensorrt as rt_backend
        _TRT_LOGGER = rt_backend._logger(trt)
    return _TRT_LOGGER


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
    from s3gen_runtime import gpu
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

    import onnx
    builder = trt.Builder(_trt_logger(trt))
    cache_path = Path(timing_cache) if timing_cache is not None else timing_cache_path(folder, cc, trt_version)
    cache_config = builder.create_builder_config()   # owns the timing cache shared by every build
    cache = _load_timing_cache(cache_config, cache_path, progress)
    workspace = int(workspace_gb * (1 << 30)) if workspace_gb else None

    total = len(names) * len(pairs)
    step, passed, failed = 0, [], []
    for graph in names:
        component = manifest.component(graph)
        onnx_path = folder / component.file
        proto = onnx.load(str(onnx_path))
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
                    record["validation"] = _validate_built(folder, record, component, bucket, prev, precision,
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


def profiles_frames_low(bucket: Bucket, prev: Bucket | None) -> int:
    return prev.mel_frames + 1 if prev is not None else 1


def _validate_built(folder, record, component, bucket, prev, precision, batches, reference, tolerances, seed,
                    device) -> dict:
    """Validate an engine through the runtime's own runner (record, sha256 and GPU checks included)."""
    from s3gen_runtime.backends.tensorrt import TensorRTRunner
    engine = Engine.from_dict(dict(record, validation=None), "engine")
    cases = validation_shapes(component, bucket, prev, *batches)
    runner = TensorRTRunner(folder, engine, component, pool_size=1, device=device)
    try:
        return validate_engine(runner.run, reference, component, cases, precision, tolerances=tolerances, seed=seed)
    finally:
        runner.close()


__all__ = ["EngineBuildError", "check_precision", "check_batches", "axis_ranges", "plan_profiles", "profile_to_json",
           "validation_shapes", "engine_file_name", "module_path", "fp32_node_indices", "fp32_layer_names",
           "name_nodes", "match_layer_to_nodes", "apply_fp32_layers", "to_mixed_precision", "engine_tolerances",
           "random_feeds", "compare_outputs", "validate_engine", "validation_summary", "ort_reference",
           "resolve_buckets", "buildable_graphs", "timing_cache_path", "build_serialized_engine", "update_manifest",
           "build_engines", "check_engine_compatible"]

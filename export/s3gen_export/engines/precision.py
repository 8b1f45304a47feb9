"""The fp32 layer policy (pure): which ONNX nodes stay fp32 in an fp16/bf16 engine.

`fp32_layer_names` picks LayerNormalization and Softmax (and decomposed norms), the time
embedding, the sine source and the STFT/ISTFT path of the vocoder. TensorRT 10 "weakly typed"
builds apply it as per-layer precision constraints (`match_layer_to_nodes`, `apply_fp32_layers`);
strongly typed builds rewrite the graph instead (see `mixed_precision`).
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable

from ..stages.onnx_scopes import module_path   # shared with quantize
from .errors import EngineBuildError


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


def typed_graph(proto):
    """The graph and the element type of every tensor (ONNX shape inference where the file lacks them).

    The fp32 policy keeps only nodes with a floating-point output, so a tensor of unknown type would
    silently leave its node out of the fp32 list: a failed inference is an EngineBuildError instead.
    """
    graph = proto.graph
    types = _elem_types(graph)
    produced = [o for n in graph.node for o in n.output if o]
    if any(o not in types for o in produced):
        import onnx
        try:
            inferred = onnx.shape_inference.infer_shapes(proto)
        except Exception as e:
            untyped = sum(1 for n in graph.node if any(o and o not in types for o in n.output))
            raise EngineBuildError(f"ONNX shape inference failed ({type(e).__name__}: {e}); {untyped} nodes have "
                                   "outputs of unknown type, so the fp32 layer policy cannot be applied; "
                                   "re-export the graph or build with precision fp32") from e
        types.update(_elem_types(inferred.graph))
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
    graph, types = typed_graph(proto)
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
    # Only nodes with a floating-point output have a precision to keep; a kept node whose outputs
    # all have unknown types would otherwise drop out of the list unnoticed.
    untyped = [graph.node[i].name or f"#{i}" for i in sorted(keep)
               if not any(o in types for o in graph.node[i].output if o)]
    if untyped:
        raise EngineBuildError(f"{len(untyped)} nodes chosen to stay fp32 have outputs of unknown type after "
                               f"shape inference (first: {', '.join(untyped[:5])}); the fp32 layer policy "
                               "would miss them: re-export the graph or build with precision fp32")
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

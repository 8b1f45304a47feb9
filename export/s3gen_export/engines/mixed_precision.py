"""Strongly typed builds (pure): an ONNX graph rewritten to fp16/bf16 with fp32 islands and Casts.

Used for `--strongly-typed` and always on TensorRT >= 11, which removed weak typing: TensorRT
then takes each tensor's type from the graph, so `to_mixed_precision` runs before it parses it.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from s3gen_runtime.errors import InputError

from .errors import EngineBuildError
from .precision import typed_graph
from .profiles import check_precision


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
    graph, types = typed_graph(model)
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

"""Attention as one fused ONNX Runtime kernel: `com.microsoft.MultiHeadAttention`.

torch's exporter lowers scaled_dot_product_attention to MatMul, Add(mask), Softmax, MatMul over
full (B, heads, T, T) score tensors: 56 of them per estimator call, each a separate kernel with its
own T x T buffers. The fused kernel takes the (B, T, heads * dim) projections and a key padding
mask and never hands those buffers to the graph's allocator.

The estimator's Attention calls `key_masked_attention` (a torch custom op, model/estimator.py) when its `fused` flag is
set; its eager implementation is SDPA, so validation against eager still compares the same math,
and `TRANSLATION_TABLE` tells torch.onnx how to write it. ORT-only: TensorRT's parser does not know
contrib ops, so `engines` rewrites the node back into standard ops before building
(`decompose_multi_head_attention`).
"""
from __future__ import annotations

import onnxscript
import torch
from onnx.defs import OpSchema

from ..model.estimator import Attention
from .unpadded_attention import CONTRIB_DOMAIN, MHA_OP, masked_attention_only

def _mha_schema() -> OpSchema:
    """The subset of the contrib op's signature this project emits (ORT registers the op itself;
    onnxscript needs a schema to build the node)."""
    optional = OpSchema.FormalParameterOption.Optional
    return OpSchema(
        MHA_OP, CONTRIB_DOMAIN, 1,
        inputs=[OpSchema.FormalParameter("query", "T"), OpSchema.FormalParameter("key", "T"),
                OpSchema.FormalParameter("value", "T"),
                OpSchema.FormalParameter("bias", "T", param_option=optional),
                OpSchema.FormalParameter("key_padding_mask", "M", param_option=optional)],
        outputs=[OpSchema.FormalParameter("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "activations"),
                          ("M", ["tensor(int32)"], "1 = attend, 0 = padding")],
        attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "number of heads")],
    )


_MHA = onnxscript.values.Op(onnxscript.values.Opset(CONTRIB_DOMAIN, 1), MHA_OP, _mha_schema())


def _key_masked_attention_onnx(q, k, v, key_valid, num_heads: int):
    return _MHA(q, k, v, None, key_valid, num_heads=num_heads)


TRANSLATION_TABLE = {torch.ops.s3gen.key_masked_attention.default: _key_masked_attention_onnx}


def use_fused_attention(model: torch.nn.Module, enabled: bool = True) -> torch.nn.Module:
    """Switch every estimator Attention to the fused op (or back); returns the model."""
    for module in model.modules():
        if isinstance(module, Attention):
            module.fused = enabled
    return model


def _decomposed_nodes(node, prefix: str, num_heads: int) -> tuple[list, list]:
    """Standard-op nodes (and their constant initializers) computing one MultiHeadAttention node
    exactly as the contrib op does: softmax(q k^T / sqrt(d) + mask bias) v, heads split and merged."""
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    q, k, v = node.input[0], node.input[1], node.input[2]
    key_valid = node.input[4] if len(node.input) > 4 else ""
    if len(node.input) > 3 and node.input[3]:
        raise ValueError(f"{node.name}: MultiHeadAttention with a bias input is not produced by this exporter")
    n = lambda s: f"{prefix}/{s}"   # noqa: E731 - local name maker
    consts = [numpy_helper.from_array(np.array([0, 0, num_heads, -1], np.int64), n("split_shape")),
              numpy_helper.from_array(np.array([0, 0, -1], np.int64), n("merge_shape"))]
    nodes = []
    for name, perm in ((q, (0, 2, 1, 3)), (k, (0, 2, 3, 1)), (v, (0, 2, 1, 3))):
        nodes.append(helper.make_node("Reshape", [name, n("split_shape")], [n(f"{name}_4d")]))
        nodes.append(helper.make_node("Transpose", [n(f"{name}_4d")], [n(f"{name}_heads")], perm=list(perm)))
    nodes.append(helper.make_node("MatMul", [n(f"{q}_heads"), n(f"{k}_heads")], [n("qk")]))
    # 1/sqrt(head dim) from the runtime shape, so the rewrite needs no shape inference
    consts.append(numpy_helper.from_array(np.array([3], np.int64), n("dim_axis")))
    nodes += [helper.make_node("Shape", [n(f"{q}_heads")], [n("q_shape")]),
              helper.make_node("Gather", [n("q_shape"), n("dim_axis")], [n("head_dim")], axis=0),
              helper.make_node("Cast", [n("head_dim")], [n("head_dim_f")], to=TensorProto.FLOAT),
              helper.make_node("Sqrt", [n("head_dim_f")], [n("sqrt_d")]),
              helper.make_node("Div", [n("qk"), n("sqrt_d")], [n("scores")])]
    logits = n("scores")
    if key_valid:
        # padding keys get a large negative logit: the contrib op's own mask_filter_value (-10000)
        consts += [numpy_helper.from_array(np.array(0.0, np.float32), n("zero")),
                   numpy_helper.from_array(np.array(-10000.0, np.float32), n("filter")),
                   numpy_helper.from_array(np.array([1, 2], np.int64), n("mask_axes"))]
        nodes += [helper.make_node("Cast", [key_valid], [n("keep")], to=TensorProto.BOOL),
                  helper.make_node("Where", [n("keep"), n("zero"), n("filter")], [n("bias_2d")]),
                  helper.make_node("Unsqueeze", [n("bias_2d"), n("mask_axes")], [n("bias")]),
                  helper.make_node("Add", [n("scores"), n("bias")], [n("masked_scores")])]
        logits = n("masked_scores")
    nodes += [helper.make_node("Softmax", [logits], [n("probs")], axis=-1),
              helper.make_node("MatMul", [n("probs"), n(f"{v}_heads")], [n("context")]),
              helper.make_node("Transpose", [n("context")], [n("context_t")], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", [n("context_t"), n("merge_shape")], [node.output[0]])]
    for i, made in enumerate(nodes):
        made.name = f"{prefix}/{made.op_type}_{i}"
    return nodes, consts


def decompose_multi_head_attention(proto):
    """A copy of `proto` with every com.microsoft.MultiHeadAttention node replaced by standard ONNX
    ops (for TensorRT, whose parser has no contrib ops; it fuses the MatMul-Softmax-MatMul pattern
    itself). The mask-free branches of `unpadded_attention` are undone first: the masked node serves
    every batch. Returns (new proto, number of nodes rewritten)."""
    out, _ = masked_attention_only(proto)
    graph = out.graph
    rewritten, new_nodes = 0, []
    for node in graph.node:
        if node.domain == CONTRIB_DOMAIN and node.op_type == MHA_OP:
            heads = next(a.i for a in node.attribute if a.name == "num_heads")
            nodes, consts = _decomposed_nodes(node, f"{node.name or 'mha'}_{rewritten}", heads)
            new_nodes += nodes
            graph.initializer.extend(consts)
            rewritten += 1
        else:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    if not any(n.domain == CONTRIB_DOMAIN for n in graph.node):
        kept = [o for o in out.opset_import if o.domain != CONTRIB_DOMAIN]
        del out.opset_import[:]
        out.opset_import.extend(kept)
    return out, rewritten

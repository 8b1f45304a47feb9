"""Which torch module an exported ONNX node came from, read from the exporter's node metadata.

Both layer policies use it: int8 quantization (`quantize`) and the fp32 layers of fp16/bf16
TensorRT engines (`engines.precision`). Pure: takes NodeProto-like objects, imports no onnx.
walk_nodes: every node, subgraph bodies included.
"""
from __future__ import annotations

import ast

NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def module_path(node) -> str | None:
    """The torch module path the exporter recorded for a node ('decoder.time_mlp.linear_1'), or None.

    torch's ONNX exporter stores a Python-literal list of scopes under metadata_props key
    `pkg.torch.onnx.name_scopes`; the last entry is the op itself, the one before it its module.
    None when the key is missing or unreadable, or the node sits at the top level.
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


def has_name_scopes(node) -> bool:
    """Whether the exporter recorded name scopes for this node at all."""
    return any(prop.key == NAME_SCOPES_KEY for prop in node.metadata_props)


def walk_nodes(nodes):
    """Every node, each followed by the nodes of its If/Loop/Scan bodies (recursively)."""
    for node in nodes:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from walk_nodes(attr.g.node)

"""int8: selective quantization keeps the sensitive layers fp32 and is validated by SNR."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from s3gen_export.components import specs_for_variant
from s3gen_export.stages.graphs import ExportError
from s3gen_export.stages.onnx_export import read_metadata
from s3gen_export.stages.onnx_scopes import NAME_SCOPES_KEY, module_path
from s3gen_export.stages.quantize import nodes_to_keep, quantize_graph, validate_int8


@pytest.fixture(scope="module")
def quantized(exported, tmp_path_factory):
    folder = exported("standard")
    spec = {s.name: s for s in specs_for_variant("standard")}["estimator_cfg"]
    dst = tmp_path_factory.mktemp("int8") / "estimator_cfg_int8.onnx"
    counts = quantize_graph(folder / "estimator_cfg.onnx", dst, "estimator_cfg_int8")
    return spec, folder / "estimator_cfg.onnx", dst, counts


def test_sensitive_layers_stay_fp32(exported):
    proto = onnx.load(str(exported("standard") / "estimator_cfg.onnx"), load_external_data=False)
    keep = set(nodes_to_keep(proto))
    scopes = {n.name: module_path(n) or "" for n in proto.graph.node}
    kept_scopes = {scopes[k] for k in keep}
    assert any("time_mlp" in s for s in kept_scopes)
    assert any("attn1.to_out" in s for s in kept_scopes)
    assert not any(".ff." in s for s in kept_scopes)


def test_int8_graph_quantizes_weights_and_passes_snr_floor(quantized):
    spec, fp32, int8, (n_quantized, n_kept) = quantized
    assert n_quantized > 100 and n_kept > 0
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    meta = read_metadata(int8)
    assert meta["component"] == "estimator_cfg_int8" and meta["precision"] == "int8"
    report = validate_int8(spec, fp32, int8)
    assert report.passed, report.table()
    assert all(c.snr_db["velocity"] >= 25.0 for c in report.cases)


def two_matmul_graph(scopes: dict[str, list[str]] | None) -> onnx.ModelProto:
    """x @ W1 @ W2; `scopes` gives each node's exporter name scopes (None: no metadata at all)."""
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="first"),
             helper.make_node("MatMul", ["h", "W"], ["y"], name="second")]
    for node in nodes:
        if scopes is not None and node.name in scopes:
            node.metadata_props.add(key=NAME_SCOPES_KEY, value=str(scopes[node.name]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    return helper.make_model(graph)


def test_keep_list_follows_the_module_scopes():
    proto = two_matmul_graph({"first": ["", "decoder.time_mlp.linear_1", "first"],
                              "second": ["", "decoder.blocks.0.ff.net.2", "second"]})
    assert nodes_to_keep(proto) == ["first"]


def test_graph_without_name_scopes_is_refused():
    # Without the metadata no layer would match, and every sensitive layer would be quantized.
    with pytest.raises(ExportError, match=r"none of the graph's 2 MatMul/Gemm nodes carries .*name-scope"):
        nodes_to_keep(two_matmul_graph(None))


def test_exported_graph_stripped_of_name_scopes_is_not_quantized(exported, tmp_path):
    proto = onnx.load(str(exported("standard") / "estimator.onnx"))
    for node in proto.graph.node:
        kept = [p for p in node.metadata_props if p.key != NAME_SCOPES_KEY]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    src, dst = tmp_path / "stripped.onnx", tmp_path / "stripped_int8.onnx"
    onnx.save_model(proto, str(src))
    with pytest.raises(ExportError, match="name-scope metadata"):
        quantize_graph(src, dst, "estimator_int8")
    assert not dst.exists()

"""int8: selective quantization keeps the sensitive layers fp32 and is validated by SNR."""
from __future__ import annotations

import onnx
import pytest

from s3gen_export.components import specs_for_variant
from s3gen_export.onnx_export import read_metadata
from s3gen_export.quantize import module_scope, nodes_to_keep, quantize_graph, validate_int8


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
    scopes = {n.name: module_scope(n) for n in proto.graph.node}
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

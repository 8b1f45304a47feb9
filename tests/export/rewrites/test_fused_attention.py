"""Fused attention: the custom op's eager math, its ONNX form (com.microsoft.MultiHeadAttention) under
ONNX Runtime, and the standard-op rewrite for TensorRT, on one small Attention with padded keys."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch.export import Dim

from s3gen_export.rewrites.fused_attention import (CONTRIB_DOMAIN, MHA_OP, TRANSLATION_TABLE, decompose_multi_head_attention,
                                          use_fused_attention)
from s3gen_export.model.estimator import Attention, key_bias_from_mask


class _Block(torch.nn.Module):
    """One estimator Attention fed the estimator's own key bias, as the U-Net does."""

    def __init__(self):
        super().__init__()
        self.attn = Attention(dim=32, heads=4, dim_head=16)

    def forward(self, x, mask):
        return self.attn(x, key_bias_from_mask(mask))


def _inputs(batch=2, frames=40, pad=13, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, frames, 32)).astype(np.float32)
    mask = np.ones((batch, 1, frames), np.float32)
    mask[-1, :, frames - pad:] = 0.0
    return x, mask


@pytest.fixture(scope="module")
def block():
    torch.manual_seed(0)
    module = _Block().eval()
    for p in module.parameters():
        p.data.normal_(0.0, 0.2)
    return module


def _export(module, path, fused: bool):
    use_fused_attention(module, fused)
    x, mask = _inputs(frames=8, pad=0)
    b, t = Dim("batch", min=1), Dim("frames", min=2)
    with torch.inference_mode():
        program = torch.onnx.export(module, (torch.from_numpy(x), torch.from_numpy(mask)), dynamo=True,
                                    dynamic_shapes={"x": {0: b, 1: t}, "mask": {0: b, 2: t}},
                                    input_names=["x", "mask"], output_names=["y"], opset_version=18,
                                    custom_translation_table=TRANSLATION_TABLE, verbose=False)
    use_fused_attention(module, False)
    onnx.save(program.model_proto, str(path))
    return onnx.load(str(path))


def _eager(module, x, mask, fused: bool):
    use_fused_attention(module, fused)
    with torch.inference_mode():
        out = module(torch.from_numpy(x), torch.from_numpy(mask)).numpy()
    use_fused_attention(module, False)
    return out


def _valid(y, mask):
    return y * mask.transpose(0, 2, 1)   # padded query rows are don't-care for the caller


def test_custom_op_eager_equals_sdpa_with_additive_bias(block):
    x, mask = _inputs()
    np.testing.assert_allclose(_valid(_eager(block, x, mask, True), mask), _valid(_eager(block, x, mask, False), mask),
                               atol=1e-5)


def test_fused_graph_has_one_mha_per_attention_and_matches_eager(block, tmp_path):
    proto = _export(block, tmp_path / "fused.onnx", fused=True)
    fused_nodes = [n for n in proto.graph.node if n.domain == CONTRIB_DOMAIN and n.op_type == MHA_OP]
    assert len(fused_nodes) == 1
    assert "Softmax" not in {n.op_type for n in proto.graph.node}
    x, mask = _inputs()
    y = ort.InferenceSession(str(tmp_path / "fused.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "mask": mask})[0]
    np.testing.assert_allclose(_valid(y, mask), _valid(_eager(block, x, mask, False), mask), atol=1e-5)


def test_decomposition_has_no_contrib_ops_and_equals_the_fused_graph(block, tmp_path):
    proto = _export(block, tmp_path / "fused.onnx", fused=True)
    portable, count = decompose_multi_head_attention(proto)
    assert count == 1
    assert all(n.domain in ("", "ai.onnx") for n in portable.graph.node)
    assert CONTRIB_DOMAIN not in {o.domain for o in portable.opset_import}
    onnx.checker.check_model(portable)
    onnx.save(portable, str(tmp_path / "portable.onnx"))
    x, mask = _inputs(batch=3, frames=50, pad=21, seed=3)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(  # noqa: E731
        None, {"x": x, "mask": mask})[0]
    np.testing.assert_allclose(_valid(run(tmp_path / "portable.onnx"), mask), _valid(run(tmp_path / "fused.onnx"), mask),
                               atol=1e-5)
    np.testing.assert_allclose(_valid(run(tmp_path / "portable.onnx"), mask),
                               _valid(_eager(block, x, mask, False), mask), atol=1e-5)


def test_decomposition_refuses_a_bias_input(block, tmp_path):
    proto = _export(block, tmp_path / "fused.onnx", fused=True)
    node = next(n for n in proto.graph.node if n.op_type == MHA_OP)
    node.input[3] = "some_bias"
    with pytest.raises(ValueError, match="bias input"):
        decompose_multi_head_attention(proto)

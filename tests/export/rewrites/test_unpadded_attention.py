"""Mask-free attention for unpadded batches: the If each masked MultiHeadAttention is wrapped in takes
the mask-free node exactly when no key is padding, gives the masked node's result either way, and
undoes to the graph as exported (TensorRT's decomposition starts there)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from s3gen_export.rewrites.fused_attention import CONTRIB_DOMAIN, MHA_OP, decompose_multi_head_attention
from s3gen_export.rewrites.unpadded_attention import BRANCH_PREFIX, branch_unpadded_attention, masked_attention_only

from test_fused_attention import _eager, _export, _inputs, _valid, block  # noqa: F401 - the module fixture


def _session(proto, profile_dir=None):
    options = ort.SessionOptions()
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_dir / "profile")
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _attention_nodes_run(proto, x, mask, tmp_path) -> set:
    """Names of the attention kernels ONNX Runtime ran (its profiler) for one call."""
    session = _session(proto, tmp_path)
    session.run(None, {"x": x, "mask": mask})
    events = json.loads(open(session.end_profiling()).read())
    return {e["name"].removesuffix("_kernel_time") for e in events
            if e.get("cat") == "Node" and e.get("args", {}).get("op_name") == MHA_OP}


@pytest.fixture()
def exported(block, tmp_path):  # noqa: F811
    return _export(block, tmp_path / "fused.onnx", fused=True)


def test_each_masked_node_is_wrapped_once(exported):
    branched, count = branch_unpadded_attention(exported)
    assert count == 1
    onnx.checker.check_model(branched)
    ifs = [n for n in branched.graph.node if n.op_type == "If"]
    assert [n.name for n in ifs] == [f"{BRANCH_PREFIX}_0"]
    branches = {a.name: a.g.node[0] for a in ifs[0].attribute}
    assert len(branches["then_branch"].input) == 3 and len(branches["else_branch"].input) == 5
    assert not any(n.domain == CONTRIB_DOMAIN for n in branched.graph.node)   # only inside the branches


@pytest.mark.parametrize("pad", [0, 13])
def test_branched_graph_equals_eager_and_runs_mask_free_only_without_padding(block, exported, tmp_path, pad):  # noqa: F811
    branched, _ = branch_unpadded_attention(exported)
    x, mask = _inputs(batch=2, frames=40, pad=pad, seed=2)
    y = _session(branched).run(None, {"x": x, "mask": mask})[0]
    np.testing.assert_allclose(_valid(y, mask), _valid(_eager(block, x, mask, False), mask), atol=1e-5)
    ran = _attention_nodes_run(branched, x, mask, tmp_path)
    assert ran == {f"{BRANCH_PREFIX}_0/{'masked' if pad else 'unpadded'}/{MHA_OP}"}


def test_undo_restores_the_exported_nodes(exported):
    branched, _ = branch_unpadded_attention(exported)
    restored, count = masked_attention_only(branched)
    assert count == 1
    strip = lambda p: [(n.op_type, list(n.input), list(n.output)) for n in p.graph.node]  # noqa: E731
    assert strip(restored) == strip(exported)


def test_tensorrt_decomposition_sees_through_the_branches(block, exported, tmp_path):  # noqa: F811
    portable, count = decompose_multi_head_attention(branch_unpadded_attention(exported)[0])
    assert count == 1
    assert all(n.domain in ("", "ai.onnx") and n.op_type != "If" for n in portable.graph.node)
    x, mask = _inputs(batch=3, frames=30, pad=9, seed=4)
    y = _session(portable).run(None, {"x": x, "mask": mask})[0]
    np.testing.assert_allclose(_valid(y, mask), _valid(_eager(block, x, mask, False), mask), atol=1e-5)

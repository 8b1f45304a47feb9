"""optimize_graph: torch's optimize=True pipeline, less the quadratic SlicesSplit rule, gives the same graph."""
from __future__ import annotations

import torch
from torch import nn

from s3gen_export.stages.onnx_export import SKIPPED_REWRITE_RULES, optimize_graph


class Toy(nn.Module):
    """Slices, reshapes, a conv and a masked softmax: the kinds of node the S3Gen graphs are made of."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.conv = nn.Conv1d(16, 16, 3, padding=1)

    def forward(self, x, lengths):
        h = self.proj(x)                                            # (B, T, 16)
        heads = [torch.softmax(h[:, :, i * 4:(i + 1) * 4] * 0.5, -1) for i in range(4)]
        h = torch.cat(heads, dim=-1).transpose(1, 2)
        mask = (torch.arange(x.size(1))[None, :] < lengths[:, None]).unsqueeze(1)
        return self.conv(h).masked_fill(~mask, 0.0)


def _export(optimize: bool):
    x, lengths = torch.randn(2, 7, 8), torch.tensor([7, 5])
    t = torch.export.Dim("t", min=2)
    return torch.onnx.export(Toy().eval(), (x, lengths), dynamo=True, optimize=optimize, opset_version=18,
                             dynamic_shapes={"x": {1: t}, "lengths": {}}, verbose=False)


def _structure(model):
    return [(n.op_type, [v.name if v is not None else "" for v in n.inputs], [v.name for v in n.outputs])
            for n in model.graph]


def test_optimize_graph_matches_torchs_optimizer_node_for_node():
    torch.manual_seed(0)
    reference = _export(optimize=True)
    torch.manual_seed(0)
    ours = _export(optimize=False)
    before = len(ours.model.graph)
    optimize_graph(ours.model)
    assert len(ours.model.graph) < before   # it did optimize
    assert _structure(ours.model) == _structure(reference.model)
    assert [i.name for i in ours.model.graph.initializers.values()] == \
        [i.name for i in reference.model.graph.initializers.values()]


def test_the_skipped_rule_exists_in_onnxscript():
    """If onnxscript renames it, the skip would silently stop working (and the encoder export take minutes)."""
    from onnxscript import rewriter

    names = {getattr(rule, "name", None) for rule in rewriter._DEFAULT_REWRITE_RULES}
    assert SKIPPED_REWRITE_RULES <= names

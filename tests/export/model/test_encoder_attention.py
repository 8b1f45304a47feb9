"""The encoder's relative-position attention computed head by head (the export switch) is the same
maths as upstream's all-heads form, padding included, and the exported encoder spec asks for it."""
from __future__ import annotations

import torch

from s3gen_export.components.encoder import SPEC
from s3gen_export.model.encoder import RelPositionMultiHeadedAttention, relative_position_table, use_head_by_head_attention


def _attention_inputs(batch=2, frames=37, pad=11, width=64):
    torch.manual_seed(0)
    x = torch.randn(batch, frames, width)
    key_mask = torch.ones(batch, 1, frames, dtype=torch.bool)
    key_mask[-1, :, frames - pad:] = False
    table = relative_position_table(width, 100)
    center = table.size(1) // 2
    return x, key_mask, table[:, center - frames + 1: center + frames]


def test_head_by_head_equals_all_heads_with_padding():
    torch.manual_seed(1)
    attention = RelPositionMultiHeadedAttention(n_head=4, n_feat=64).eval()
    for p in attention.parameters():
        p.data.normal_(0.0, 0.3)
    x, key_mask, pos = _attention_inputs()
    heads_per_call = []
    original = attention._attend

    def recording(q_u, *args):
        heads_per_call.append(q_u.shape[1])
        return original(q_u, *args)

    attention._attend = recording
    with torch.inference_mode():
        together = attention(x, key_mask, pos)
        use_head_by_head_attention(attention, True)
        assert attention.head_by_head
        by_head = attention(x, key_mask, pos)
        use_head_by_head_attention(attention, False)
    assert heads_per_call == [4, 1, 1, 1, 1]   # one call for all heads, then one per head
    torch.testing.assert_close(by_head, together, atol=1e-6, rtol=1e-6)


def test_encoder_spec_exports_head_by_head():
    assert SPEC.head_by_head_attention
    assert SPEC.declaration()["head_by_head_attention"] is True   # covered by the spec hash

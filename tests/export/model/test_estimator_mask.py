"""The estimator's key-padding bias: finite in every float type, and padded keys get zero weight."""
import pytest
import torch
import torch.nn.functional as F

from s3gen_export.model.estimator import key_bias_from_mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_padded_keys_get_no_attention_in_any_float_type(dtype):
    torch.manual_seed(0)
    valid, frames = 5, 8
    mask = torch.zeros(1, 1, frames, dtype=dtype)
    mask[..., :valid] = 1
    bias = key_bias_from_mask(mask)
    assert bias.dtype == dtype and bias.shape == (1, 1, 1, frames)
    assert torch.isfinite(bias).all()     # upstream's -1e10 is -inf in fp16 and makes NaN on valid keys
    assert (bias[..., :valid] == 0).all()

    q, k, v = (torch.randn(1, 2, frames, 16).to(dtype) * 4 for _ in range(3))
    v[..., valid:, :] = 1e3                # any weight on a padded key would show in the output
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    want = F.scaled_dot_product_attention(q, k[..., :valid, :], v[..., :valid, :])
    assert torch.isfinite(got).all()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(got.float(), want.float(), atol=tol, rtol=tol)

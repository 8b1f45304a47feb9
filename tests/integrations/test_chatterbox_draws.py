"""The draws the drop-in makes for upstream: their order and shapes (the parity tests check their values end to
end), and a model that still holds a fixed rand_noise buffer (as chatterbox-tts <= 0.1.5 built its CFM)."""
import math

import numpy as np
import pytest
import torch

from s3gen_chatterbox.upstream_draws import flow_noise, sine_draws


def test_standard_flow_noise_is_one_randn_over_prompt_and_new_frames():
    torch.manual_seed(4)
    z = flow_noise(3, 5, meanflow=False, device="cpu", dtype=torch.float32)
    torch.manual_seed(4)
    np.testing.assert_array_equal(z, torch.randn(1, 80, 16).numpy())


def test_meanflow_draws_its_new_frames_first_and_writes_them_after_the_prompt():
    torch.manual_seed(4)
    z = flow_noise(3, 5, meanflow=True, device="cpu", dtype=torch.float32)
    torch.manual_seed(4)
    noised, first = torch.randn(1, 80, 10), torch.randn(1, 80, 16)
    np.testing.assert_array_equal(z[..., :6], first[..., :6].numpy())
    np.testing.assert_array_equal(z[..., 6:], noised.numpy())


def test_a_fixed_rand_noise_buffer_is_sliced_not_drawn():
    buffer = torch.randn(1, 80, 100)
    state = torch.get_rng_state()
    z = flow_noise(3, 5, meanflow=False, device="cpu", dtype=torch.float32, fixed_noise=buffer)
    np.testing.assert_array_equal(z, buffer[:, :, :16].numpy())
    assert torch.equal(state, torch.get_rng_state())   # nothing drawn
    with pytest.raises(ValueError, match="holds 100 frames; this request needs 240"):
        flow_noise(20, 100, meanflow=False, device="cpu", dtype=torch.float32, fixed_noise=buffer)


def test_sine_draws_phase_then_noise_then_the_unused_branch():
    torch.manual_seed(9)
    phase, noise = sine_draws(4, device="cpu")
    torch.manual_seed(9)
    want_phase = -math.pi + torch.rand(1, 9, 1) * (2 * math.pi)
    want_noise = torch.randn(1, 9, 1920)
    torch.randn(1, 1920, 1)
    after = torch.rand(1)
    assert phase.shape == (1, 9, 1) and phase[0, 0, 0] == 0
    np.testing.assert_allclose(phase[0, 1:], want_phase[0, 1:].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(noise, want_noise.numpy())
    torch.manual_seed(9)
    sine_draws(4, device="cpu")
    assert torch.equal(torch.rand(1), after)          # the generator ends where upstream leaves it

import numpy as np
import pytest

from s3gen_runtime.errors import InputError
from s3gen_runtime.io import check_noise_shapes
from s3gen_runtime.noise import draw_noise


def test_shapes_dtypes_and_fit_a_request():
    noise = draw_noise(0, 25, 35)
    assert noise["z"].shape == (1, 80, 120)
    assert noise["sine_phase"].shape == (1, 9, 1)
    assert noise["sine_noise"].shape == (1, 9, 480 * 70)
    assert all(a.dtype == np.float32 for a in noise.values())
    check_noise_shapes(noise, 25, 35)


def test_same_seed_same_noise_other_seed_differs():
    a, b, c = draw_noise(7, 3, 4), draw_noise(7, 3, 4), draw_noise(8, 3, 4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert not np.array_equal(a[k][:, 1:], c[k][:, 1:])


def test_documented_draw_order():
    """z first, then the 9 phases, then the sine noise, from one PCG64 stream."""
    noise = draw_noise(123, 2, 3)
    rng = np.random.default_rng(123)
    np.testing.assert_array_equal(noise["z"], rng.standard_normal((1, 80, 10), dtype=np.float32))
    phase = rng.uniform(-np.pi, np.pi, (1, 9, 1)).astype(np.float32)
    np.testing.assert_array_equal(noise["sine_phase"][:, 1:], phase[:, 1:])
    np.testing.assert_array_equal(noise["sine_noise"], rng.standard_normal((1, 9, 2880), dtype=np.float32))


def test_phase_range_and_fundamental_at_zero():
    phases = np.concatenate([draw_noise(s, 1, 1)["sine_phase"].ravel() for s in range(200)])
    assert np.all(phases[::9] == 0.0)
    rest = np.delete(phases, np.s_[::9])
    assert np.all(rest >= -np.pi) and np.all(rest < np.pi)
    assert rest.min() < -2.5 and rest.max() > 2.5   # spread over the whole circle


def test_normal_draws_look_standard():
    z = draw_noise(1, 100, 100)["z"]
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1.0) < 0.02


@pytest.mark.parametrize("args, match", [
    ((-1, 1, 1), "seed"),
    ((1.5, 1, 1), "seed"),
    ((True, 1, 1), "seed"),
    ((0, -1, 1), "prompt_tokens"),
    ((0, 1, 0), "new_tokens"),
])
def test_bad_arguments(args, match):
    with pytest.raises(InputError, match=match):
        draw_noise(*args)


def test_odd_prompt_vocodes_one_frame_fewer():
    """F = 2P + 1: z still covers T = 2 (P + N), the sine noise the 2N - 1 vocoded frames; the draws are
    the even request's, the sine noise stopping one frame's samples earlier."""
    odd, even = draw_noise(5, 25, 35, 51), draw_noise(5, 25, 35)
    assert odd["z"].shape == (1, 80, 120) and odd["sine_noise"].shape == (1, 9, 480 * 69)
    np.testing.assert_array_equal(odd["z"], even["z"])
    np.testing.assert_array_equal(odd["sine_noise"].ravel(), even["sine_noise"].ravel()[:9 * 480 * 69])
    check_noise_shapes(odd, 25, 35, 51)
    with pytest.raises(InputError, match=r"after 51 prompt frames needs \(1, 9, 33120\)"):
        check_noise_shapes(even, 25, 35, 51)


@pytest.mark.parametrize("frames", [49, 52])
def test_prompt_frames_outside_the_rule_are_refused(frames):
    with pytest.raises(InputError, match="prompt_feat must have 2P or 2P\\+1 frames"):
        draw_noise(5, 25, 35, frames)

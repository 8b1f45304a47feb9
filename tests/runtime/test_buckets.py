import numpy as np
import pytest

from s3gen_runtime.buckets import DEFAULT_BUCKETS, Bucket, make_buckets, pad_to, pick_bucket
from s3gen_runtime.constants import MAX_MEL_FRAMES
from s3gen_runtime.errors import BucketError, InputError


def test_defaults_fit_the_positional_table():
    buckets = make_buckets(DEFAULT_BUCKETS)
    assert [b.mel_frames for b in buckets] == [256, 512, 1024, 2048, 4096]
    assert buckets[-1].mel_frames <= MAX_MEL_FRAMES < 2 * buckets[-1].mel_frames
    assert buckets[0] == Bucket("mel256", 256) and buckets[0].tokens == 128
    assert buckets[2].seconds == pytest.approx(20.48)


def test_make_buckets_sorts():
    assert [b.mel_frames for b in make_buckets([1024, 256])] == [256, 1024]


@pytest.mark.parametrize("sizes, match", [
    ([256, 256], "unique"),
    ([255], "multiple of 2"),
    ([0], "multiple of 2"),
    ([-4], "multiple of 2"),
    ([5002], "positional table of 5000"),
    ([256.0], "integer"),
    ([True], "integer"),
    ([], "at least one"),
])
def test_make_buckets_refuses(sizes, match):
    with pytest.raises(InputError, match=match):
        make_buckets(sizes)


def test_pick_smallest_that_fits():
    buckets = make_buckets([256, 512, 1024])
    assert pick_bucket(buckets, 1).mel_frames == 256
    assert pick_bucket(buckets, 256).mel_frames == 256
    assert pick_bucket(buckets, 257).mel_frames == 512
    assert pick_bucket(tuple(reversed(buckets)), 600).mel_frames == 1024


def test_too_long_names_request_and_limit():
    with pytest.raises(BucketError) as e:
        pick_bucket(make_buckets([256, 512]), 600)
    msg = str(e.value)
    assert "600 mel frames" in msg and "12.0 s" in msg and "'mel512' holds 512" in msg and "10.2 s" in msg


def test_pick_refuses_bad_lengths():
    with pytest.raises(InputError, match="positive integer"):
        pick_bucket(make_buckets(), 0)
    with pytest.raises(InputError, match="no buckets"):
        pick_bucket((), 10)


def test_pad_to():
    a = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    out = pad_to(a, 5, axis=2)
    assert out.shape == (1, 2, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., :3], a)
    assert np.all(out[..., 3:] == 0)
    assert pad_to(a, 4, axis=-2, value=-1.0)[0, 2:].tolist() == [[-1, -1, -1]] * 2
    assert pad_to(a, 3, axis=2) is a
    with pytest.raises(InputError, match="length 3 down to 2"):
        pad_to(a, 2, axis=2)
    with pytest.raises(InputError, match="axis 3 is out of range"):
        pad_to(a, 4, axis=3)

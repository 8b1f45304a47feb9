"""The int8 self-test's pieces: SNR, the probe file, and the refusal that names SNR, floor and CPUs."""
import math

import numpy as np
import pytest

from s3gen_runtime.errors import ArtifactError
from s3gen_runtime.selftest import check_snrs, probe_snrs, read_probe, write_probe

VNNI = {"model": "Xeon", "arch": "x86_64", "flags": ["avx2", "avx512_vnni"], "int8_dot_product": "vnni"}
AVX2 = {"model": "EPYC", "arch": "x86_64", "flags": ["avx2", "fma"], "int8_dot_product": "saturating-16bit"}


def test_nan_or_misshapen_probe_output_counts_as_minus_inf():
    refs = {"y": np.ones(100)}
    assert probe_snrs(lambda f, n: {"y": np.full(100, np.nan)}, {}, refs)["y"] == -math.inf
    assert probe_snrs(lambda f, n: {"y": np.ones(99)}, {}, refs)["y"] == -math.inf
    assert probe_snrs(lambda f, n: {"y": np.ones(100) * 1.1}, {}, refs)["y"] == pytest.approx(20.0)


def test_probe_round_trip_and_run(tmp_path):
    inputs = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    refs = {"y": inputs["x"] * 2}
    path = write_probe(tmp_path / "p.npz", inputs, refs)
    got_in, got_ref = read_probe(path)
    np.testing.assert_array_equal(got_in["x"], inputs["x"])
    snrs = probe_snrs(lambda feeds, names: {"y": feeds["x"] * 2 + 0.01}, got_in, got_ref)
    assert 30 < snrs["y"] < 60


def test_empty_probe_is_refused(tmp_path):
    path = write_probe(tmp_path / "p.npz", {"x": np.zeros(2)}, {})
    with pytest.raises(ArtifactError, match="no inputs or no references"):
        read_probe(path)


def test_passes_at_the_floor_and_refuses_below_naming_both_cpus():
    floors = {"velocity": 25.0, "other": 35.0}
    check_snrs("estimator_int8", {"velocity": 25.0, "other": 35.0}, floors, VNNI, here=AVX2)
    with pytest.raises(ArtifactError) as e:
        check_snrs("estimator_int8", {"velocity": 11.2, "other": 40.0}, floors, VNNI, here=AVX2)
    message = str(e.value)
    assert "estimator_int8: int8 self-test failed" in message and "velocity 11.2 dB (floor 25 dB)" in message
    assert "other" not in message
    assert "validated on Xeon" in message and "this CPU: EPYC" in message and "no VNNI" in message


def test_nan_output_fails():
    with pytest.raises(ArtifactError, match="-inf dB"):
        check_snrs("encoder_int8", {"mu": -math.inf}, {"mu": 25.0}, None, here=VNNI)

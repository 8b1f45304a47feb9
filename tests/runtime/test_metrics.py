"""snr_db: the one SNR used by export validation, int8 checks and the benchmarks."""
import numpy as np

from s3gen_runtime.metrics import MAX_SNR_DB, snr_db


def test_snr_of_a_ten_percent_error_is_20_db():
    ref = np.linspace(-1, 1, 101, dtype=np.float32)
    assert abs(snr_db(ref * 1.1, ref) - 20.0) < 1e-4


def test_snr_is_capped_both_ways():
    ref = np.ones(8, dtype=np.float32)
    assert snr_db(ref, ref) == MAX_SNR_DB                      # identical
    assert snr_db(ref, np.zeros(8)) == -MAX_SNR_DB             # silence as the reference
    assert snr_db(ref * (1 + 1e-12), ref) == MAX_SNR_DB        # 240 dB, clipped
    assert snr_db(ref * (1 + 1e12), ref) == -MAX_SNR_DB        # -240 dB, clipped

"""Section j's arithmetic and report (the measurement itself runs in `make bench`)."""
import pytest

from s3gen_bench.chatterbox import chatterbox_section, summarize


def run(t3, s3gen, other=0.5, audio=5.0):
    return {"t3": t3, "s3gen": s3gen, "other": other, "total": t3 + s3gen + other, "audio_s": audio}


def test_summary_takes_medians_shares_and_speedups():
    runs = {"eager": [run(10, 30), run(12, 34), run(11, 32)], "drop-in": [run(10, 8), run(12, 12), run(11, 10)]}
    s = summarize(runs)
    assert s["eager"]["s3gen"] == 32 and s["drop-in"]["s3gen"] == 10
    assert s["eager"]["s3gen_share"] == pytest.approx(32 / 43.5)
    assert s["s3gen_speedup"] == pytest.approx(3.2) and s["generate_speedup"] == pytest.approx(43.5 / 21.5)


def test_section_has_a_row_per_way_and_says_what_t3_is():
    runs = {"eager": [run(10, 30)], "drop-in": [run(10, 10)]}
    result = {"upstream": "0.1.7", "mean_tokens": 125, "repeats": 1,
              "variants": {"standard": {"class": "ChatterboxTTS", "runs": runs, "wav_max_abs_diff": [3e-5],
                                        "summary": summarize(runs)}}}
    text = "\n".join(chatterbox_section(result))
    assert "| ChatterboxTTS | eager | 5.0 | 10.0 | 30.0 | 0.50 | 40.5 | 74 % |" in text
    assert "| ChatterboxTTS | drop-in |" in text and "3.00x faster" in text and "random weights" in text
    assert "differ by at most 3.0e-05" in text
    assert "Skipped: no upstream" in "\n".join(chatterbox_section({"skipped": "no upstream"}))

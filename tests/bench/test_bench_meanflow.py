"""Section e's vocoder columns and targets (bench/meanflow.py), from a hand-made table: pure, no measuring."""
from __future__ import annotations

from s3gen_bench.meanflow import meanflow_section, meanflow_target, vocoder_speedups, vocoder_target


def _row(config, seconds, e2e, vocoder, speedup=None):
    return {"config": config, "audio_seconds": seconds, "e2e_seconds": e2e, "rtf": e2e / seconds,
            "speedup_vs_eager": speedup, "encoder_seconds": 0.1, "estimator_call_seconds": 0.2,
            "vocoder_seconds": vocoder, "vs_eager": {"mel_snr_db": 50.0}, "peak_rss_mb": 900.0}


def _meanflow():
    """Eager HiFT 2 s / 4 s; ORT fp32 1 s (2x) at 5 s but 3.2 s (1.25x) at 10 s; int8 2.2x / 1.9x end to end."""
    table = [_row("eager", 5, 4.0, 2.0), _row("ort-fp32", 5, 2.5, 1.0, 1.6), _row("ort-int8", 5, 1.8, 1.0, 2.2),
             _row("eager", 10, 8.0, 4.0), _row("ort-fp32", 10, 6.0, 3.2, 1.33), _row("ort-int8", 10, 4.2, 3.2, 1.9)]
    return {"table": table, "settings": {"prompt_tokens": 25, "solver": "meanflow", "steps": 2}, "notes": []}


def test_vocoder_speedup_is_eager_hift_over_the_row_at_the_same_length():
    x = vocoder_speedups(_meanflow()["table"])
    assert x[("ort-fp32", 5)] == 2.0 and x[("ort-fp32", 10)] == 1.25 and x[("eager", 10)] == 1.0


def test_vocoder_target_names_the_worst_length_and_the_shortfall():
    t = vocoder_target(_meanflow())
    assert not t["met"]
    assert t["measured"] == "2.00x @ 5 s, 1.25x @ 10 s"
    assert t["why"] == "short by 1.20x at 10 s"
    assert vocoder_target({"table": [_row("ort-fp32", 5, 2.5, 1.0, 1.6)]}) is None, "no eager row: no ratio"


def test_int8_end_to_end_target_has_its_own_floor():
    t = meanflow_target(_meanflow(), "ort-int8", 2.0)
    assert t["target"] == "meanflow end-to-end ORT int8 >= 2x eager meanflow"
    assert not t["met"] and t["measured"] == "2.20x @ 5 s, 1.90x @ 10 s"
    assert t["why"].startswith("at 10 s (1.90x) the vocoder is 76%")
    assert meanflow_target(_meanflow())["met"] is False   # fp32: 1.33x at 10 s


def test_section_table_has_the_vocoder_column():
    lines = meanflow_section(_meanflow())
    assert "| vocoder x |" in lines[4]
    fp32_10 = next(line for line in lines if line.startswith("| 10 s | ort-fp32 |"))
    assert "| 3.20 | 1.25x | 53% |" in fp32_10

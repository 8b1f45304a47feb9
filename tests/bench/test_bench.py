"""scripts/bench.py --quick end to end (the CI exercise of `make bench-quick`): every section writes its
JSON with finite numbers, the summary states the machine and that the weights are synthetic, plots exist."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The quick bench end to end is ~3 min of eager and ORT synthesis: make test-all runs it, make test the rest.
slow_bench = pytest.mark.slow
SECTIONS = ("speed", "fidelity", "scaling", "memory", "voice", "streaming", "machine")
PLOTS = ("speed.png", "speed_components.png", "fidelity.png", "scaling.png", "memory.png", "streaming.png")


def numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


@pytest.fixture(scope="module")
def quick(exported, synthetic_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results"
    work = tmp_path_factory.mktemp("bench_work")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--quick", "--out", str(out),
                           "--checkpoint", str(synthetic_checkpoint("standard")), "--artifacts",
                           str(exported("standard")), "--workdir", str(work), "--meanflow",
                           str(synthetic_checkpoint("meanflow")), str(exported("meanflow"))],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def load(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


@slow_bench
def test_every_section_writes_finite_json(quick):
    out, log = quick
    for name in SECTIONS:
        data = load(out, name)
        values = list(numbers(data))
        assert values and all(math.isfinite(v) for v in values), name
    for marker in ("[a]", "[b]", "[c]", "[d]", "[f]", "[g]", "[h]"):
        assert marker in log


@slow_bench
def test_speed_has_eager_and_runtime_numbers(quick):
    out, _ = quick
    speed = load(out, "speed")
    rows = {r["config"]: r for r in speed["table"]}
    for config in ("eager", "ort-fp32"):
        r = rows[config]
        for key in ("e2e_seconds", "rtf", "encoder_seconds", "estimator_call_seconds", "vocoder_seconds",
                    "speedup_vs_eager", "peak_rss_mb"):
            assert r[key] is not None and r[key] > 0, (config, key)
        assert r["vs_eager"]["mel_snr_db"] is not None
    assert rows["eager"]["speedup_vs_eager"] == pytest.approx(1.0)
    ceiling = speed["gemm_ceiling"]   # measured in the same run as the rows it bounds
    assert ceiling["fp32"]["gflops"] > 0 and ceiling["int8"]["gflops"] > 0
    assert rows["ort-fp32"]["vs_eager"]["mel_snr_db"] > 60   # same fp32 network, same noise
    # the fixture has no int8 graphs and --quick does not compile: both say why instead of a number
    assert speed["configs"]["ort-int8"]["status"] == "skipped" and speed["configs"]["ort-int8"]["reason"]
    assert speed["configs"]["compile"]["status"] == "skipped" and speed["configs"]["compile"]["reason"]


@slow_bench
def test_fidelity_scaling_memory(quick):
    out, _ = quick
    fid = load(out, "fidelity")
    assert {r["solver"] for r in fid["table"]} == {"euler", "heun", "midpoint", "dpmpp2m"}
    assert all(r["rel_rms_mean"] > 0 for r in fid["table"])
    assert fid["convergence"]["check_rel_rms"] is not None
    sc = load(out, "scaling")
    # The fitted exponent is a timing: only its presence is checked (finiteness: the test above).
    assert {"exponent", "prefactor", "r2"} <= set(sc["fit"]["ort-fp32"])
    assert [r["batch"] for r in sc["batch"]] == [1, 2]
    mem = load(out, "memory")
    assert mem["precisions"]["fp32"]["weights_mb"] > 100
    assert mem["processes"]["ort-fp32"]["peak_rss_mb"] > 0


@slow_bench
def test_voice_preparation_is_measured_torch_free(quick):
    out, _ = quick
    voice = load(out, "voice")
    assert voice["torch_imported"] is False   # the child process is what a torch-free service runs
    assert voice["used_seconds"] == 10.0 and voice["prompt_frames"] in (2 * voice["prompt_tokens"],
                                                                       2 * voice["prompt_tokens"] + 1)
    assert len(voice["runs"]) == 1 and voice["peak_rss_mb"] >= voice["rss_after_load_mb"] > 0
    m = voice["median"]
    assert m["wall"] >= m["frontends"] + m["speaker_encoder"] + m["tokenizer"] > 0


@slow_bench
def test_summary_and_plots(quick):
    out, _ = quick
    summary = (out / "summary.md").read_text()
    for text in ("synthetic checkpoint", "CPU:", "cores", "RAM", "onnxruntime", "torch", "Date:", "## Targets",
                 "## a. Speed", "% of GEMM ceiling", "## b. Solver fidelity", "## c. Scaling", "## d. Memory", "## f. Voice preparation"):
        assert text in summary, text
    for name in PLOTS:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name


@slow_bench
def test_report_rebuilds_from_the_json(quick, tmp_path):
    import shutil

    from s3gen_bench import rebuild_report

    out, _ = quick
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for name in PLOTS + ("summary.md",):
        (copy / name).unlink()
    rebuild_report(copy, progress=lambda m: None)
    assert (copy / "summary.md").read_text() == (out / "summary.md").read_text()
    assert all((copy / name).is_file() for name in PLOTS)


@slow_bench
def test_streaming_section_measures_seams_and_first_audio(quick):
    out, _ = quick
    st = load(out, "streaming")
    row = st["quality"][0]
    assert row["vocoder_only"]["wav_snr_db"] > 40.0 and row["click_score"] > 0
    cost = st["cost"][0]
    assert 0 < cost["ttfa_s"] < cost["total_s"] and st["machine"]["cpu_model"]
    assert "## g. Streaming synthesis" in (out / "summary.md").read_text()


def test_streaming_cost_on_other_artifacts(exported):
    """The default schedule on meanflow artifacts: its own solver setting, a first piece before the end."""
    from s3gen_bench.streaming import other_artifact_costs, streaming_section
    from s3gen_runtime.pipeline import S3GenRuntime

    mf = S3GenRuntime(exported("meanflow"))
    lines = []
    rows = other_artifact_costs({"meanflow fp32": mf}, prompt_tokens=10, seconds=1.6, steps=1, progress=lines.append)
    (row,) = rows
    assert (row["artifacts"], row["solver"], row["steps"]) == ("meanflow fp32", "meanflow", 2)
    assert row["chunks"] == 2 and 0 < row["ttfa_s"] < row["total_s"] and row["offline_s"] > 0
    assert "meanflow fp32" in lines[0]
    table = streaming_section({"settings": {"variant": "standard", "solver": "euler", "steps": 1, "prompt_tokens": 10,
                                            "hold_frames": 12, "quality_seconds": 1.0},
                               "quality": [], "cost": [], "other_artifacts": rows})
    assert any(line.startswith("| meanflow fp32 | 1.6 s | meanflow 2 | 2 |") for line in table)


def test_profile_counts_attention_once(exported):
    """The guided graph wraps each attention in an If (unpadded_attention.py): the If's kernel time is its
    branch's, which the profiler also reports on its own, so only the inner nodes are counted."""
    from s3gen_bench.scaling import op_profiles
    from s3gen_runtime.manifest import load_manifest

    folder = exported("standard")
    graph = folder / load_manifest(folder, verify=False).component("estimator_cfg").file
    (profile,) = op_profiles(graph, [64]).values()
    assert "If" not in profile["ops"]
    assert profile["groups"]["fused attention (MultiHeadAttention: QK^T, softmax, AV)"] > 0
    assert sum(profile["groups"].values()) == pytest.approx(1.0)


def test_sections_keep_the_date_they_were_measured(tmp_path):
    """A --sections rerun dates only its own sections; the summary then says which run measured what."""
    from s3gen_bench import section_dates
    from s3gen_bench.report import section_dates_line

    assert section_dates(tmp_path, ("speed",), "D1") == {"speed": "D1"}
    for name in ("speed", "scaling", "streaming"):
        (tmp_path / f"{name}.json").write_text("{}")
    # a machine.json from before section dates were kept: its date covers every section JSON there, but
    # for one that carries its own machine record
    (tmp_path / "machine.json").write_text(json.dumps({"date": "D1"}))
    (tmp_path / "streaming.json").write_text(json.dumps({"machine": {"date": "D0"}}))
    assert section_dates(tmp_path, ("scaling",), "D2") == {"speed": "D1", "scaling": "D2", "streaming": "D0"}
    (tmp_path / "streaming.json").write_text("{}")
    dates = section_dates(tmp_path, ("scaling",), "D2")
    assert dates == {"speed": "D1", "scaling": "D2", "streaming": "D1"}
    (tmp_path / "machine.json").write_text(json.dumps({"date": "D2", "section_dates": dates}))
    assert section_dates(tmp_path, ("streaming",), "D3") == {"speed": "D1", "scaling": "D2", "streaming": "D3"}
    (line,) = section_dates_line({"section_dates": dates})
    assert line.endswith("speed, streaming at D1; scaling at D2")
    assert section_dates_line({"section_dates": {"speed": "D1", "scaling": "D1"}}) == []

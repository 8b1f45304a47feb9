"""scripts/serving_layouts.py for real: it starts a server per layout on loopback, load-tests it, stops it,
and tabulates the layouts side by side."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "serving_layouts.py"


@pytest.mark.slow   # a server per layout, load-tested: ~40 s (make test-all)
def test_layouts_are_load_tested_side_by_side(standard_artifacts, golden, tmp_path):
    utterance = golden("s3gen_p25_n35_seed0.npz")
    out = tmp_path / "layouts.json"
    subprocess.run([sys.executable, str(SCRIPT), str(standard_artifacts), "--tokens", str(utterance), "--voice",
                    str(utterance), "--layout", "1:1:4:spin", "--layout", "2:1:1:sleep", "--levels", "1,2",
                    "--reps", "1", "--jobs", "2", "--requests-per-client", "1", "--steps", "1", "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=600)
    report = json.loads(out.read_text())
    assert list(report["runs"]) == ["1:1:4:spin", "2:1:1:sleep"]
    for name, (run,) in report["runs"].items():
        levels = {r["concurrency"]: r for r in run["levels"]}
        assert set(levels) == {1, 2}
        assert all(r["errors"] == 0 and r["mismatches"] == 0 for r in levels.values()), name
    # max batch 1 never batches; the other layout's batch sizes are whatever Triton formed, but only up to 4
    assert set(report["runs"]["2:1:1:sleep"][0]["levels"][1]["batch_sizes"]) == {"1"}
    table = out.with_suffix(".md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| 1:1:4:spin |") or line.startswith("| 2:1:1:sleep |")]
    assert len(rows) == 2 and all(row.endswith("| 0 | 0 |") for row in rows), table
    best = {level: max(r[0]["levels"][i]["audio_s_per_s"] for r in report["runs"].values())
            for i, level in enumerate((1, 2))}
    assert f"2 vs 1 across them: {best[2] / best[1]:.2f}x" in table.splitlines()[-1]
    # the table comes back from the JSON alone
    out.with_suffix(".md").unlink()
    subprocess.run([sys.executable, str(SCRIPT), "--report-only", "--out", str(out)], check=True, timeout=60)
    assert out.with_suffix(".md").read_text() == table

"""The suite refuses to start, with one clear message, where the disk cannot hold its checkpoints and exports."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_suite_refuses_to_start_without_enough_free_disk(tmp_path):
    env = dict(os.environ, S3GEN_TEST_MIN_FREE_GIB="1e9")    # more than any disk has
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
                          str(tmp_path / "base"), "tests/test_disk_guard.py"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "GiB free under" in run.stdout and "S3GEN_TEST_MIN_FREE_GIB" in run.stdout


def test_suite_starts_when_the_disk_has_room(tmp_path):
    env = dict(os.environ, S3GEN_TEST_MIN_FREE_GIB="0")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
                          str(tmp_path / "base"), "tests/test_layout.py"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr

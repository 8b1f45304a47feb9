"""The CLI on a runtime-only install (no torch, onnx or onnxscript): export-side commands say which
extra to install in one line; runtime commands still work. Simulated in fresh interpreters."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from s3gen_runtime.voice import Voice, save_voice

# sys.modules[name] = None makes `import name` raise ModuleNotFoundError, as on an install without it.
RUNTIME_ONLY = textwrap.dedent("""
    import sys
    for name in ("torch", "onnx", "onnxscript"):
        sys.modules[name] = None
    from s3gen_cli.main import main
    main(sys.argv[1:], prog_name="s3gen-aot")
""")


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNTIME_ONLY, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "tokens.txt").write_text("12 345 6000")
    save_voice(Voice.validated(rng.integers(0, 6561, 2), rng.standard_normal((4, 80)).astype(np.float32),
                               rng.standard_normal(192).astype(np.float32)), tmp_path / "voice.npz")
    (tmp_path / "ckpt.safetensors").write_bytes(b"not read: the command stops at its first torch import")
    (tmp_path / "conds.pt").write_bytes(b"likewise")
    (tmp_path / "artifacts").mkdir()
    return tmp_path


EXPORT_SIDE = {
    "export": ["export", "{d}/ckpt.safetensors", "--out", "{d}/out"],
    "validate": ["validate", "{d}/artifacts", "--checkpoint", "{d}/ckpt.safetensors"],
    "synth-checkpoint": ["synth-checkpoint", "{d}/new.safetensors"],
    "voice-from-conds": ["voice-from-conds", "{d}/conds.pt", "{d}/voice_out.npz"],
    "synth": ["synth", "--checkpoint", "{d}/ckpt.safetensors", "--tokens", "{d}/tokens.txt", "--voice",
              "{d}/voice.npz", "--seed", "1", "--out", "{d}/o.wav"],
}


@pytest.mark.parametrize("command", sorted(EXPORT_SIDE))
def test_export_side_command_names_the_extra_in_one_line(files, command):
    proc = run_cli(*(a.format(d=files) for a in EXPORT_SIDE[command]))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr      # no traceback
    assert lines[0].startswith(f"error: `s3gen-aot {command}` needs the export dependencies")
    assert "install s3gen-aot[export]" in lines[0]


def test_synth_artifacts_runs_on_a_runtime_only_install(exported, files):
    out = files / "o.wav"
    proc = run_cli("synth", "--artifacts", exported("meanflow"), "--tokens", files / "tokens.txt", "--voice",
                   files / "voice.npz", "--seed", "1", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.is_file() and "RTF" in proc.stdout

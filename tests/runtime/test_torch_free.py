"""The runtime never imports torch or the export package: checked in fresh interpreters."""
import subprocess
import sys
import textwrap

import pytest

RUNTIME_SCRIPT = textwrap.dedent("""
    import importlib, pkgutil, sys
    import numpy as np
    import s3gen_runtime
    def import_all(path, prefix):
        for m in pkgutil.iter_modules(path, prefix):
            module = importlib.import_module(m.name)
            if m.ispkg:
                import_all(module.__path__, m.name + ".")
    import_all(s3gen_runtime.__path__, "s3gen_runtime.")
    from s3gen_runtime.pipeline import S3GenRuntime
    from s3gen_runtime.voice import Voice
    rng = np.random.default_rng(0)
    voice = Voice.validated(rng.integers(0, 6561, 2), rng.standard_normal((4, 80)).astype(np.float32),
                            rng.standard_normal(192).astype(np.float32))
    result = S3GenRuntime(sys.argv[1]).synthesize(rng.integers(0, 6561, 3), voice, seed=0, steps=1)
    assert result.wav.shape == (2880,) and np.all(np.isfinite(result.wav))
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "s3gen_export", "onnx"))
    assert not leaked, f"the runtime imported {leaked}"
    print("torch-free ok")
""")

CLI_SCRIPT = textwrap.dedent("""
    import sys
    from s3gen_cli.main import main
    code = "no exit"
    try:
        main(sys.argv[1:])
    except SystemExit as e:
        code = e.code
    assert code == 0, f"synth exited {code}"
    leaked = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
    assert not leaked, f"synth --artifacts imported {leaked[:5]}"
    print("cli torch-free ok")
""")


def run_python(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_runtime_synthesis_never_imports_torch(exported):
    proc = run_python(RUNTIME_SCRIPT, exported("standard"))
    assert proc.returncode == 0, proc.stderr
    assert "torch-free ok" in proc.stdout


def test_cli_synth_artifacts_never_imports_torch(exported, tmp_path):
    import numpy as np
    from s3gen_runtime.voice import Voice, save_voice

    rng = np.random.default_rng(1)
    (tmp_path / "tokens.txt").write_text("12 345 6000")
    save_voice(Voice.validated(rng.integers(0, 6561, 2), rng.standard_normal((4, 80)).astype(np.float32),
                               rng.standard_normal(192).astype(np.float32)), tmp_path / "voice.npz")
    out = tmp_path / "out.wav"
    proc = run_python(CLI_SCRIPT, "synth", "--artifacts", exported("meanflow"), "--tokens", tmp_path / "tokens.txt",
                      "--voice", tmp_path / "voice.npz", "--seed", "3", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cli torch-free ok" in proc.stdout and "RTF" in proc.stdout
    assert out.is_file()


@pytest.mark.parametrize("module", ["s3gen_runtime.backends", "s3gen_runtime.backends.base", "s3gen_runtime.pipeline"])
def test_backend_modules_do_not_import_onnxruntime_eagerly(module):
    """A TensorRT-only deployment must be able to import the runtime without onnxruntime."""
    script = f"import sys, {module}; assert 'onnxruntime' not in sys.modules, 'onnxruntime imported'"
    proc = run_python(script)
    assert proc.returncode == 0, proc.stderr

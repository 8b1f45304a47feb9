"""The front ends are torch-free, and importing them loads none of the `voice` extra's packages."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import s3gen_runtime.frontend as fe
    lazy = sorted(m for m in sys.modules if m.split(".")[0] in ("soundfile", "soxr", "pyloudnorm", "scipy"))
    assert not lazy, f"importing the front end loaded {lazy}"
    x = (0.1 * np.sin(np.arange(48000) / 10)).astype(np.float32)
    wav24 = fe.crop_24k(fe.load_24k(x, 44100))
    wav24 = fe.normalize_loudness(wav24, 24000)
    wav16 = fe.resample_24k_to_16k(wav24)
    fe.prompt_mel(wav24), fe.tokenizer_log_mel(wav16), fe.speaker_fbank(wav16)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchaudio", "librosa", "s3gen_export"))
    assert not leaked, f"the front end imported {leaked}"
    print("frontend torch-free ok")
""")


def test_frontend_never_imports_torch():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "frontend torch-free ok" in proc.stdout

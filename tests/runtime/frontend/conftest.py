"""Fixtures of the front-end tests: the voice golden files, and small audio files written on the fly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

VOICE_CASES = ["voice_aishell_16k", "voice_espeak_enus_22k"]


@pytest.fixture(params=VOICE_CASES)
def voice_golden(request, golden):
    """(dict of the golden arrays, path of the case's audio file) for each voice golden case."""
    path = golden(f"voice/{request.param}.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    wav = path.parent / str(arrays["audio_file"])
    assert wav.is_file(), f"{wav} missing beside {path.name}"
    return arrays, wav


@pytest.fixture
def write_wav(tmp_path):
    """write_wav(name, samples, sr, subtype='PCM_16') -> Path of a WAV file written with soundfile."""
    import soundfile as sf   # the `voice` extra: make setup installs it, so a missing one is a failure

    def write(name: str, samples: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
        path = tmp_path / name
        sf.write(str(path), samples, sr, subtype=subtype)
        return path

    return write

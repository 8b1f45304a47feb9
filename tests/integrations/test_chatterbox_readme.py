"""The README's "Use with Chatterbox" snippet runs as written, with from_pretrained giving the tests' TTS
objects (no real weights here) and the artifact folders the tests' exports."""
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def snippet() -> str:
    text = README.read_text()
    section = text[text.index("## Use with Chatterbox"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_snippet_runs(make_tts, exported, monkeypatch):
    from chatterbox.tts import ChatterboxTTS
    from chatterbox.tts_turbo import ChatterboxTurboTTS

    monkeypatch.setattr(ChatterboxTTS, "from_pretrained", classmethod(lambda cls, device: make_tts("standard")))
    monkeypatch.setattr(ChatterboxTurboTTS, "from_pretrained", classmethod(lambda cls, device: make_tts("meanflow")))
    code = snippet()
    assert '"artifacts/s3gen"' in code and '"artifacts/s3gen_meanflow"' in code
    code = (code.replace('"artifacts/s3gen_meanflow"', repr(str(exported("meanflow"))))
            .replace('"artifacts/s3gen"', repr(str(exported("standard")))))
    torch.manual_seed(2)   # a seed whose tiny T3 stops early: the snippet is checked, not the speed
    scope = {}
    exec(compile(code, str(README), "exec"), scope)
    assert scope["tts"].s3gen.runtime.variant == "standard"
    assert scope["turbo"].s3gen.runtime.variant == "meanflow"
    assert scope["wav"].ndim == 2 and torch.isfinite(scope["wav"]).all()


def test_snippet_is_found():
    with pytest.raises(AttributeError):
        re.search(r"```python\n(.*?)```", "no code here", re.S).group(1)
    assert "install(" in snippet()

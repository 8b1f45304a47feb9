"""scripts/chatterbox_tts.py: text -> wav through upstream's generate with the drop-in, printing T3's and
S3Gen's seconds (run here with the tests' Turbo object in place of from_pretrained's)."""
import importlib.util
from pathlib import Path

import soundfile
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "chatterbox_tts.py"


def load_script():
    spec = importlib.util.spec_from_file_location("chatterbox_tts_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_writes_the_wav_and_prints_where_time_went(make_tts, exported, tmp_path, capsys):
    out = tmp_path / "hello.wav"
    torch.manual_seed(2)
    assert load_script().main(["hello there.", "--artifacts", str(exported("meanflow")), "--turbo",
                               "--out", str(out)], tts=make_tts("meanflow")) == 0
    printed = capsys.readouterr().out
    samples, rate = soundfile.read(str(out))
    assert rate == 24000 and samples.shape[0] > 0 and samples.shape[0] % 480 == 0
    assert f"{samples.shape[0] / 24000:.2f} s of audio" in printed
    assert "T3 " in printed and "S3Gen " in printed and "estimator" in printed

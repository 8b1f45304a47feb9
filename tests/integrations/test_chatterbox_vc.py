"""ChatterboxVC on the drop-in: its whole S3Gen surface in one call (tokenizer on the source clip, embed_ref on
the target voice, inference)."""
import numpy as np
import pytest
import soundfile
import torch

from s3gen_export.speechlike import speechlike_recording
from s3gen_chatterbox import S3GenDropIn, install

from conftest import random_ref_dict


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vc")
    source, target = folder / "source.wav", folder / "target.wav"
    soundfile.write(str(source), speechlike_recording(0.6, 16000, seed=4), 16000, subtype="PCM_16")
    soundfile.write(str(target), speechlike_recording(2.0, 24000, seed=5), 24000, subtype="PCM_16")
    return source, target


def voice_conversion(upstream_model):
    from chatterbox.vc import ChatterboxVC

    return ChatterboxVC(upstream_model("standard"), "cpu", ref_dict=random_ref_dict())


def test_voice_conversion_runs_on_the_drop_in(upstream, upstream_model, exported, clips):
    source, target = clips
    vc = voice_conversion(upstream_model)
    install(vc, exported("standard"))
    assert isinstance(vc.s3gen, S3GenDropIn)
    torch.manual_seed(0)
    wav = vc.generate(str(source), target_voice_path=str(target))
    tokens, _ = vc.s3gen.tokenizer(torch.from_numpy(soundfile.read(str(source), dtype="float32")[0])[None])
    assert wav.shape == (1, 480 * 2 * tokens.shape[1])        # F = 2P for a 2 s target at 24 kHz
    assert torch.isfinite(wav).all() and float(wav.abs().max()) > 0
    assert vc.ref_dict["prompt_feat"].shape == (1, 100, 80)   # embed_ref of the 2 s target at 24 kHz


@pytest.mark.slow
def test_voice_conversion_equals_upstreams(upstream, upstream_model, exported, clips):
    """Same source clip, same voice, same seed: upstream's tokenizer and eager S3Gen vs the drop-in's."""
    source, _ = clips
    vc = voice_conversion(upstream_model)
    torch.manual_seed(0)
    wav_up = vc.generate(str(source))
    install(vc, exported("standard"))
    torch.manual_seed(0)
    wav = vc.generate(str(source))
    assert wav.shape == wav_up.shape
    assert float(np.abs(wav.numpy() - wav_up.numpy()).max()) <= 2e-3

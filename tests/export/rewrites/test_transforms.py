"""Prepare transforms: each one changes the form, not the maths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from s3gen_export.model.dsp import ConvSpectral
from s3gen_export.model.s3gen import build_model
from s3gen_export.model.synthetic import synthetic_state_dict
from s3gen_export.rewrites.transforms import count_weight_norm, fold_weight_norm, inplace_ops, prepare_for_export, use_conv_spectral
from s3gen_export.components import vocoder as vocoder_component
from s3gen_export.components.base import Case


@pytest.fixture(scope="module")
def weights():
    m = build_model("standard")
    layout = {k: (tuple(v.shape), "float32") for k, v in m.state_dict().items()}
    return {k: torch.from_numpy(a) for k, a in synthetic_state_dict(layout).items()}


def fresh(weights):
    """A new model per use: deepcopy does not copy parametrized modules faithfully."""
    m = build_model("standard")
    m.load_state_dict(weights)
    return m


@pytest.fixture(scope="module")
def model(weights):
    return fresh(weights)


def vocoder_inputs(frames=(24, 15)):
    feeds = vocoder_component.make_inputs(Case("t", tuple((0, f // 2) for f in frames)), np.random.default_rng(3))
    return [torch.from_numpy(feeds[n]) for n in ("mel", "mel_lengths", "sine_phase", "sine_noise")]


@torch.inference_mode()
def run_vocoder(model, frames=(24,)):
    return model.mel2wav(*vocoder_inputs(frames))["wav"]


def test_fold_weight_norm_removes_parametrizations_and_keeps_outputs(model, weights):
    folded = fresh(weights)
    assert count_weight_norm(folded) > 0
    fold_weight_norm(folded)
    assert count_weight_norm(folded) == 0
    assert not any("parametrizations" in k for k in folded.state_dict())
    assert float((run_vocoder(folded) - run_vocoder(model)).abs().max()) <= 1e-5


def test_conv_spectral_matches_torch_stft_istft(model, weights):
    conv = use_conv_spectral(fresh(weights))
    assert isinstance(conv.mel2wav.spectral, ConvSpectral)
    # measured 4e-5 (fp32 DFT-by-matmul vs FFT, through exp() magnitudes); golden wav tolerance 2e-3
    assert float((run_vocoder(conv) - run_vocoder(model)).abs().max()) <= 5e-4


def test_prepared_graph_has_no_inplace_ops(weights):
    from s3gen_export.rewrites.conv_layout import Conv1dAs2d

    prepared = prepare_for_export(fresh(weights))
    # the export form of the vocoder's convs (conv_layout) is part of the preparation
    assert isinstance(prepared.mel2wav.resblocks[0].convs1[0], Conv1dAs2d)
    assert isinstance(prepared.mel2wav.f0_predictor.condnet[0], Conv1dAs2d)
    graph = vocoder_component.VocoderGraph(prepared).eval()
    args = tuple(vocoder_inputs((24, 15)))
    program = torch.export.export(graph, args, strict=False)
    assert inplace_ops(program.graph) == []


def test_inplace_detector_finds_inplace_ops():
    class Bad(torch.nn.Module):
        def forward(self, x):
            y = x.clone()
            y.add_(1.0)
            return y
    program = torch.export.export(Bad(), (torch.ones(3),), strict=False)
    assert inplace_ops(program.graph), "the check must be able to fail"


def test_2d_vocoder_convs_keep_state_dict_and_outputs(weights):
    import copy

    from s3gen_export.rewrites.conv_layout import Conv1dAs2d, conv1d_as_2d

    reference = use_conv_spectral(fold_weight_norm(fresh(weights))).mel2wav
    voc = copy.deepcopy(reference)   # folded: no parametrizations left to copy
    keys = list(voc.state_dict())
    count = conv1d_as_2d(voc)
    assert count == sum(isinstance(m, Conv1dAs2d) for m in voc.modules()) > 70
    assert type(voc.ups[0]) is torch.nn.ConvTranspose1d   # no NCHWc kernel for these: left 1-D
    assert conv1d_as_2d(voc) == 0, "switching twice must leave the layers alone"
    assert list(voc.state_dict()) == keys
    voc.load_state_dict(reference.state_dict())
    with torch.inference_mode():
        got, want = (v(*vocoder_inputs((24, 15)))["wav"] for v in (voc, reference))
    assert float((got - want).abs().max()) <= 1e-5


def test_2d_conv_refuses_padding_it_cannot_express():
    from s3gen_export.rewrites.conv_layout import conv1d_as_2d

    layer = torch.nn.Sequential(torch.nn.Conv1d(2, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match=r"0: only zero, explicit padding.*reflect"):
        conv1d_as_2d(layer)


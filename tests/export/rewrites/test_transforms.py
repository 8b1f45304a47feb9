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
    prepared = prepare_for_export(fresh(weights))
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

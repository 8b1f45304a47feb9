"""The random draws upstream S3Gen makes for one request, in upstream's order and from torch's generators,
handed to the runtime as explicit noise. The same torch seed then gives upstream's noise, and so its mel.

chatterbox-tts 0.1.6 / 0.1.7, `S3Token2Wav.inference` with finalize=True, one request of P prompt tokens,
N new tokens and a prompt mel of F frames (T = 2(P + N) flow frames, M = T - F vocoded frames):
  meanflow: noised_mels = randn(1, 80, 2N)                  (flow_inference, on the model's device)
  both:     z = randn_like(mu) (1, 80, T)                   (CausalConditionalCFM.forward); meanflow then
            overwrites z[..., 2P:] with noised_mels
  HiFT:     phase = Uniform(-pi, pi).sample((1, 9, 1))      (SineGen: torch's CPU generator, whatever the
            device), phase[:, 0] = 0
            sine_noise = randn_like(sine_waves) (1, 9, 480 M)
            randn_like(uv) (1, 480 M, 1)                    (SourceModuleHnNSF's unused noise branch: drawn
                                                             only to leave the generator where upstream does)
A replaced model whose CFM still holds a fixed `rand_noise` buffer (as chatterbox-tts <= 0.1.5 built it)
gives its z from that buffer instead, as that upstream did.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from s3gen_runtime.constants import MEL_BINS, N_HARMONICS, SAMPLES_PER_FRAME, TOKEN_MEL_RATIO


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())


def flow_noise(prompt_tokens: int, new_tokens: int, *, meanflow: bool, device, dtype,
               fixed_noise: torch.Tensor | None = None) -> np.ndarray:
    """z (1, 80, 2(P + N)) float32, drawn as upstream's flow does for this request."""
    frames = TOKEN_MEL_RATIO * (prompt_tokens + new_tokens)
    noised = None
    if meanflow:
        noised = torch.randn(1, MEL_BINS, TOKEN_MEL_RATIO * new_tokens, dtype=dtype, device=device)
    if fixed_noise is not None:
        if fixed_noise.shape[-1] < frames:
            raise ValueError(f"the replaced model's rand_noise holds {fixed_noise.shape[-1]} frames; "
                             f"this request needs {frames}")
        z = fixed_noise[:, :, :frames].to(device=device, dtype=dtype).clone()
    else:
        z = torch.randn(1, MEL_BINS, frames, dtype=dtype, device=device)
    if noised is not None:
        z[..., TOKEN_MEL_RATIO * prompt_tokens:] = noised
    return _numpy(z)


def sine_draws(vocoded_frames: int, *, device) -> tuple[np.ndarray, np.ndarray]:
    """(sine_phase (1, 9, 1), sine_noise (1, 9, 480 M)) float32, drawn as upstream's HiFT source does."""
    samples = SAMPLES_PER_FRAME * vocoded_frames
    phase = torch.distributions.Uniform(low=-math.pi, high=math.pi).sample((1, N_HARMONICS, 1))
    phase[:, 0, :] = 0
    noise = torch.randn(1, N_HARMONICS, samples, device=device)
    torch.randn(1, samples, 1, device=device)   # the unused noise branch: keeps the generator in step
    return _numpy(phase), _numpy(noise)


__all__ = ["flow_noise", "sine_draws"]

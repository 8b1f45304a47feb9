"""Eager PyTorch reference of upstream `S3Token2Wav.inference` (finalize=True): the parity oracle.

tokens + voice + noise -> mel -> wav, with upstream's algorithm: the standard model runs Euler on
the cosine grid with classifier-free guidance (rate 0.7, 10 steps); the meanflow model runs 2
linear steps with r and no guidance. All randomness (flow noise z, sine phase, sine noise) is given.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from s3gen_runtime.audio import apply_trim_fade

from .estimator import GuidedEstimator
from .s3gen import S3Gen


@dataclass(frozen=True)
class Noise:
    z: np.ndarray            # (1, 80, 2(P+N)) x(t=0) for the whole sequence, prompt frames included
    sine_phase: np.ndarray   # (1, 9, 1)
    sine_noise: np.ndarray   # (1, 9, 480 (2(P+N) - F)): the vocoded frames only, 2N - 1 when F = 2P + 1


def time_grid(n_timesteps: int, cosine: bool) -> torch.Tensor:
    """Upstream's t_span, computed with the same float32 torch ops."""
    t = torch.linspace(0, 1, n_timesteps + 1, dtype=torch.float32)
    return 1 - torch.cos(t * 0.5 * torch.pi) if cosine else t


def euler_solve(model: S3Gen, x: torch.Tensor, mu, mask, spks, cond, n_timesteps: int,
                cfg_rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's solver loop: Euler with x += (r - t) * v. Returns (x1, t_span)."""
    estimator = model.flow.decoder.estimator
    meanflow = estimator.meanflow
    t_span = time_grid(n_timesteps, cosine=not meanflow)
    batch = x.shape[0]
    guided = GuidedEstimator(estimator)
    rate = torch.full((batch,), cfg_rate, dtype=x.dtype)
    for t, r in zip(t_span[:-1], t_span[1:]):
        t_b, r_b = t.expand(batch), r.expand(batch)
        if meanflow:
            v = estimator(x, mask, mu, t_b, spks, cond, r_b)
        else:
            v = guided(x, mask, mu, t_b, spks, cond, rate)
        x = x + (r - t) * v
    return x, t_span


@torch.inference_mode()
def synthesize(model: S3Gen, speech_tokens: np.ndarray, prompt_token: np.ndarray, prompt_feat: np.ndarray,
               embedding: np.ndarray, noise: Noise, n_timesteps: int | None = None,
               cfg_rate: float | None = None) -> dict[str, np.ndarray]:
    """Batch-1 synthesis; returns every recorded stage (mu, spks, mel_full, mel, f0, source, wav, ...)."""
    cfg = model.cfg
    n_timesteps = n_timesteps or cfg.n_timesteps
    cfg_rate = cfg.cfg_rate if cfg_rate is None else cfg_rate
    tokens = torch.as_tensor(np.asarray(speech_tokens, dtype=np.int64)).reshape(1, -1)
    prompt = torch.as_tensor(np.asarray(prompt_token, dtype=np.int64)).reshape(1, -1)
    feat = torch.as_tensor(np.asarray(prompt_feat, dtype=np.float32)).reshape(1, -1, 80)
    spk = torch.as_tensor(np.asarray(embedding, dtype=np.float32)).reshape(1, -1)
    n_new, n_prompt, n_feat = tokens.shape[1], prompt.shape[1], feat.shape[1]

    enc = model.flow.encode(tokens, torch.tensor([n_new]), prompt, torch.tensor([n_prompt]), feat,
                            torch.tensor([n_feat]), spk)
    z = torch.as_tensor(np.asarray(noise.z, dtype=np.float32))
    mel_full, t_span = euler_solve(model, z, enc["mu"], enc["mask"], enc["spks"], enc["cond"], n_timesteps, cfg_rate)
    # upstream cuts at the prompt mel's length F, not at 2P: with F = 2P + 1 one frame fewer is vocoded
    mel = mel_full[:, :, n_feat:]
    voc = model.mel2wav(mel, torch.tensor([mel.shape[2]]), torch.as_tensor(noise.sine_phase, dtype=torch.float32),
                        torch.as_tensor(noise.sine_noise, dtype=torch.float32))
    out = {k: v.numpy() for k, v in enc.items()}
    out.update(mel_full=mel_full.numpy(), mel=mel.numpy(), t_span=t_span.numpy(), f0=voc["f0"].numpy(),
               source=voc["source"].numpy(), istft_out=voc["istft"].numpy(), wav_untrimmed=voc["wav"].numpy())
    out["wav"] = apply_trim_fade(out["wav_untrimmed"])
    return out

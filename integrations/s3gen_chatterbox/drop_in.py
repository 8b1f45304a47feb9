"""S3GenDropIn: upstream `S3Token2Wav`'s inference surface over an S3GenRuntime.

Calls take and return torch tensors on the caller's device and dtype; the graphs run on numpy. Every random
draw is upstream's (upstream_draws.py), made from torch's generators in upstream's order, so the same torch
seed gives upstream's mel, and upstream's wav where upstream's sine draws are the same.
"""
from __future__ import annotations

import threading

import numpy as np
import torch

from s3gen_runtime.batching import Request
from s3gen_runtime.constants import MEL_BINS, SAMPLE_RATE, SAMPLES_PER_FRAME, SPEECH_VOCAB_SIZE
from s3gen_runtime.errors import InputError
from s3gen_runtime.frontend import sinc_resample
from s3gen_runtime.io import expected_noise_shapes
from s3gen_runtime.pipeline import S3GenRuntime
from s3gen_runtime.voice import Voice
from s3gen_runtime.voice_prep import VoicePreparer, embed_reference
from .tensors import mono_waveform, single_row, to_caller, to_numpy
from .tokenizer import S3TokenizerDropIn
from .upstream_draws import flow_noise, sine_draws

TOKENIZER_RATE = 16000
UPSTREAM_CFG_RATE = 0.7        # CFM_PARAMS.inference_cfg_rate
DEFAULT_STEPS = {"standard": 10, "meanflow": 2}
SOLVERS = {"standard": "euler", "meanflow": "meanflow"}


def voice_from_ref_dict(ref_dict) -> Voice:
    """Upstream's `Conditionals.gen` (prompt_token, prompt_feat, embedding; tensors or arrays) -> a Voice."""
    if not isinstance(ref_dict, dict):
        raise InputError(f"ref_dict must be the dict embed_ref returns, got {type(ref_dict).__name__}")
    missing = [k for k in ("prompt_token", "prompt_feat", "embedding") if k not in ref_dict]
    if missing:
        raise InputError(f"ref_dict lacks {missing}: give the dict embed_ref returns (Conditionals.gen)")
    prompt_token = to_numpy(ref_dict["prompt_token"], "ref_dict['prompt_token']")
    given = ref_dict.get("prompt_token_len")
    given = None if given is None else int(np.ravel(to_numpy(given, "ref_dict['prompt_token_len']"))[0])
    if given is not None and given != prompt_token.shape[-1]:
        raise InputError(f"ref_dict['prompt_token_len'] ({given}) must equal the prompt's {prompt_token.shape[-1]} tokens")
    return Voice.validated(prompt_token, to_numpy(ref_dict["prompt_feat"], "ref_dict['prompt_feat']").astype(np.float32),
                           to_numpy(ref_dict["embedding"], "ref_dict['embedding']").astype(np.float32))


class S3GenDropIn:
    """In place of upstream's `tts.s3gen` (install() puts it there). `runtime` runs the graphs; `device` and
    `dtype` are the caller's (outputs come back there); `fixed_noise` is a replaced model's CFM rand_noise
    buffer, where it had one. `last_timings` holds the seconds of the last call, per stage."""

    def __init__(self, runtime: S3GenRuntime, *, device="cpu", dtype=torch.float32,
                 fixed_noise: torch.Tensor | None = None):
        self.runtime = runtime
        self.meanflow = runtime.variant == "meanflow"
        self._device, self._dtype = torch.device(device), dtype
        self._fixed_noise = fixed_noise
        self._voice_lock = threading.Lock()
        self._voice_runners = None
        self.tokenizer = S3TokenizerDropIn(self._voice_graphs, self._device)
        self.last_timings: dict = {}

    # ------------------------------------------------------------ what upstream's callers read

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def to(self, device=None, dtype=None) -> "S3GenDropIn":
        """Where outputs go (the graphs run where the runtime's backend runs them)."""
        if device is not None:
            self._device = torch.device(device)
            self.tokenizer.device = self._device
        if dtype is not None:
            self._dtype = dtype
        return self

    def eval(self) -> "S3GenDropIn":
        return self

    def _voice_graphs(self):
        with self._voice_lock:
            if self._voice_runners is None:
                preparer = VoicePreparer(self.runtime.folder, "onnxruntime", self.runtime.manifest)
                self._voice_runners = preparer.runners
            return self._voice_runners

    # ------------------------------------------------------------ embed_ref

    def embed_ref(self, ref_wav, ref_sr: int, device="auto", ref_fade_out: bool = True) -> dict:
        """A reference clip -> upstream's ref_dict (prompt_token, prompt_token_len, prompt_feat,
        prompt_feat_len, embedding), with upstream's resamplers (torchaudio's sinc, from ref_sr)."""
        device = self._device if device == "auto" else torch.device(device)
        wav = mono_waveform(ref_wav, "ref_wav")
        if isinstance(ref_sr, bool) or not isinstance(ref_sr, (int, np.integer)) or ref_sr <= 0:
            raise InputError(f"ref_sr must be a positive whole number of Hz, got {ref_sr!r}")
        if not np.all(np.isfinite(wav)):
            raise InputError("ref_wav has NaN or Inf samples; audio must be finite")
        embedded = embed_reference(sinc_resample(wav, int(ref_sr), SAMPLE_RATE),
                                   sinc_resample(wav, int(ref_sr), TOKENIZER_RATE), self._voice_graphs())
        voice = embedded.voice
        return {"prompt_token": to_caller(voice.prompt_token.astype(np.int64), device),
                "prompt_token_len": to_caller(np.array([voice.prompt_tokens], dtype=np.int64), device),
                "prompt_feat": to_caller(voice.prompt_feat, device, self._dtype),
                "prompt_feat_len": None,
                "embedding": to_caller(voice.embedding, device, self._dtype)}

    # ------------------------------------------------------------ token -> mel -> wav

    def _request(self, speech_tokens, speech_token_lens, ref_wav, ref_sr, ref_dict, drop_invalid: bool):
        if (ref_wav is None) == (ref_dict is None):
            raise InputError("give exactly one of ref_wav (with ref_sr) or ref_dict")
        voice = voice_from_ref_dict(ref_dict if ref_dict is not None else self.embed_ref(ref_wav, ref_sr))
        tokens = single_row(speech_tokens, "speech_tokens")
        if speech_token_lens is not None:
            tokens = tokens[: int(np.ravel(to_numpy(speech_token_lens, "speech_token_lens"))[0])]
        if drop_invalid and np.issubdtype(tokens.dtype, np.integer):
            tokens = tokens[tokens < SPEECH_VOCAB_SIZE]   # what callers drop before upstream (its ids end at 6561)
        if tokens.shape[0] == 0:
            raise InputError("speech_tokens is empty" + (" after dropping ids >= 6561" if drop_invalid else "")
                             + ": S3Gen needs at least one speech token")
        return tokens, voice

    def _settings(self, n_cfm_timesteps, n_timesteps):
        steps = n_cfm_timesteps if n_cfm_timesteps is not None else n_timesteps
        variant = self.runtime.variant
        cfg = UPSTREAM_CFG_RATE if variant == "standard" else None
        return self.runtime.resolve(SOLVERS[variant], steps or DEFAULT_STEPS[variant], cfg)

    def _noise(self, tokens, voice: Voice, *, with_sine: bool) -> dict:
        shapes = expected_noise_shapes(voice.prompt_tokens, len(tokens), voice.prompt_frames)
        z = flow_noise(voice.prompt_tokens, len(tokens), meanflow=self.meanflow, device=self._device,
                       dtype=self._dtype, fixed_noise=self._fixed_noise)
        if with_sine:
            phase, noise = sine_draws(shapes["sine_noise"][2] // SAMPLES_PER_FRAME, device=self._device)
        else:   # flow_inference draws nothing for the vocoder; these are never read
            phase, noise = np.zeros(shapes["sine_phase"], np.float32), np.zeros(shapes["sine_noise"], np.float32)
        return {"z": z, "sine_phase": phase, "sine_noise": noise}

    def flow_inference(self, speech_tokens, ref_wav=None, ref_sr=None, ref_dict=None, n_cfm_timesteps=None,
                       finalize: bool = False, speech_token_lens=None, n_timesteps=None) -> torch.Tensor:
        """Tokens -> the generated mel (1, 80, M), as upstream's flow_inference."""
        if not finalize:
            raise InputError("finalize=False (a streaming chunk without its last 3 tokens' frames) is not served "
                             "by the drop-in: call with finalize=True, or stream with S3GenRuntime.stream")
        tokens, voice = self._request(speech_tokens, speech_token_lens, ref_wav, ref_sr, ref_dict, False)
        settings = self._settings(n_cfm_timesteps, n_timesteps)
        batch = self.runtime.prepare([Request(tokens, voice, noise=self._noise(tokens, voice, with_sine=False))])
        conditioning = self.runtime.encode(batch)
        mel = conditioning.mels(self.runtime.solve(conditioning, settings))[0]
        return to_caller(mel[None], self._device, self._dtype)

    def hift_inference(self, speech_feat, cache_source=None):
        """A mel (1, 80, M) -> (wav (1, 480 M), None); upstream's second output, the sine source, is not an
        output of the graph. A non-empty cache_source (upstream's streaming) is refused."""
        if cache_source is not None and to_numpy(cache_source, "cache_source").size:
            raise InputError("cache_source (upstream's streaming source cache) is not served by the drop-in; "
                             "stream with S3GenRuntime.stream")
        mel = np.asarray(to_numpy(speech_feat, "speech_feat"), dtype=np.float32)
        if mel.ndim != 3 or mel.shape[:2] != (1, MEL_BINS) or mel.shape[2] < 1:
            raise InputError(f"speech_feat must be a mel of shape (1, {MEL_BINS}, M), got {mel.shape}")
        if not np.all(np.isfinite(mel)):
            raise InputError("speech_feat has NaN or Inf values")
        phase, noise = sine_draws(mel.shape[2], device=self._device)
        runner = self.runtime.runners["vocoder"]
        feeds = {"mel": np.ascontiguousarray(mel), "mel_lengths": np.array([mel.shape[2]], dtype=np.int64),
                 "sine_phase": phase, "sine_noise": noise}
        wav = runner.run({t.name: feeds[t.name] for t in runner.component.inputs}, ["wav"])["wav"]
        return to_caller(wav[:, : SAMPLES_PER_FRAME * mel.shape[2]], self._device, self._dtype), None

    def inference(self, speech_tokens, ref_wav=None, ref_sr=None, ref_dict=None, drop_invalid_tokens: bool = True,
                  n_cfm_timesteps=None, speech_token_lens=None, n_timesteps=None):
        """Tokens -> (wav (1, S) with upstream's 40 ms fade-in, None). drop_invalid_tokens drops ids >= 6561
        (upstream's callers do it before the call); n_timesteps is chatterbox-vllm's name for the steps."""
        tokens, voice = self._request(speech_tokens, speech_token_lens, ref_wav, ref_sr, ref_dict,
                                      drop_invalid_tokens)
        settings = self._settings(n_cfm_timesteps, n_timesteps)
        result = self.runtime.synthesize(tokens, voice, noise=self._noise(tokens, voice, with_sine=True),
                                         solver=settings.solver, steps=settings.steps, cfg_rate=settings.cfg_rate)
        self.last_timings = dict(result.timings)
        return to_caller(result.wav[None], self._device, self._dtype), None


__all__ = ["S3GenDropIn", "voice_from_ref_dict"]

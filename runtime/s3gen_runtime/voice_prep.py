"""Reference audio -> Voice, torch-free: numpy front ends plus the speaker encoder and tokenizer graphs.

The steps are upstream's `prepare_conditionals` for S3Gen (see frontend/ for each front end):

    audio file or array -> mono float32 -> 24 kHz (soxr HQ + length rule) [-> -27 LUFS for meanflow]
      -> first 10 s = wav24 -> prompt_feat = 24 kHz log-mel (F, 80)
      -> wav16 = 24 k -> 16 k windowed sinc -> Kaldi fbank - mean -> speaker_encoder -> embedding (192)
                                             -> 128-bin log-mel -> tokenizer -> FSQ -> token ids
      -> tokens cut to F // 2 when F != 2 x tokens (so F = 2P or 2P + 1)

Only the two voice graphs are opened, so preparing voices costs ~0.5 GB, not the whole pipeline.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import frontend
from .backends import known_backends, open_runner
from .errors import ArtifactError, InputError
from .manifest import Manifest, load_manifest
from .runner_set import RunnerSet
from .fsq import fsq_tokens
from .voice import Voice

VOICE_ROLES = ("speaker_encoder", "tokenizer")
MEANFLOW_TARGET_LUFS = frontend.TURBO_TARGET_LUFS   # upstream's Turbo path normalises the reference to this before preparing it


@dataclass(frozen=True)
class VoiceReport:
    """What preparation did, for people: the input, what was used of it, and the voice's sizes."""

    input_sample_rate: int
    input_channels: int
    input_seconds: float
    used_seconds: float
    resampled: bool
    cropped: bool
    loudness_gain_db: float | None     # None: no gain applied (normalisation off, or silence-like input)
    loudness_lufs: float | None        # measured before normalisation (None: normalisation off)
    prompt_tokens: int                 # P
    prompt_frames: int                 # F = 2P or 2P + 1
    tokens_dropped: int                # tokenizer tokens cut to align with F
    near_boundary_tokens: tuple        # token indices whose FSQ value is within 1e-4 of a rounding boundary

    def lines(self) -> list[str]:
        resample = f"resampled {self.input_sample_rate} Hz -> 24000 Hz" if self.resampled else "already 24 kHz"
        crop = f"cropped to the first {self.used_seconds:.2f} s" if self.cropped else "not cropped"
        gain = "off" if self.loudness_lufs is None else (
            f"{self.loudness_lufs:.1f} LUFS -> {MEANFLOW_TARGET_LUFS:g} LUFS ({self.loudness_gain_db or 0.0:+.2f} dB)")
        out = [f"input: {self.input_seconds:.2f} s, {self.input_channels} channel(s), {resample}",
               f"used: {self.used_seconds:.2f} s ({crop}); loudness normalisation: {gain}",
               f"voice: P = {self.prompt_tokens} prompt tokens, F = {self.prompt_frames} mel frames "
               f"({'2P' if self.prompt_frames == 2 * self.prompt_tokens else '2P+1'})"]
        if self.near_boundary_tokens:
            out.append(f"warning: {len(self.near_boundary_tokens)} token(s) lie within 1e-4 of an FSQ rounding "
                       f"boundary (indices {list(self.near_boundary_tokens)[:10]}): another kernel may round them "
                       "differently")
        return out


@dataclass(frozen=True, eq=False)
class PreparedVoice:
    """The voice, the report, every intermediate array (for checks against upstream) and the seconds
    each step took (the 24 kHz load and crop are not included)."""

    voice: Voice
    report: VoiceReport
    stages: dict = field(repr=False)
    timings: dict = field(default_factory=dict)


def align_tokens(token_ids: np.ndarray, prompt_frames: int) -> np.ndarray:
    """Upstream's rule: when F != 2 x tokens, keep the first F // 2 tokens (F = 2P or 2P + 1 after)."""
    if prompt_frames != 2 * len(token_ids):
        return token_ids[: prompt_frames // 2]
    return token_ids


def run_speaker_encoder(runner, fbank: np.ndarray) -> np.ndarray:
    """(frames, 80) mean-subtracted fbank -> (1, 192) x-vector."""
    return runner.run({"fbank": np.ascontiguousarray(fbank[None], dtype=np.float32)}, ["embedding"])["embedding"]


def run_tokenizer(runner, mel128: np.ndarray) -> np.ndarray:
    """(128, T) log-mel -> (ceil(T / 4), 8) pre-rounding FSQ values."""
    out = runner.run({"mel": np.ascontiguousarray(mel128[None], dtype=np.float32),
                      "mel_lengths": np.array([mel128.shape[1]], dtype=np.int64)}, ["fsq", "fsq_lengths"])
    return out["fsq"][0, : int(out["fsq_lengths"][0])]


@dataclass(frozen=True, eq=False)
class EmbeddedReference:
    """What upstream's `S3Gen.embed_ref` computes from a 24 kHz and a 16 kHz waveform, with its stages."""

    voice: Voice
    tokens: object             # fsq.FsqTokens of the whole clip (before alignment)
    stages: dict
    timings: dict


def embed_reference(wav24: np.ndarray, wav16: np.ndarray, runners) -> EmbeddedReference:
    """embed_ref's arithmetic: prompt mel of wav24; x-vector and tokens of wav16 (the two voice graphs);
    tokens cut to the prompt mel (F = 2P or 2P + 1)."""
    clock = time.perf_counter
    start = clock()
    prompt_feat = frontend.prompt_mel(wav24)
    fbank = frontend.speaker_fbank(wav16)
    mel128 = frontend.tokenizer_log_mel(wav16)
    after_frontends = clock()
    embedding = run_speaker_encoder(runners["speaker_encoder"], fbank)
    after_speaker = clock()
    fsq = run_tokenizer(runners["tokenizer"], mel128)
    end = clock()
    if not np.all(np.isfinite(fsq)) or not np.all(np.isfinite(embedding)):
        raise ArtifactError("the voice graphs produced NaN or Inf from finite features: the artifacts are broken")
    tokens = fsq_tokens(fsq)
    voice = Voice.validated(align_tokens(tokens.tokens, prompt_feat.shape[0]), prompt_feat, embedding)
    stages = {"wav24": wav24, "wav16": wav16, "fbank": fbank, "mel128": mel128, "tokenizer_fsq": fsq,
              "tokenizer_tokens": tokens.tokens, "prompt_feat": prompt_feat, "embedding": embedding}
    timings = {"frontends": after_frontends - start, "speaker_encoder": after_speaker - after_frontends,
               "tokenizer": end - after_speaker}
    return EmbeddedReference(voice, tokens, stages, timings)


def prepare_from_24k(wav24: np.ndarray, info: frontend.ReferenceInfo, runners) -> PreparedVoice:
    """A 24 kHz clip (already loaded, normalised and cropped) -> PreparedVoice."""
    start = time.perf_counter()
    wav16 = frontend.resample_24k_to_16k(wav24)
    resampled = time.perf_counter()
    embedded = embed_reference(wav24, wav16, runners)
    timings = dict(embedded.timings)
    timings["frontends"] += resampled - start       # the resampler is a front end too
    timings["total"] = time.perf_counter() - start
    voice, tokens = embedded.voice, embedded.tokens
    kept = voice.prompt_tokens
    report = VoiceReport(
        input_sample_rate=info.audio.sample_rate, input_channels=info.audio.channels,
        input_seconds=info.audio.seconds, used_seconds=info.seconds_used, resampled=info.resampled,
        cropped=info.cropped, loudness_gain_db=info.gain_db, loudness_lufs=info.loudness_lufs,
        prompt_tokens=kept, prompt_frames=voice.prompt_frames,
        tokens_dropped=len(tokens.tokens) - kept,
        near_boundary_tokens=tuple(int(i) for i in np.flatnonzero(tokens.near_boundary[:kept])))
    return PreparedVoice(voice, report, embedded.stages, timings)


class VoicePreparer:
    """Prepares voices from recordings with an artifact folder's `speaker_encoder` and `tokenizer` graphs.

    normalize_loudness: None follows the artifacts (on for meanflow, as upstream's Turbo path does).
    Thread-safe: it holds no per-call state."""

    def __init__(self, folder, backend: str = "onnxruntime", manifest: Manifest | None = None, **backend_options):
        if backend not in known_backends():
            raise InputError(f"unknown backend {backend!r}; known backends: {', '.join(known_backends())}")
        self.folder = Path(folder)
        self.manifest = manifest if manifest is not None else load_manifest(self.folder, verify=False)
        missing = [r for r in VOICE_ROLES if r not in self.manifest.components]
        if missing:
            raise ArtifactError(
                f"{self.folder} has no voice graphs (missing: {', '.join(missing)}): export a checkpoint that "
                "carries speaker_encoder.* and tokenizer.* (every real s3gen.safetensors does)")
        self.runners = RunnerSet(lambda role: open_runner(self.folder, self.manifest, role, backend, **backend_options),
                                 VOICE_ROLES, eager=VOICE_ROLES)

    @property
    def loudness_by_default(self) -> bool:
        return self.manifest.checkpoint.variant == "meanflow"

    def _loudness(self, normalize_loudness) -> dict:
        """load_reference's options: upstream's Turbo normalises to -27 LUFS and asserts > 5 s."""
        if normalize_loudness is None:
            normalize_loudness = self.loudness_by_default
        if not isinstance(normalize_loudness, bool):
            raise InputError(f"normalize_loudness must be True, False or None, got {normalize_loudness!r}")
        turbo = self.manifest.checkpoint.variant == "meanflow"
        return {"target_lufs": MEANFLOW_TARGET_LUFS if normalize_loudness else None,
                "min_seconds": frontend.TURBO_MIN_SECONDS if turbo else None}

    def from_file(self, path, *, normalize_loudness: bool | None = None) -> PreparedVoice:
        """A voice from an audio file (WAV, FLAC, OGG: what soundfile reads)."""
        wav24, info = frontend.load_reference(path, **self._loudness(normalize_loudness))
        return prepare_from_24k(wav24, info, self.runners)

    def from_array(self, samples, sample_rate: int, *, normalize_loudness: bool | None = None) -> PreparedVoice:
        """A voice from float samples (frames,) or (frames, channels) at sample_rate."""
        wav24, info = frontend.reference_from_samples(samples, sample_rate, **self._loudness(normalize_loudness))
        return prepare_from_24k(wav24, info, self.runners)


__all__ = ["VoicePreparer", "PreparedVoice", "VoiceReport", "VOICE_ROLES", "EmbeddedReference", "align_tokens",
           "embed_reference"]

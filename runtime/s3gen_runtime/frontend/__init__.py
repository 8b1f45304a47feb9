"""Torch-free audio front ends of voice preparation: what upstream computes from a reference audio file.

file -> read_audio -> load_24k (librosa.load(sr=24000) equivalent) -> [normalize_loudness: Turbo] -> crop_24k
     -> prompt_mel(wav24)                                   the voice's prompt_feat (F, 80)
     -> resample_24k_to_16k(wav24) -> tokenizer_log_mel     the tokenizer's input (128, T)
                                   -> speaker_fbank         CAMPPlus's input (frames, 80)
`load_reference(path)` does the first line in one call. Decoding, resampling to 24 kHz and loudness need
the `voice` extra (soundfile, soxr, pyloudnorm), imported only when used; the rest is numpy.
"""
from ._deps import VOICE_EXTRA_HINT, MissingDependencyError
from .audio import (DEC_COND_LEN, MIN_CLIP_SAMPLES_24K, MIN_CLIP_SECONDS, QUIET_RMS_DBFS, SILENCE_PEAK, SR_16K,
                    SR_24K, TURBO_MIN_SECONDS, AudioInfo, QuietAudioWarning, ReferenceInfo, check_length_24k,
                    check_not_silent, crop_24k, load_24k, load_reference, read_audio,
                    reference_from_samples, resampled_length, to_mono)
from .fbank import kaldi_fbank, speaker_fbank
from .loudness import TURBO_TARGET_LUFS, integrated_loudness, loudness_gain, normalize_loudness
from .mel import prompt_mel, slaney_mel_basis, tokenizer_log_mel
from .resample import resample_24k_to_16k, sinc_resample

__all__ = [
    "AudioInfo", "DEC_COND_LEN", "MIN_CLIP_SAMPLES_24K", "MIN_CLIP_SECONDS", "MissingDependencyError",
    "QUIET_RMS_DBFS", "QuietAudioWarning", "ReferenceInfo", "SILENCE_PEAK", "SR_16K", "SR_24K",
    "TURBO_MIN_SECONDS", "TURBO_TARGET_LUFS", "VOICE_EXTRA_HINT", "check_length_24k", "check_not_silent",
    "crop_24k", "integrated_loudness", "kaldi_fbank", "load_24k", "load_reference", "loudness_gain",
    "normalize_loudness", "prompt_mel", "read_audio", "reference_from_samples", "resample_24k_to_16k", "resampled_length",
    "sinc_resample", "slaney_mel_basis", "speaker_fbank", "to_mono", "tokenizer_log_mel",
]

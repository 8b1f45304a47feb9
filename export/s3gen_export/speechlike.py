"""A speech-like reference recording made on the spot (numpy only), for the demo, tests and benchmarks.

No recording ships with the project and espeak-ng is not on every machine, so the demo and the voice
benchmark synthesise one: voiced syllables (a harmonic source with a wandering pitch, shaped by vowel
formants) separated by short pauses and a little breath noise. It exercises every voice front end the
way a real clip does (energy, silence gaps, pitch), though it is not a voice anyone would clone.
"""
from __future__ import annotations

import numpy as np

# (F1, F2, F3) in Hz of a few vowels
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))
SYLLABLE_S = 0.22
PAUSE_EVERY = 5          # syllables between pauses
PAUSE_S = 0.18


def _formant_gain(freqs: np.ndarray, formants, bandwidth: float = 90.0) -> np.ndarray:
    """Magnitude of a cascade of resonances at the given frequencies (sum of Lorentzian peaks)."""
    gain = np.zeros_like(freqs)
    for f in formants:
        gain += 1.0 / (1.0 + ((freqs - f) / bandwidth) ** 2)
    return gain


def _syllable(n: int, sample_rate: int, f0: float, formants, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sample_rate
    pitch = f0 * (1.0 + 0.08 * np.sin(2 * np.pi * rng.uniform(1.5, 3.0) * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    out = np.zeros(n)
    for k in range(1, int(0.45 * sample_rate / f0)):
        out += _formant_gain(np.full(1, k * f0), formants)[0] / k * np.sin(k * phase)
    envelope = np.sin(np.pi * np.arange(n) / n) ** 2    # each syllable rises and falls
    return out * envelope


def speechlike_recording(seconds: float, sample_rate: int = 22050, seed: int = 0, channels: int = 1,
                         peak: float = 0.5) -> np.ndarray:
    """(frames,) or (frames, channels) float32 in [-peak, peak]: syllables, pauses and breath noise."""
    rng = np.random.default_rng(seed)
    total = int(round(seconds * sample_rate))
    out = np.zeros(total)
    pos, count = int(0.1 * sample_rate), 0
    syllable = int(SYLLABLE_S * sample_rate)
    while pos + syllable <= total:
        formants = VOWELS[rng.integers(len(VOWELS))]
        out[pos:pos + syllable] += _syllable(syllable, sample_rate, rng.uniform(95.0, 210.0), formants, rng)
        pos += syllable
        count += 1
        if count % PAUSE_EVERY == 0:
            pos += int(PAUSE_S * sample_rate)
    out += 0.002 * rng.standard_normal(total)   # breath / room noise: no frame is digital silence
    out *= peak / max(np.max(np.abs(out)), 1e-9)
    if channels > 1:   # slightly different channels, so averaging them matters
        out = np.stack([out * (1.0 - 0.1 * c) for c in range(channels)], axis=1)
    return out.astype(np.float32)


__all__ = ["speechlike_recording"]

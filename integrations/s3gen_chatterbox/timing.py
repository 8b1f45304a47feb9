"""Where generate()'s time goes: T3, S3Gen (upstream's eager one or the drop-in), and the rest."""
from __future__ import annotations

import time

T3_METHODS = {"ChatterboxTurboTTS": "inference_turbo"}   # the T3 call each class's generate makes


def timed(method, spent: list):
    """The same callable, appending its wall seconds to `spent`."""
    def call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)
    return call


def generate_timed(tts, text: str, **generate_options) -> tuple:
    """tts.generate(text, **options) -> (wav, {'t3', 's3gen', 'other', 'total'} wall seconds). The T3 and S3Gen
    calls are wrapped for this call only (instance attributes, removed afterwards)."""
    t3_spent, s3gen_spent = [], []
    t3_method = T3_METHODS.get(type(tts).__name__, "inference")
    setattr(tts.t3, t3_method, timed(getattr(tts.t3, t3_method), t3_spent))
    tts.s3gen.inference = timed(tts.s3gen.inference, s3gen_spent)
    try:
        start = time.perf_counter()
        wav = tts.generate(text, **generate_options)
        total = time.perf_counter() - start
    finally:
        del tts.s3gen.inference
        delattr(tts.t3, t3_method)
    seconds = {"t3": sum(t3_spent), "s3gen": sum(s3gen_spent), "total": total}
    seconds["other"] = total - seconds["t3"] - seconds["s3gen"]
    return wav, seconds


__all__ = ["generate_timed", "timed"]

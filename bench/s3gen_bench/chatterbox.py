"""Section j: upstream Chatterbox's generate() with its eager S3Gen vs with the drop-in, on the CPU.

Per variant (ChatterboxTTS: standard; ChatterboxTurboTTS: meanflow), one TTS object whose T3 has the real size
and random weights (its seconds per token are real; its tokens are not speech, and a biased head makes it stop
after ~mean_tokens tokens), upstream's S3Gen on the synthetic checkpoint, and the same torch seed both ways, so
T3 draws the same tokens and S3Gen gets the same request. Interleaved: eager, drop-in, eager, drop-in...
S3Gen's seconds are the wall time of its inference call; T3's of its inference call.
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from .common import Progress
from .upstream_chatterbox import (UpstreamMissing, import_upstream, random_ref_dict, standard_tts, turbo_tts,
                                  upstream_s3gen)

TEXT = "hello there, this is a benchmark of upstream chatterbox with and without s3gen-aot."
MAKE_TTS = {"standard": standard_tts, "meanflow": turbo_tts}
CLASS = {"standard": "ChatterboxTTS", "meanflow": "ChatterboxTurboTTS"}
GENERATE_OPTIONS = {"standard": {}, "meanflow": {"top_p": 1.0}}   # Turbo's top_p would drop the rare stop token


def measure_variant(variant: str, checkpoint: Path, artifacts: Path, repeats: int, mean_tokens: float,
                    progress: Progress) -> dict:
    import torch

    from s3gen_chatterbox import generate_timed, install

    eager = upstream_s3gen(checkpoint, variant == "meanflow")
    tts = MAKE_TTS[variant](eager, Path(tempfile.mkdtemp()), random_ref_dict(), real_size=True, mean_tokens=mean_tokens)
    drop_in = install(tts, artifacts)
    runs, wav_diffs = {"eager": [], "drop-in": []}, []
    for repeat in range(repeats):
        wavs = {}
        for label, s3gen in (("eager", eager), ("drop-in", drop_in)):
            tts.s3gen = s3gen
            torch.manual_seed(100 + repeat)
            wavs[label], seconds = generate_timed(tts, TEXT, **GENERATE_OPTIONS[variant])
            seconds["audio_s"] = wavs[label].shape[-1] / tts.sr
            runs[label].append(seconds)
            progress(f"    {CLASS[variant]} {label} #{repeat + 1}: {seconds['audio_s']:.1f} s of audio, T3 "
                     f"{seconds['t3']:.1f} s, S3Gen {seconds['s3gen']:.1f} s, total {seconds['total']:.1f} s")
        # same seed, same tokens: the two wavs are upstream's and the drop-in's for one request
        wav_diffs.append(float((wavs["eager"] - wavs["drop-in"]).abs().max())
                         if wavs["eager"].shape == wavs["drop-in"].shape else float("inf"))
    return {"class": CLASS[variant], "runs": runs, "wav_max_abs_diff": wav_diffs, "summary": summarize(runs)}


def summarize(runs: dict) -> dict:
    """Medians per way, S3Gen's share of generate, and S3Gen's speed-up."""
    out = {}
    for label, rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("t3", "s3gen", "other", "total", "audio_s")}
        med["s3gen_share"] = med["s3gen"] / med["total"]
        out[label] = med
    out["s3gen_speedup"] = out["eager"]["s3gen"] / out["drop-in"]["s3gen"]
    out["generate_speedup"] = out["eager"]["total"] / out["drop-in"]["total"]
    return out


def run_chatterbox(checkpoints: dict, artifacts: dict, repeats: int, mean_tokens: float,
                   progress: Progress = print) -> dict:
    """checkpoints / artifacts: variant -> path. Skipped (with the reason) where upstream is not installed."""
    try:
        import_upstream()
    except UpstreamMissing as e:
        progress(f"  skipped: {e}")
        return {"skipped": str(e)}
    import importlib.metadata

    result = {"upstream": importlib.metadata.version("chatterbox-tts"), "mean_tokens": mean_tokens,
              "repeats": repeats, "text": TEXT, "variants": {}}
    for variant in checkpoints:
        progress(f"  {CLASS[variant]}: T3 at the real size, random weights; S3Gen eager vs drop-in")
        result["variants"][variant] = measure_variant(variant, Path(checkpoints[variant]), Path(artifacts[variant]),
                                                      repeats, mean_tokens, progress)
    return result


def machine_line(machine: dict | None) -> list[str]:
    if not machine:
        return []
    flags = " ".join(f for f in (machine.get("cpu") or {}).get("flags", []) if f.startswith(("avx", "fma")))
    return [f"Measured {machine.get('date')} on {machine.get('cpu_model')}, {machine.get('cores')} cores "
            f"(flags: {flags or 'not recorded'}), load average at start {machine.get('load_average_at_start')}.", ""]


def chatterbox_section(result: dict) -> list[str]:
    lines = ["## j. Chatterbox generate(): eager S3Gen vs the drop-in", ""]
    if result.get("skipped"):
        return lines + [f"Skipped: {result['skipped']}", ""]
    lines += [f"Upstream chatterbox-tts {result['upstream']}, `generate()` on the CPU; T3 at the real size with "
              f"random weights (its seconds per token are real, its tokens are not speech; it stops after "
              f"~{result['mean_tokens']:g} tokens on average), S3Gen on the synthetic checkpoint; the same torch "
              f"seed both ways, so the same tokens reach S3Gen; medians of {result['repeats']}.", "",
              *machine_line(result.get("machine")),
              "| class | S3Gen | audio s | T3 s | S3Gen s | rest s | total s | S3Gen share |",
              "|---|---|---|---|---|---|---|---|"]
    for variant, v in result["variants"].items():
        for label in ("eager", "drop-in"):
            m = v["summary"][label]
            lines.append(f"| {v['class']} | {label} | {m['audio_s']:.1f} | {m['t3']:.1f} | {m['s3gen']:.1f} | "
                         f"{m['other']:.2f} | {m['total']:.1f} | {100 * m['s3gen_share']:.0f} % |")
    lines.append("")
    for variant, v in result["variants"].items():
        s = v["summary"]
        diff = max(v.get("wav_max_abs_diff") or [float("nan")])
        lines.append(f"- {v['class']}: S3Gen {s['s3gen_speedup']:.2f}x faster with the drop-in; generate() as a "
                     f"whole {s['generate_speedup']:.2f}x; the same seed's wavs differ by at most {diff:.1e} "
                     "(upstream's eager vs the drop-in).")
    return lines + [""]


__all__ = ["run_chatterbox", "chatterbox_section", "summarize"]

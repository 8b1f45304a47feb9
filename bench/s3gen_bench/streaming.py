"""Section g: streaming synthesis (S3GenRuntime.stream) against offline synthesis with the same seed.

Quality, per chunk schedule and vocoder left context: mel and wav SNR over the utterance and within
+-20 ms of every seam; a seam click score (peak |second difference| near a seam over its 99th
percentile away from seams; the offline wav at random points is the baseline); F0 continuity (F0
jump across a seam over the median frame-to-frame jump elsewhere). The vocoder alone is also run
on the offline mel, which separates its seams from the flow's (whose streamed frames differ by
design: attention over frames that did not exist yet). Cost, per utterance length: time to first
audio and total time against offline. The default schedule is also timed on the other artifacts at
hand (the int8 graphs; meanflow when section e left an export), at the longest cost length. Runs in
this process on the runtime alone.
"""
from __future__ import annotations

import time

import numpy as np

from s3gen_runtime.constants import SAMPLE_RATE
from s3gen_runtime.metrics import snr_db
from s3gen_runtime.noise import draw_noise
from s3gen_runtime.stream_vocoder import VocoderState, run_window, vocode_step
from s3gen_runtime.streaming import collect

from s3gen_export.tuning.synthetic_requests import synthetic_tokens, synthetic_voice

from .common import Progress, tokens_for_seconds

SEAM_MS = 20
FULL = {"prompt_tokens": 75, "steps": 2, "quality_seconds": 6.0, "cost_seconds": (5.0, 10.0, 20.0),
        "schedules": ((10, 25, 2.0), (15, 50, 4.0), (25, 100, 2.0)), "left_frames": (0, 4, 16)}
QUICK = {"prompt_tokens": 20, "steps": 1, "quality_seconds": 2.0, "cost_seconds": (2.0,),
         "schedules": ((10, 20, 2.0),), "left_frames": (16,)}


def seam_windows(seams, length: int, half: int) -> np.ndarray:
    """Boolean mask of samples within +-half of any seam."""
    mask = np.zeros(length, bool)
    for s in seams:
        mask[max(0, s - half): min(length, s + half)] = True
    return mask


def click_score(wav: np.ndarray, points, half: int) -> float:
    """Peak |second difference| within +-half of the points over its 99th percentile elsewhere."""
    d2 = np.abs(np.diff(wav.astype(np.float64), 2))
    near = seam_windows(points, d2.size, half)
    if not near.any() or near.all():
        return float("nan")
    return float(d2[near].max() / max(np.percentile(d2[~near], 99), 1e-12))


def f0_jump_ratio(f0: np.ndarray, seam_frames) -> float:
    """Mean |F0 step| across the seams over the median |F0 step| between other frames."""
    steps = np.abs(np.diff(f0.astype(np.float64)))
    at = [f - 1 for f in seam_frames if 0 < f < f0.size]
    rest = np.delete(steps, at)
    return float(np.mean(steps[at]) / max(np.median(rest), 1e-9)) if at else float("nan")


def quality(runtime, stream_wav, stream_mel, offline, seams) -> dict:
    half = 24 * SEAM_MS
    near = seam_windows(seams, offline.wav.size, half)
    rng = np.random.default_rng(0)
    random_points = rng.integers(half, offline.wav.size - half, max(1, len(seams)))
    frames = stream_mel.shape[1]
    f0 = run_window(runtime.runners["vocoder"], stream_mel, np.zeros((1, 9, 1), np.float32),
                    np.zeros((1, 9, 480 * frames), np.float32))["f0"]
    return {"wav_snr_db": snr_db(stream_wav, offline.wav), "mel_snr_db": snr_db(stream_mel, offline.mel),
            "seam_wav_snr_db": snr_db(stream_wav[near], offline.wav[near]) if near.any() else None,
            "click_score": click_score(stream_wav, seams, half) if seams else None,
            "offline_click_score_random": click_score(offline.wav, random_points, half),
            "f0_jump_ratio": f0_jump_ratio(f0, [s // 480 for s in seams]) if seams else None}


def vocoder_only(runtime, offline, voice, tokens, seed, schedule_ends, left: int, hold: int) -> dict:
    """The streaming vocoder on the offline mel cut at the stream's commit points."""
    noise = draw_noise(seed, voice.prompt_tokens, tokens.size, voice.prompt_frames)
    state, pieces, frames = VocoderState(), [], offline.mel.shape[1]
    for end in [*schedule_ends, frames]:
        piece = vocode_step(runtime.runners["vocoder"], offline.mel[:, :end], end == frames, state, left=left,
                            hold=hold, phase0=noise["sine_phase"],
                            noise_at=lambda a, b: noise["sine_noise"][..., 480 * a:480 * b])
        pieces += [] if piece is None else [piece]
    wav = np.concatenate(pieces)
    seams = list(np.cumsum([p.size for p in pieces[:-1]]))
    half = 24 * SEAM_MS
    near = seam_windows(seams, wav.size, half)
    return {"wav_snr_db": snr_db(wav, offline.wav), "seam_wav_snr_db": snr_db(wav[near], offline.wav[near]),
            "click_score": click_score(wav, seams, half)}


def stream_cost(runtime, voice, tokens, seed: int, opts: dict, **schedule) -> dict:
    """Offline synthesis, then a stream with `schedule` (the defaults when empty), same seed: their times."""
    t0 = time.perf_counter()
    runtime.synthesize(tokens, voice, seed=seed, **opts)
    offline_s = time.perf_counter() - t0
    chunks, res = collect(runtime.stream(tokens, voice, seed=seed, **schedule, **opts))
    return {"offline_s": offline_s, "ttfa_s": res.time_to_first_audio, "total_s": res.total, "chunks": len(chunks),
            "first_audio_s": chunks[0].wav.size / SAMPLE_RATE, "ttfa_ratio": res.time_to_first_audio / offline_s,
            "total_ratio": res.total / offline_s}


def other_artifact_costs(runtimes: dict, prompt_tokens: int, seconds: float, steps: int | None,
                         progress: Progress = print) -> list[dict]:
    """The default schedule on each {label: runtime} at one length. Standard artifacts run `steps` (as the
    fp32 rows); meanflow runs its own upstream setting (2 meanflow steps)."""
    voice, seed = synthetic_voice(prompt_tokens), 0
    tokens = synthetic_tokens(tokens_for_seconds(seconds))
    rows = []
    for label, runtime in runtimes.items():
        opts = {"steps": steps} if runtime.variant == "standard" and steps is not None else {}
        settings = runtime.resolve(**opts)
        row = {"artifacts": label, "seconds": seconds, "solver": settings.solver, "steps": settings.steps,
               **stream_cost(runtime, voice, tokens, seed, opts)}
        rows.append(row)
        progress(f"  {label}, {seconds:g} s, default schedule: TTFA {row['ttfa_s']:.2f} s ({row['ttfa_ratio']:.2f}x "
                 f"offline {row['offline_s']:.2f} s), total {row['total_ratio']:.2f}x")
    return rows


def run_streaming(runtime, quick: bool = False, progress: Progress = print, others: dict | None = None) -> dict:
    cfg = QUICK if quick else FULL
    start = time.perf_counter()
    voice, seed = synthetic_voice(cfg["prompt_tokens"]), 0
    opts = {"steps": cfg["steps"]}
    tokens = synthetic_tokens(tokens_for_seconds(cfg["quality_seconds"]))
    offline = runtime.synthesize(tokens, voice, seed=seed, **opts)
    rows = []
    for first, chunk, growth in cfg["schedules"]:
        for left in cfg["left_frames"]:
            chunks, res = collect(runtime.stream(tokens, voice, seed=seed, first_chunk_tokens=first, chunk_tokens=chunk,
                                                 growth=growth, left_context_frames=left, **opts))
            seams = [c.start_sample for c in chunks[1:]]
            ends = [2 * c.tokens - 6 - voice.prompt_frames % 2 for c in chunks[:-1]]
            row = {"first": first, "chunk": chunk, "growth": growth, "left_frames": left, "chunks": len(chunks),
                   **quality(runtime, res.wav, res.mel, offline, seams),
                   "vocoder_only": vocoder_only(runtime, offline, voice, tokens, seed, ends, left, 12)}
            rows.append(row)
            progress(f"  schedule {first}/{chunk}x{growth:g} left {left}: wav SNR {row['wav_snr_db']:.1f} dB "
                     f"(vocoder alone {row['vocoder_only']['wav_snr_db']:.1f}), click {row['click_score']:.2f}")
    costs = []
    for seconds in cfg["cost_seconds"]:
        toks = synthetic_tokens(tokens_for_seconds(seconds))
        for first, chunk, growth in cfg["schedules"][:2]:
            costs.append({"seconds": seconds, "first": first, "chunk": chunk, "growth": growth,
                          **stream_cost(runtime, voice, toks, seed, opts, first_chunk_tokens=first,
                                        chunk_tokens=chunk, growth=growth)})
            c = costs[-1]
            progress(f"  {seconds:g} s, {first}/{chunk}x{growth:g}: TTFA {c['ttfa_s']:.2f} s ({c['ttfa_ratio']:.2f}x "
                     f"offline {c['offline_s']:.2f} s), total {c['total_ratio']:.2f}x")
    other = other_artifact_costs(others or {}, cfg["prompt_tokens"], max(cfg["cost_seconds"]), cfg["steps"], progress)
    return {"settings": {**cfg, "solver": runtime.resolve(**opts).solver, "variant": runtime.variant,
                         "hold_frames": 12, "seed": seed}, "quality": rows, "cost": costs, "other_artifacts": other,
            "seconds": time.perf_counter() - start}


def streaming_section(st: dict) -> list[str]:
    s = st["settings"]
    f = lambda v, p="{:.1f}": "-" if v is None else p.format(v)  # noqa: E731
    lines = ["## g. Streaming synthesis (`S3GenRuntime.stream`, `synth --stream`)", "",
             f"{s['variant']} artifacts, {s['solver']} {s['steps']} steps (NFE changes stream and offline alike), prompt "
             f"{s['prompt_tokens']} tokens, same seed as offline. Schedule = first/chunk x growth (tokens); "
             f"left = vocoder left context (frames), hold {s['hold_frames']} frames. The synthetic checkpoint's "
             "attention is diffuse (random weights), so streamed-vs-offline SNR of the flow is a lower bound.", "",
             f"Quality on a {s['quality_seconds']:g} s utterance:", "",
             "| schedule | left | chunks | wav SNR dB | mel SNR dB | seam wav SNR dB | click score (offline random) | "
             "F0 jump ratio | vocoder alone: wav / seam SNR dB, click |", "|---|---|---|---|---|---|---|---|---|"]
    for r in st["quality"]:
        v = r["vocoder_only"]
        lines.append(f"| {r['first']}/{r['chunk']}x{r['growth']:g} | {r['left_frames']} | {r['chunks']} | "
                     f"{f(r['wav_snr_db'])} | {f(r['mel_snr_db'])} | {f(r['seam_wav_snr_db'])} | "
                     f"{f(r['click_score'], '{:.2f}')} ({f(r['offline_click_score_random'], '{:.2f}')}) | "
                     f"{f(r['f0_jump_ratio'], '{:.2f}')} | {f(v['wav_snr_db'])} / {f(v['seam_wav_snr_db'])}, "
                     f"{f(v['click_score'], '{:.2f}')} |")
    lines += ["", "Cost against offline synthesis of the same utterance:", "",
              "| audio | schedule | chunks | offline s | time to first audio s | TTFA / offline | first piece s | "
              "total s | total / offline |", "|---|---|---|---|---|---|---|---|---|"]
    for c in st["cost"]:
        lines.append(f"| {c['seconds']:g} s | {c['first']}/{c['chunk']}x{c['growth']:g} | {c['chunks']} | "
                     f"{c['offline_s']:.2f} | {c['ttfa_s']:.2f} | {c['ttfa_ratio']:.2f} | {c['first_audio_s']:.2f} | "
                     f"{c['total_s']:.2f} | {c['total_ratio']:.2f} |")
    other = st.get("other_artifacts") or []
    if other:
        lines += ["", "Default schedule on the other artifacts (same prompt and tokens):", "",
                  "| artifacts | audio | solver, steps | chunks | offline s | time to first audio s | TTFA / offline | "
                  "total / offline |", "|---|---|---|---|---|---|---|---|"]
        for c in other:
            lines.append(f"| {c['artifacts']} | {c['seconds']:g} s | {c['solver']} {c['steps']} | {c['chunks']} | "
                         f"{c['offline_s']:.2f} | {c['ttfa_s']:.2f} | {c['ttfa_ratio']:.2f} | {c['total_ratio']:.2f} |")
    return lines + [""]


__all__ = ["run_streaming", "streaming_section", "stream_cost", "other_artifact_costs", "click_score", "f0_jump_ratio", "seam_windows"]

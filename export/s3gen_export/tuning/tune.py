"""Solver tuning on an artifact folder's own weights: the cheapest solver setting that stays within
`target_db` of the upstream setting, measured, and recorded in the manifest's `tuning` field.

    result = tune("artifacts/my_model", voice="voice.npz", tokens="tokens.npy", target_db=30.0)

For each candidate (solver, steps) in order of cost (NFE = estimator calls), the generated mel is
compared with the upstream setting's (standard: 10 Euler steps with CFG 0.7; meanflow: 2 meanflow
steps) and with a converged solution of the same ODE (many Heun steps; meanflow: many meanflow
steps), over `seeds` noise draws of one request (the user's voice and tokens, or a synthetic one).
The first NFE at which some candidate reaches `target_db` (worst seed) against the upstream setting
wins (the best of that NFE); later NFEs are not measured unless `stop_early=False`. The runtime
uses manifest.tuning as its default setting from then on; the manifest's sha256s cover the graph
files only, so rewriting manifest.json leaves the artifacts valid.

numpy + onnxruntime only: no torch is imported.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from pathlib import Path
from typing import Callable

from s3gen_runtime.errors import InputError, S3GenError

from .synthetic_requests import synthetic_tokens, synthetic_voice
from .flow_problems import STANDARD_SOLVERS, candidates, converged_reference, errors_against, prepare_problem, solve_mel

# NFE levels tried, cheapest first (capped by max_nfe)
NFE_LEVELS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 64)
SYNTHETIC_PROMPT_TOKENS = 25     # 1 s prompt
SYNTHETIC_NEW_TOKENS = 75        # 3 s of speech


class TuneError(S3GenError):
    """No candidate within max_nfe reaches the target; the message names the best one measured."""


def _request(tokens, voice):
    from s3gen_runtime.io import load_tokens, validate_tokens
    from s3gen_runtime.voice import Voice, load_voice

    source = []
    if voice is None:
        voice = synthetic_voice(SYNTHETIC_PROMPT_TOKENS)
        source.append("synthetic voice")
    elif isinstance(voice, (str, Path)):
        source.append(f"voice {Path(voice).name}")
        voice = load_voice(voice)
    elif isinstance(voice, Voice):
        voice = Voice.validated(voice.prompt_token, voice.prompt_feat, voice.embedding)
        source.append("given voice")
    else:
        raise InputError(f"voice must be a path, a Voice or None, got {type(voice).__name__}")
    if tokens is None:
        tokens = synthetic_tokens(SYNTHETIC_NEW_TOKENS)
        source.append("synthetic tokens")
    elif isinstance(tokens, (str, Path)):
        source.append(f"tokens {Path(tokens).name}")
        tokens = load_tokens(tokens)
    else:
        tokens = validate_tokens(tokens)
        source.append("given tokens")
    return tokens.reshape(-1), voice, ", ".join(source)


def _check_args(target_db, seeds, max_nfe):
    if isinstance(target_db, bool) or not isinstance(target_db, (int, float)) or not (0 < float(target_db) < 200):
        raise InputError(f"target_db must be a number in (0, 200), got {target_db!r}")
    seeds = tuple(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise InputError(f"seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    if isinstance(max_nfe, bool) or not isinstance(max_nfe, int) or max_nfe < 1:
        raise InputError(f"max_nfe must be an integer >= 1, got {max_nfe!r}")
    return float(target_db), seeds


def format_table(rows, target_db: float, chosen=None) -> str:
    lines = [f"{'solver':<9} {'steps':>5} {'NFE':>4} {'dB vs upstream':>15} {'dB vs converged':>16} {'s/utt':>7}"]
    for r in rows:
        mark = "  <- chosen" if chosen and (r["solver"], r["steps"]) == (chosen["solver"], chosen["steps"]) else (
            "  (upstream)" if r.get("upstream") else "")
        ok = "*" if r["snr_db_vs_upstream"] >= target_db else " "
        lines.append(f"{r['solver']:<9} {r['steps']:>5} {r['nfe']:>4} {r['snr_db_vs_upstream']:>14.1f}{ok} "
                     f"{r['snr_db_vs_converged']:>16.1f} {r['seconds_per_utterance']:>7.2f}{mark}")
    lines.append(f"(* meets the target of {target_db:g} dB against the upstream setting, worst seed; "
                 "errors on the generated mel)")
    return "\n".join(lines)


def tune(artifacts, tokens=None, voice=None, target_db: float = 30.0, seeds=(0, 1), max_nfe: int = 32,
         progress: Callable[[str], None] = print, *, precision: str = "fp32", reference_steps: int = 64,
         stop_early: bool = True, write: bool = True) -> dict:
    """Measure, choose and record the cheapest setting within target_db of upstream; returns the record.

    The returned dict holds solver, steps, cfg_rate, target_db, nfe, measured (what goes into the
    manifest) and table (the printed text). Raises TuneError when nothing within max_nfe qualifies."""
    from s3gen_runtime.manifest import Tuning, load_manifest, write_manifest
    from s3gen_runtime.pipeline import S3GenRuntime

    target_db, seeds = _check_args(target_db, seeds, max_nfe)
    if isinstance(reference_steps, bool) or not isinstance(reference_steps, int) or reference_steps < 2:
        raise InputError(f"reference_steps must be an integer >= 2, got {reference_steps!r}")
    artifacts = Path(artifacts)
    start_all = time.perf_counter()
    runtime = S3GenRuntime(artifacts, precision=precision)
    variant = runtime.variant
    meanflow = variant == "meanflow"
    upstream = {"solver": runtime.defaults.solver, "steps": runtime.defaults.steps,
                "cfg_rate": runtime.defaults.cfg_rate}
    tokens, voice, source = _request(tokens, voice)
    progress(f"tuning {artifacts} ({variant}, {precision}) on {source}: {voice.prompt_tokens} prompt + "
             f"{len(tokens)} tokens, seeds {list(seeds)}; upstream setting {upstream['solver']} "
             f"{upstream['steps']} steps, cfg_rate {upstream['cfg_rate']:g}; target {target_db:g} dB")
    problem = prepare_problem(runtime, tokens, voice, seeds, upstream["cfg_rate"])

    up_mel, up_seconds, up_nfe = solve_mel(problem, upstream["solver"], upstream["steps"])
    ref = converged_reference(problem, reference_steps, progress)
    solvers = ("meanflow",) if meanflow else STANDARD_SOLVERS
    levels = [n for n in NFE_LEVELS if n <= max_nfe]
    rows, chosen = [], None
    for level in levels:
        level_rows = []
        for solver, steps, nfe in candidates(solvers, [level]):
            if (solver, steps) == (upstream["solver"], upstream["steps"]):
                mel, seconds = up_mel, up_seconds
            else:
                mel, seconds, nfe = solve_mel(problem, solver, steps)
            vs_up, vs_ref = errors_against(mel, up_mel), errors_against(mel, ref["mel"])
            row = {"solver": solver, "steps": steps, "nfe": nfe, "snr_db_vs_upstream": vs_up["snr_db_min"],
                   "rel_rms_vs_upstream": max(vs_up["rel_rms"]), "snr_db_vs_converged": vs_ref["snr_db_min"],
                   "rel_rms_vs_converged": max(vs_ref["rel_rms"]),
                   "seconds_per_utterance": seconds / len(seeds),
                   "upstream": (solver, steps) == (upstream["solver"], upstream["steps"])}
            level_rows.append(row)
            progress(f"  {solver:<9} {steps:>3} steps ({nfe:>2} NFE): {row['snr_db_vs_upstream']:6.1f} dB vs upstream, "
                     f"{row['snr_db_vs_converged']:6.1f} dB vs converged")
        rows += level_rows
        passing = [r for r in level_rows if r["snr_db_vs_upstream"] >= target_db]
        if passing and chosen is None:
            chosen = max(passing, key=lambda r: r["snr_db_vs_upstream"])
            if stop_early:
                break
    if not any(r["upstream"] for r in rows):   # the upstream setting's own distance to converged, for the table
        vs_ref = errors_against(up_mel, ref["mel"])
        rows.append({"solver": upstream["solver"], "steps": upstream["steps"], "nfe": up_nfe,
                     "snr_db_vs_upstream": 200.0, "rel_rms_vs_upstream": 0.0,
                     "snr_db_vs_converged": vs_ref["snr_db_min"], "rel_rms_vs_converged": max(vs_ref["rel_rms"]),
                     "seconds_per_utterance": up_seconds / len(seeds), "upstream": True})
    if chosen is None:
        best = max(rows, key=lambda r: (r["snr_db_vs_upstream"] if not r["upstream"] else -1))
        raise TuneError(f"no setting within max_nfe={max_nfe} reaches {target_db:g} dB against the upstream setting; "
                        f"the best was {best['solver']} {best['steps']} steps at {best['snr_db_vs_upstream']:.1f} dB: "
                        f"raise max_nfe or lower target_db")
    table = format_table(rows, target_db, chosen)
    progress(table)
    measured = {
        "precision": precision, "variant": variant,
        "request": {"source": source, "prompt_tokens": voice.prompt_tokens, "new_tokens": int(len(tokens)),
                    "mel_frames": problem.frames},
        "seeds": list(seeds), "upstream": {**upstream, "nfe": up_nfe},
        "reference": {k: v for k, v in ref.items() if k not in ("mel", "check")} | {
            "check_rel_rms": ref["check"]["rel_rms_mean"], "check_snr_db_min": ref["check"]["snr_db_min"]},
        "selection": "cheapest NFE whose worst-seed mel SNR against the upstream setting >= target_db; "
                     "best SNR among equal NFE" + ("; later NFEs not measured" if stop_early else ""),
        "max_nfe": max_nfe, "rows": rows,
        "seconds": time.perf_counter() - start_all,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record = Tuning(chosen["solver"], int(chosen["steps"]), float(upstream["cfg_rate"]), target_db, measured)
    if write:
        manifest = load_manifest(artifacts, verify=True)
        write_manifest(artifacts, dataclasses.replace(manifest, tuning=record))
        progress(f"recorded tuning in {artifacts / 'manifest.json'}: {chosen['solver']} {chosen['steps']} steps "
                 f"({chosen['nfe']} NFE, {chosen['snr_db_vs_upstream']:.1f} dB vs upstream) is now the default")
    return {**record.to_dict(), "nfe": chosen["nfe"], "table": table}

"""summary.md: the machine, the tables of every section, and the targets with what stands in the way."""
from __future__ import annotations

from pathlib import Path

from .ceiling import ceiling_of
from .flops import call_gflops, efficiency_lines
from .scaling import ATTENTION
from .meanflow import meanflow_section, meanflow_target, vocoder_target
from .voice import voice_section
from .streaming import streaming_section
from .chatterbox import chatterbox_section
from .export_time import export_time_section
from .vocos import vocos_section
from .memory import memory_targets

TARGETS = {"fp32_e2e": 1.5, "int8_e2e": 2.5, "int8_mel_snr_db": 30.0, "int8_estimator": 2.0}
SYNTHETIC_NOTE = ("**All numbers come from the synthetic checkpoint**: deterministic pseudo-random weights with the "
                  "real architecture and sizes (`s3gen-aot synth-checkpoint`), not trained weights. Speed and memory "
                  "depend on shapes and operators only, so they carry over to real checkpoints; output errors and "
                  "solver fidelity describe the synthetic network's velocity field, which is far rougher than a "
                  "trained one. Measure fidelity on real weights with `s3gen-aot tune`.")


def _f(v, fmt="{:.2f}", none="-"):
    return none if v is None else fmt.format(v)


def _rows(speed, config):
    return sorted([r for r in speed["table"] if r["config"] == config], key=lambda r: r["audio_seconds"])


def _needed_estimator_speedup(base, row, target) -> str:
    """What one estimator call would need, the rest of the pipeline as measured, to reach `target` end to end."""
    if not row.get("e2e_seconds") or not base.get("e2e_seconds"):
        return ""
    nfe = 10
    rest = row["e2e_seconds"] - nfe * row["estimator_call_seconds"]
    budget = base["e2e_seconds"] / target - rest
    if budget <= 0:
        return (f"even free estimator calls would not do it at {row['audio_seconds']:g} s: the rest of the pipeline "
                f"(encoder {row['encoder_seconds']:.2f} s, vocoder {row['vocoder_seconds']:.2f} s, overhead) already "
                f"takes {rest:.2f} s of the {base['e2e_seconds'] / target:.2f} s allowed")
    need = base["estimator_call_seconds"] / (budget / nfe)
    enc = base["encoder_seconds"] / row["encoder_seconds"] if row.get("encoder_seconds") else float("nan")
    voc = base["vocoder_seconds"] / row["vocoder_seconds"] if row.get("vocoder_seconds") else float("nan")
    return (f"at {row['audio_seconds']:g} s the estimator calls are {100 * nfe * row['estimator_call_seconds'] / row['e2e_seconds']:.0f}% "
            f"of the time and run {row.get('estimator_speedup_vs_eager', float('nan')):.2f}x eager (encoder {enc:.2f}x, "
            f"vocoder {voc:.2f}x); with the rest as measured, {target:g}x end to end needs {need:.2f}x per estimator "
            "call")


def _ceiling_bound(speed: dict, base: dict, precision: str) -> str:
    """The most any graph of the estimator's FLOPs could run per call, at the measured GEMM ceiling."""
    ceiling, model = ceiling_of(speed, precision), speed.get("estimator_flops")
    if not ceiling or not model or not base.get("estimator_call_seconds"):
        return ""
    eager = call_gflops(model, base)
    return (f"the fastest {precision} GEMM measured in this run ({ceiling:.0f} GFLOP/s) is {ceiling / eager:.2f}x "
            f"eager's call rate at {base['audio_seconds']:g} s ({eager:.0f} GFLOP/s): the most any {precision} graph of "
            "the same FLOPs could give per call, even with every FLOP at GEMM speed")


def _nearest(profiles: list, frames: int | None) -> dict:
    """The profile measured at the length nearest `frames` (the first one when no length is given)."""
    return min(profiles, key=lambda p: abs(p["frames"] - frames)) if frames else profiles[0]


def _amdahl(scaling: dict | None, fp32_speedup: float | None, frames: int | None = None) -> str:
    """The most int8 weight matmuls can give, from the fp32 call's measured time shares at the profiled
    length nearest `frames` (attention's share grows with length, so the bound falls)."""
    prof = (scaling or {}).get("profile", {})
    if not prof.get("ort-fp32"):
        return ""
    fp = _nearest(prof["ort-fp32"], frames)
    w = fp["groups"].get("fp32 weight matmuls", 0.0)
    bound = 1.0 / (1.0 - w) if w < 1 else float("inf")
    text = (f"in the fp32 call (ORT profiler, {fp['frames']} frames) the weight matmuls that int8 can "
            f"quantize are {100 * w:.0f}% of the time, so even free weight matmuls give at most {bound:.2f}x ORT fp32")
    if fp32_speedup:
        text += f" = {bound * fp32_speedup:.2f}x eager"
    if prof.get("ort-int8"):
        g8 = _nearest(prof["ort-int8"], frames)["groups"]
        text += "; the int8 call's time: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in g8.items())
    return text


def _attention_share(scaling: dict | None) -> str:
    """How much of the ORT fp32 call is attention, at each profiled length (measured, section c)."""
    profs = ((scaling or {}).get("profile") or {}).get("ort-fp32") or []
    if not profs:
        return ""
    keys = ("attention matmuls (QK^T, AV)", "softmax", ATTENTION)
    parts = [f"{100 * sum(p['groups'].get(k, 0) for k in keys):.0f}% at {p['frames']} frames" for p in profs]
    return ("in the ORT fp32 call, attention (fused MultiHeadAttention, or QK^T and AV matmuls + softmax where the "
            "graph has them) takes " + ", ".join(parts) + " of the kernel time (ORT profiler, section c); its "
            "FLOPs grow as frames^2, and eager runs the same math at the rates in the GFLOP/s table")


def targets(speed: dict | None, fid: dict | None, scaling: dict | None = None) -> list[dict]:
    out = []
    if not speed:
        return out
    eager = {r["audio_seconds"]: r for r in _rows(speed, "eager")}

    def e2e_target(config, key, label, snr_floor=None):
        rows = [r for r in _rows(speed, config) if r.get("speedup_vs_eager") is not None]
        if not rows:
            reason = speed["configs"].get(config, {}).get("reason", "not measured")
            out.append({"target": label, "measured": "not measured", "met": False, "detail": reason})
            return
        worst = min(rows, key=lambda r: r["speedup_vs_eager"])
        measured = ", ".join(f"{r['speedup_vs_eager']:.2f}x @ {r['audio_seconds']:g} s" for r in rows)
        met = all(r["speedup_vs_eager"] >= TARGETS[key] for r in rows)
        detail = []
        if not met:
            detail.append(f"short by {TARGETS[key] / worst['speedup_vs_eager']:.2f}x at {worst['audio_seconds']:g} s "
                          f"({worst['speedup_vs_eager']:.2f}x of {TARGETS[key]:g}x)")
            detail.append(_needed_estimator_speedup(eager[worst["audio_seconds"]], worst, TARGETS[key]))
            detail.append(_ceiling_bound(speed, eager[worst["audio_seconds"]], "int8" if config == "ort-int8" else "fp32"))
            if config == "ort-int8":
                fp = {r["audio_seconds"]: r for r in _rows(speed, "ort-fp32")}.get(worst["audio_seconds"], {})
                detail.append(_amdahl(scaling, fp.get("estimator_speedup_vs_eager"), worst.get("mel_frames")))
            else:
                detail.append(_attention_share(scaling))
        if snr_floor is not None:
            snrs = [r["vs_eager"]["mel_snr_db"] for r in rows if r.get("vs_eager")]
            if snrs:
                measured += f"; mel SNR vs eager {min(snrs):.1f} dB (worst)"
                if min(snrs) < snr_floor:
                    met = False
                    detail.append(f"mel SNR {min(snrs):.1f} dB is below {snr_floor:g} dB")
        out.append({"target": label, "measured": measured, "met": met, "detail": "; ".join(d for d in detail if d)})

    e2e_target("ort-fp32", "fp32_e2e", f"end-to-end fp32 >= {TARGETS['fp32_e2e']:g}x eager")
    e2e_target("ort-int8", "int8_e2e", f"end-to-end int8 >= {TARGETS['int8_e2e']:g}x eager at >= "
                                       f"{TARGETS['int8_mel_snr_db']:g} dB mel SNR", TARGETS["int8_mel_snr_db"])
    rows = [r for r in _rows(speed, "ort-int8") if r.get("estimator_speedup_vs_eager") is not None]
    if rows:
        worst = min(rows, key=lambda r: r["estimator_speedup_vs_eager"])
        met = all(r["estimator_speedup_vs_eager"] >= TARGETS["int8_estimator"] for r in rows)
        fp32 = {r["audio_seconds"]: r for r in _rows(speed, "ort-fp32")}
        detail = ""
        if not met:
            f = fp32.get(worst["audio_seconds"], {})
            detail = (f"short by {TARGETS['int8_estimator'] / worst['estimator_speedup_vs_eager']:.2f}x at "
                      f"{worst['audio_seconds']:g} s; ORT fp32 alone is {_f(f.get('estimator_speedup_vs_eager'))}x "
                      f"eager per call and int8 adds {_f(f.get('estimator_call_seconds') and f['estimator_call_seconds'] / worst['estimator_call_seconds'])}x "
                      "on top; " + "; ".join(t for t in (_ceiling_bound(speed, eager.get(worst["audio_seconds"], {}), "int8"),
                                                          _amdahl(scaling, f.get("estimator_speedup_vs_eager"), worst.get("mel_frames"))) if t))
        out.append({"target": f"int8 estimator >= {TARGETS['int8_estimator']:g}x eager",
                    "measured": ", ".join(f"{r['estimator_speedup_vs_eager']:.2f}x @ {r['audio_seconds']:g} s" for r in rows),
                    "met": met, "detail": detail})
    else:
        out.append({"target": f"int8 estimator >= {TARGETS['int8_estimator']:g}x eager", "measured": "not measured",
                    "met": False, "detail": speed["configs"].get("ort-int8", {}).get("reason", "")})
    return out


def _speed_section(speed: dict) -> list[str]:
    s = speed["settings"]
    lines = ["## a. Speed (tokens -> wav)", "",
             f"Prompt {s['prompt_tokens']} tokens ({s['prompt_tokens'] / 25:g} s), upstream's setting ({s['solver']} {s['steps']} steps, CFG "
             f"{s['cfg_rate']}), identical noise for every configuration; medians of the runs (repeats per length "
             f"{s['repeats']}; the estimator column is the median of every call). Each configuration runs in its own "
             "process, loaded before any measurement; runs are interleaved. RTF = synthesis seconds / audio seconds "
             "(< 1 is faster than real time). Speedups are against eager measured in the same run. The torch "
             f"configurations run with OMP_WAIT_POLICY={s.get('torch_omp_wait_policy')} (see config.py: libgomp's "
             "spin-waiting made eager up to 10x slower whenever another process was busy on this shared machine; "
             "the passive policy costs nothing when it is idle, so this favours the baseline).", "",
             "| audio | config | e2e s | RTF | speedup | encoder s | estimator s/call | est. speedup | vocoder s | "
             "mel max abs vs eager | mel SNR dB | wav SNR dB | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {c: i for i, c in enumerate(("eager", "compile", "ort-fp32", "ort-int8"))}
    for r in sorted(speed["table"], key=lambda r: (r["audio_seconds"], order.get(r["config"], 9))):
        v = r.get("vs_eager") or {}
        runs = f" ({r['e2e_runs']})" if r.get("e2e_runs") else ""
        lines.append(f"| {r['audio_seconds']:g} s | {r['config']} | {_f(r.get('e2e_seconds'))}{runs} | "
                     f"{_f(r.get('rtf'))} | {_f(r.get('speedup_vs_eager'), '{:.2f}x')} | "
                     f"{_f(r.get('encoder_seconds'))} | {_f(r.get('estimator_call_seconds'))} | "
                     f"{_f(r.get('estimator_speedup_vs_eager'), '{:.2f}x')} | {_f(r.get('vocoder_seconds'))} | "
                     f"{_f(v.get('mel_max_abs'), '{:.2g}')} | {_f(v.get('mel_snr_db'), '{:.1f}')} | "
                     f"{_f(v.get('wav_snr_db'), '{:.1f}')} | {_f(r.get('peak_rss_mb'), '{:.0f}')} |")
    lines.append("")
    int8 = [r for r in speed["table"] if r.get("vs_ort_fp32")]
    if int8:
        lines.append("int8 against ORT fp32 (same noise): " + "; ".join(
            f"{r['audio_seconds']:g} s: mel {r['vs_ort_fp32']['mel_snr_db']:.1f} dB, wav {r['vs_ort_fp32']['wav_snr_db']:.1f} dB"
            for r in sorted(int8, key=lambda r: r["audio_seconds"])) + ".")
        lines.append("")
    for name, st in speed["configs"].items():
        if st.get("status") != "ok":
            lines.append(f"- **{name}**: {st['status']}: {st.get('reason', '')}")
        elif name == "compile":
            lines.append(f"- **compile**: `torch.compile(estimator, dynamic=True)` (inductor, CPU), compiled cold (a fresh "
                         f"inductor cache); compilation + first call took {st.get('warmup_seconds', float('nan')):.0f} s.")
    for note in speed.get("notes", []):
        lines.append(f"- {note}")
    lines += ["", "![speed](speed.png)", "", "![components](speed_components.png)", ""]
    return lines


def _fidelity_section(fid: dict) -> list[str]:
    s, conv = fid["settings"], fid["convergence"]
    cases = ", ".join(f"{c['audio_seconds']:g} s ({c['frames']} frames)" for c in fid["cases"])
    lines = ["## b. Solver fidelity (ONNX Runtime fp32, the exported network)", "",
             f"Error of the generated mel against a converged solution of the same ODE (same noise and conditioning), "
             f"CFG {s['cfg_rate']}, upstream's cosine grid for every solver; lengths {cases} after a "
             f"{s['prompt_tokens']}-token prompt, seeds {s['seeds']}. Rel RMS = |mel - ref| / |ref|; SNR = "
             "-20 log10(rel RMS). Time: wall seconds per utterance (seeds run as one batch).", "",
             f"Converged reference: {conv['reference']}; it differs from {conv['check']} by "
             f"{_f(conv.get('check_rel_rms'), '{:.2e}')} rel RMS, {_f(conv.get('margin'), '{:.1f}')}x below the smallest "
             f"error measured ({conv['smallest_measured_rel_rms']:.2e})."
             + (f" The reference steps were reduced from the planned count to fit the time budget "
                f"(projected {conv['plan']['projected_seconds'] / 60:.1f} min)." if conv.get("plan", {}).get("reduced")
                else "")
             + (f" NFE {conv['plan']['nfe_dropped']} were dropped from the grid to fit the time budget."
                if conv.get("plan", {}).get("nfe_dropped") else ""), "",
             "| solver | steps | NFE | rel RMS (mean) | rel RMS (max) | SNR dB (mean) | SNR dB (min) | "
             "SNR dB vs upstream (min) | s/utterance |", "|---|---|---|---|---|---|---|---|---|"]
    for r in fid["table"]:
        lines.append(f"| {r['solver']} | {r['steps']} | {r['nfe']} | {r['rel_rms_mean']:.3e} | {r['rel_rms_max']:.3e} | "
                     f"{r['snr_db_mean']:.1f} | {r['snr_db_min']:.1f} | {r['snr_db_vs_upstream_min']:.1f} | "
                     f"{r['seconds_per_utterance']:.2f} |")
    best = {}
    for r in fid["table"]:
        if r["nfe"] <= 10:
            best.setdefault(r["nfe"], []).append(r)
    lines.append("")
    up = [r for r in fid["table"] if (r["solver"], r["steps"]) == ("euler", 10)]
    if up:
        u = up[0]["rel_rms_mean"]
        cheaper = [r for r in fid["table"] if r["nfe"] < 10 and r["rel_rms_mean"] <= u]
        lines.append(f"Upstream (Euler, 10 steps) is {u:.3f} rel RMS from converged. " + (
            "Cheaper settings at least as close: " + ", ".join(f"{r['solver']} {r['steps']} steps ({r['nfe']} NFE)"
                                                                for r in cheaper) + "."
            if cheaper else "No setting with fewer than 10 NFE is as close on this network."))
    i8 = fid.get("int8_vs_fp32") or {}
    if i8.get("rows"):
        lines.append(f"int8 against fp32 at the upstream setting (same noise): mel SNR >= {i8['mel_snr_db_min']:.1f} dB, "
                     f"waveform SNR >= {i8['wav_snr_db_min']:.1f} dB over {len(i8['rows'])} utterances.")
    lines += ["", "![fidelity](fidelity.png)", ""]
    return lines


def _scaling_section(sc: dict) -> list[str]:
    lines = ["## c. Scaling (ONNX Runtime, one estimator call with CFG)", "",
             "| frames | " + " | ".join(f"{c} s" for c in sc["fit"]) + " |", "|---|" + "---|" * len(sc["fit"])]
    for f in sc["settings"]["frames"]:
        vals = [next((r["seconds"] for r in sc["frames"] if r["config"] == c and r["frames"] == f), None)
                for c in sc["fit"]]
        lines.append(f"| {f} | " + " | ".join(_f(v, "{:.3f}") for v in vals) + " |")
    lines.append("")
    lines.append("Fitted time ~ frames^k: " + "; ".join(
        f"{c}: k = {fit['exponent']:.2f} (r^2 {fit['r2']:.3f})" for c, fit in sc["fit"].items()) +
                 ". k > 1 is the attention's quadratic term (full self-attention over all frames).")
    lines += ["", f"Throughput against batch size ({sc['settings']['batch_frames']} frames per row):", "",
              "| batch | " + " | ".join(f"{c} frames/s (x batch 1)" for c in sc["fit"]) + " |",
              "|---|" + "---|" * len(sc["fit"])]
    for b in sc["settings"]["batch_sizes"]:
        cells = []
        for c in sc["fit"]:
            r = next((r for r in sc["batch"] if r["config"] == c and r["batch"] == b), None)
            cells.append("-" if r is None else f"{r['frames_per_second']:.0f} ({r['throughput_vs_batch1']:.2f}x)")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    cols = [(c, p) for c, ps in (sc.get("profile") or {}).items() for p in ps]
    if cols:
        groups = list(dict.fromkeys(g for _, p in cols for g in p["groups"]))
        lines += ["", "Where one call's time goes (ONNX Runtime's profiler, share of kernel time):", "",
                  "| kernel group | " + " | ".join(f"{c} @ {p['frames']} frames" for c, p in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for g in groups:
            lines.append(f"| {g} | " + " | ".join(f"{100 * p['groups'].get(g, 0.0):.0f}%" for _, p in cols) + " |")
    lines += ["", "![scaling](scaling.png)", ""]
    return lines


def _longest_run(speed: dict | None, config: str):
    """The longest audio a configuration synthesised (or ran estimator calls for) in section a."""
    if not speed:
        return None
    lengths = [r["audio_seconds"] for r in speed.get("runs", []) if r["config"] == config]
    lengths += [c["audio_seconds"] for c in speed.get("compile_components", []) if c["config"] == config]
    return max(lengths) if lengths else None


def _memory_section(mem: dict, speed: dict | None = None) -> list[str]:
    lines = ["## d. Memory", "", "Weights = bytes of the ONNX initializers of the graphs the runtime opens "
             "(encoder, estimator_cfg, estimator, vocoder; int8 takes the `_int8` graph where there is one).", "",
             "| precision | weights MiB | per graph MiB |", "|---|---|---|"]
    for p, d in mem["precisions"].items():
        per = ", ".join(f"{n} {mem['graphs'][n]['bytes'] / 2 ** 20:.0f}" for n in d["graphs"].values())
        lines.append(f"| {p} | {d['weights_mb']:.0f} | {per} |")
    lines += ["", "| configuration | RSS after load MiB | peak RSS MiB | longest request it ran |", "|---|---|---|---|"]
    for n, d in mem["processes"].items():
        longest = _longest_run(speed, n)
        lines.append(f"| {n} | {_f(d.get('rss_after_load_mb'), '{:.0f}')} | {_f(d.get('peak_rss_mb'), '{:.0f}')} | "
                     f"{_f(longest, '{:g} s')} |")
    lines += ["", mem["note"] + "."]
    for p, d in mem["precisions"].items():
        g = d["graphs"]
        if "estimator" in g and "estimator_cfg" in g:
            dup = mem["graphs"][g["estimator"]]["bytes"] / 2 ** 20
            lines.append(f"- {p}: `{g['estimator']}` and `{g['estimator_cfg']}` hold the same U-Net weights; the runtime "
                         f"opens both, so {dup:.0f} MiB of the {d['weights_mb']:.0f} MiB are a second copy "
                         "(opening the unguided graph only when cfg_rate = 0 is asked for would save it).")
    lines += ["", "![memory](memory.png)", ""]
    return lines


def _memory_observations(mem: dict, speed: dict | None, meanflow: dict | None = None) -> list[str]:
    """Peak RSS at the longest length, per configuration, against eager's (section a's processes), and
    the meanflow processes' peak at that length (2 estimator calls: what the estimator adds)."""
    if not speed:
        return []
    longest = max(speed["settings"]["lengths_s"])
    rows = {r["config"]: r for r in speed["table"] if r["audio_seconds"] == longest and r.get("e2e_seconds")}
    if "eager" not in rows:
        return []
    base = rows["eager"]["peak_rss_mb"]
    out = []
    for name in ("ort-fp32", "ort-int8"):
        if name in rows and rows[name].get("peak_rss_mb"):
            mf = {r["config"]: r for r in (meanflow or {}).get("table", []) if r["audio_seconds"] == longest}
            same = (f"; the meanflow {name} process, with its own graphs, peaks at {mf[name]['peak_rss_mb']:.0f} MiB "
                    "at that length" if mf.get(name, {}).get("peak_rss_mb") else "")
            out.append(f"- {name} peaks at {rows[name]['peak_rss_mb']:.0f} MiB by {longest:g} s of audio, "
                       f"{rows[name]['peak_rss_mb'] / base:.2f}x eager's {base:.0f} MiB, with "
                       f"{mem['precisions'].get(name[4:], {}).get('weights_mb', float('nan')):.0f} MiB of weights "
                       f"open{same}: activations of the long request, not weights, set this peak.")
    return out


def section_dates_line(machine: dict) -> list[str]:
    """One line when the sections' JSON come from runs at different dates (a subset rerun with --sections)."""
    dates = machine.get("section_dates") or {}
    if len(set(dates.values())) <= 1:
        return []
    by_date: dict = {}
    for section, date in dates.items():
        by_date.setdefault(date, []).append(section)
    return ["- Sections measured at different times on this machine (the date and wall time above are the "
            "latest run's): " + "; ".join(f"{', '.join(names)} at {date}" for date, names in sorted(by_date.items()))]


def write_summary(out: Path, results: dict) -> Path:
    m = results["machine"]
    v = m["versions"]
    lines = [f"# s3gen-aot benchmark{' (--quick)' if results['config']['quick'] else ''}", "", SYNTHETIC_NOTE, "",
             "## Machine", "",
             f"- CPU: {m['cpu_model']}, {m['cores']} cores; RAM {m['ram_gib']} GiB; {m['platform']}",
             f"- CPU flags: {' '.join((m.get('cpu') or {}).get('flags', [])) or 'not recorded'}; int8 dot products "
             f"via {(m.get('cpu') or {}).get('int8_dot_product', 'not recorded')}; peak fp32 "
             + (f"{m['peak_fp32']['gflops']:.0f} GFLOP/s ({m['peak_fp32']['formula']})"
                if (m.get('peak_fp32') or {}).get('gflops') else "unknown"),
             f"- Python {v.get('python')}, torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}, onnx "
             f"{v.get('onnx')}, numpy {v.get('numpy')}, matplotlib {v.get('matplotlib')}, s3gen-aot {v.get('s3gen-aot')}",
             f"- Date: {m['date']}; load average at start {m['load_average_at_start']}, at end "
             f"{results.get('load_average_at_end')} (other processes share this machine; runs are interleaved to "
             "spread their noise evenly)",
             f"- Wall time of this run: {results['seconds'] / 60:.1f} min"
             + (f" (export {results['setup']['seconds'] / 60:.1f} min)" if results["setup"].get("exported") else
                " (export reused)"), *section_dates_line(m), ""]
    speed, fid = results.get("speed"), results.get("fidelity")
    tg = targets(speed, fid, results.get("scaling")) + memory_targets(speed)
    mf = results.get("meanflow")
    for t in (meanflow_target(mf), meanflow_target(mf, "ort-int8", 2.0), vocoder_target(mf)):
        tg += [{"target": t["target"], "measured": t["measured"], "met": t["met"], "detail": t["why"]}] if t else []
    if tg:
        lines += ["## Targets", "", "| target | measured | met | what stands in the way |", "|---|---|---|---|"]
        for t in tg:
            lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} | {t['detail'] or '-'} |")
        lines.append("")
    if speed:
        lines += _speed_section(speed)
        lines += efficiency_lines(speed, speed.get("estimator_flops"), m.get("peak_fp32"))
    if fid:
        lines += _fidelity_section(fid)
    if results.get("scaling"):
        lines += _scaling_section(results["scaling"])
    if results.get("memory"):
        mem_lines = _memory_section(results["memory"], speed)
        extra = _memory_observations(results["memory"], speed, results.get("meanflow"))
        at = mem_lines.index("![memory](memory.png)")
        lines += mem_lines[:at] + extra + ([""] if extra else []) + mem_lines[at:]
    if results.get("meanflow"):
        lines += meanflow_section(results["meanflow"])
    if results.get("voice"):
        lines += voice_section(results["voice"])
    if results.get("streaming"):
        lines += streaming_section(results["streaming"])
    if results.get("vocos"):
        lines += vocos_section(results["vocos"])
    if results.get("export_time"):
        lines += export_time_section(results["export_time"])
    if results.get("chatterbox"):
        lines += chatterbox_section(results["chatterbox"])
    lines += ["## Files", "", "speed.json, fidelity.json, scaling.json, memory.json, meanflow.json, voice.json, streaming.json, vocos.json, export_time.json, chatterbox.json, machine.json (all numbers, "
              "every run); this summary; the PNG plots.", ""]
    path = Path(out) / "summary.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path

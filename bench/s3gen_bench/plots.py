"""PNG plots of the benchmark results (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

COLORS = {"eager": "#555555", "compile": "#8c564b", "ort-fp32": "#1f77b4", "ort-int8": "#ff7f0e",
          "euler": "#1f77b4", "heun": "#2ca02c", "midpoint": "#9467bd", "dpmpp2m": "#d62728", "meanflow": "#17becf"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def plot_speed(speed: dict, out: Path) -> list[Path]:
    plt = _plt()
    rows = speed["table"]
    configs = [c for c in COLORS if any(r["config"] == c for r in rows)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for c in configs:
        rs = sorted([r for r in rows if r["config"] == c and r.get("rtf") is not None], key=lambda r: r["audio_seconds"])
        if rs:
            ax1.plot([r["audio_seconds"] for r in rs], [r["rtf"] for r in rs], "o-", color=COLORS[c], label=c)
        rs = sorted([r for r in rows if r["config"] == c and r.get("estimator_call_seconds")],
                    key=lambda r: r["audio_seconds"])
        if rs:
            ax2.plot([r["audio_seconds"] for r in rs], [r["estimator_call_seconds"] for r in rs], "o-",
                     color=COLORS[c], label=c)
    prompt = f"after a {speed['settings']['prompt_tokens'] / 25:g} s prompt"
    ax1.set(xlabel=f"audio seconds ({prompt})", ylabel="RTF (synthesis s / audio s)",
            title="end to end, 10 Euler steps + CFG")
    ax2.set(xlabel=f"audio seconds ({prompt})", ylabel="seconds per call",
            title="one estimator call with CFG (median)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    paths = [_save(fig, out / "speed.png")]

    lengths = sorted({r["audio_seconds"] for r in rows})
    fig, axes = plt.subplots(1, len(lengths), figsize=(3.2 * len(lengths) + 1, 4), squeeze=False)
    for ax, seconds in zip(axes[0], lengths):
        rs = [r for c in configs for r in rows if r["config"] == c and r["audio_seconds"] == seconds
              and r.get("e2e_seconds") is not None]
        x = np.arange(len(rs))
        enc = np.array([r["encoder_seconds"] for r in rs])
        est = np.array([r["e2e_seconds"] - r["encoder_seconds"] - r["vocoder_seconds"] for r in rs])
        voc = np.array([r["vocoder_seconds"] for r in rs])
        ax.bar(x, enc, color="#aec7e8", label="encoder")
        ax.bar(x, est, bottom=enc, color="#1f77b4", label="solver (10 estimator calls) + rest")
        ax.bar(x, voc, bottom=enc + est, color="#ffbb78", label="vocoder")
        ax.set_xticks(x, [r["config"] for r in rs], rotation=30)
        ax.set(title=f"{seconds:g} s audio", ylabel="seconds")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    paths.append(_save(fig, out / "speed_components.png", tight=False))
    return paths


def plot_fidelity(fid: dict, out: Path) -> list[Path]:
    plt = _plt()
    from matplotlib.ticker import FuncFormatter, NullFormatter

    table = fid["table"]
    conv = fid["convergence"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for solver in sorted({r["solver"] for r in table}):
        rs = sorted([r for r in table if r["solver"] == solver], key=lambda r: r["nfe"])
        kw = dict(color=COLORS.get(solver), label=solver, marker="o")
        ax1.loglog([r["nfe"] for r in rs], [r["rel_rms_mean"] for r in rs], **kw)
        ax2.loglog([r["seconds_per_utterance"] for r in rs], [r["rel_rms_mean"] for r in rs], **kw)
    for ax in (ax1, ax2):
        if conv.get("check_rel_rms"):
            ax.axhline(conv["check_rel_rms"], color="k", ls=":", lw=1, label="reference vs 2x its steps")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower left")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    nfes = sorted({r["nfe"] for r in table})
    ax1.set_xticks(nfes, [str(n) for n in nfes])
    up = [r for r in table if (r["solver"], r["steps"]) == ("euler", 10)]
    if up:
        ax1.plot([10], [up[0]["rel_rms_mean"]], "k*", ms=12)
        ax1.annotate("upstream (Euler 10)", (10, up[0]["rel_rms_mean"]), textcoords="offset points", xytext=(6, 8))
    ax2.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax1.set(xlabel="NFE (estimator calls)", ylabel="mel rel. RMS error vs converged",
            title="error vs NFE (mean over lengths and seeds)")
    ax2.set(xlabel="wall seconds per utterance (ORT fp32)", ylabel="mel rel. RMS error vs converged",
            title="error vs wall time")
    return [_save(fig, out / "fidelity.png")]


def plot_scaling(sc: dict, out: Path) -> list[Path]:
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for c, fit in sc["fit"].items():
        rs = [r for r in sc["frames"] if r["config"] == c]
        f = np.array([r["frames"] for r in rs], dtype=float)
        ax1.loglog(f, [r["seconds"] for r in rs], "o", color=COLORS.get(c))
        ax1.loglog(f, fit["prefactor"] * f ** fit["exponent"], "-", color=COLORS.get(c),
                   label=f"{c}: ~ frames^{fit['exponent']:.2f}")
        rs = [r for r in sc["batch"] if r["config"] == c]
        ax2.plot([r["batch"] for r in rs], [r["frames_per_second"] for r in rs], "o-", color=COLORS.get(c), label=c)
    ax1.set(xlabel="mel frames", ylabel="seconds per estimator call (CFG)", title="estimator time vs frames")
    ax2.set(xlabel="batch size", ylabel="frames per second",
            title=f"throughput vs batch ({sc['settings']['batch_frames']} frames per row)")
    ax2.set_xscale("log", base=2)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    return [_save(fig, out / "scaling.png")]


def plot_memory(mem: dict, out: Path) -> list[Path]:
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    precs = list(mem["precisions"])
    ax1.bar(precs, [mem["precisions"][p]["weights_mb"] for p in precs], color=[COLORS["ort-" + p] for p in precs])
    ax1.set(ylabel="MiB", title="weights in the graphs the runtime loads")
    procs = {k: v for k, v in mem["processes"].items() if v.get("peak_rss_mb")}
    names = list(procs)
    x = np.arange(len(names))
    ax2.bar(x - 0.2, [procs[n]["rss_after_load_mb"] or 0 for n in names], 0.4, color="#c7c7c7")
    ax2.bar(x + 0.2, [procs[n]["peak_rss_mb"] for n in names], 0.4, color=[COLORS.get(n) for n in names])
    ax2.set_xticks(x, names)
    ax2.set(ylabel="MiB", title="RSS: after load (grey), peak over its runs (colour)")
    return [_save(fig, out / "memory.png")]


def plot_streaming(st: dict, out: Path) -> list[Path]:
    """Quality vs schedule and left context; time to first audio and total cost vs utterance length."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    rows = st["quality"]
    labels = [f"{r['first']}/{r['chunk']}x{r['growth']:g}\nleft {r['left_frames']}" for r in rows]
    x = np.arange(len(rows))
    ax1.bar(x - 0.27, [r["wav_snr_db"] for r in rows], 0.27, label="stream wav SNR", color="#1f77b4")
    ax1.bar(x, [r["seam_wav_snr_db"] or 0 for r in rows], 0.27, label="stream wav SNR at seams", color="#aec7e8")
    ax1.bar(x + 0.27, [r["vocoder_only"]["wav_snr_db"] for r in rows], 0.27, label="vocoder alone (offline mel)",
            color="#ff7f0e")
    ax1.set_xticks(x, labels, fontsize=7)
    ax1.set(ylabel="dB vs offline (same seed)", title="streamed vs offline")
    ax1.legend(fontsize=7)
    for key, style in (("ttfa_ratio", "o-"), ("total_ratio", "s--")):
        for sched in sorted({(c["first"], c["chunk"], c["growth"]) for c in st["cost"]}):
            pts = sorted((c["seconds"], c[key]) for c in st["cost"] if (c["first"], c["chunk"], c["growth"]) == sched)
            ax2.plot(*zip(*pts), style, label=f"{'TTFA' if key == 'ttfa_ratio' else 'total'} {sched[0]}/{sched[1]}x{sched[2]:g}")
    ax2.axhline(1.0, color="#999999", lw=0.8)
    ax2.set(xlabel="utterance length, s", ylabel="x offline latency", title="time to first audio and total cost")
    ax2.legend(fontsize=7)
    return [_save(fig, out / "streaming.png")]

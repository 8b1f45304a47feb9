"""Section g: Vocos vs HiFT as the `vocoder` graph on this CPU.

A Vocos of the published vocos-mel-24khz size (ConvNeXt 512/1536 x 8) over S3Gen's mel (head n_fft 1920,
hop 480), random weights (speed does not depend on them), is exported like any Vocos (validated against
the vocos package's eager decode; its error is recorded). Each vocoder graph then runs in a torch-free
process of its own (peak RSS is that process's VmHWM) on mels of a few lengths, batch 1, after a warm-up;
and once on a batch of 4 unequal rows against the same rows one at a time (padding is masked, so a
batch is allowed: is it faster?).

    python -m s3gen_bench.vocos GRAPH SECONDS,... REPEATS     (the child; prints one JSON line)
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .common import Progress, median

RESULT_PREFIX = "VOCODER_RESULT "
MEL_RATE = 50
BATCH_SECONDS = (3.0, 5.0, 8.0, 10.0)


def feeds(session, rows_frames: list[int], seed: int = 0) -> dict:
    """Random S3Gen-like mels for the rows; the sine inputs only if the graph declares them (HiFT)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    frames = max(rows_frames)
    lengths = np.array(rows_frames, dtype=np.int64)
    mask = (np.arange(frames)[None, :] < lengths[:, None]).astype(np.float32)[:, None, :]
    mel = (rng.standard_normal((len(rows_frames), 80, frames)) * 2.0 - 5.0).astype(np.float32) * mask
    out = {"mel": mel, "mel_lengths": lengths}
    declared = {i.name: i.shape for i in session.get_inputs()}
    if "sine_phase" in declared:
        out["sine_phase"] = rng.uniform(-np.pi, np.pi, (len(rows_frames), declared["sine_phase"][1], 1)).astype(np.float32)
        out["sine_noise"] = rng.standard_normal((len(rows_frames), declared["sine_noise"][1], 480 * frames)).astype(np.float32)
    return out


def timed(session, feed: dict) -> float:
    start = time.perf_counter()
    session.run(["wav"], feed)
    return time.perf_counter() - start


def measure(graph: str, seconds: list[float], repeats: int) -> dict:
    """The child's work: open the graph, time each length (batch 1), then batch 4 vs the rows alone."""
    import onnxruntime as ort

    from .common import current_rss_mb, peak_rss_mb

    start = time.perf_counter()
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    load, rss_after_load = time.perf_counter() - start, current_rss_mb()
    lengths = []
    for s in seconds:
        feed = feeds(session, [int(s * MEL_RATE)])
        timed(session, feed)   # warm-up
        runs = [timed(session, feed) for _ in range(repeats)]
        lengths.append({"audio_seconds": s, "runs": runs, "seconds_per_audio_second": median(runs) / s})
    rows = [int(s * MEL_RATE) for s in BATCH_SECONDS]
    batch = timed(session, feeds(session, rows))
    alone = sum(timed(session, feeds(session, [r])) for r in rows)
    return {"load_seconds": load, "rss_after_load_mb": rss_after_load, "peak_rss_mb": peak_rss_mb(),
            "lengths": lengths, "batch4": {"rows_seconds": list(BATCH_SECONDS), "batched": batch, "one_at_a_time": alone},
            "torch_imported": "torch" in sys.modules}


def export_published_size(workdir: Path, progress: Progress) -> dict:
    """Write the published-size Vocos over S3Gen's mel and export + validate its graph."""
    from s3gen_export.stages.vocos_export import export_vocos_graph, load_vocoder
    from s3gen_export.model.vocos_features import s3gen_vocos_config
    from s3gen_export.model.vocos_load import write_vocos

    folder = write_vocos(Path(workdir) / "vocos_s3gen_published_size", s3gen_vocos_config())
    loaded = load_vocoder(folder, progress)
    graph = export_vocos_graph(loaded, Path(workdir) / "vocos_vocoder.onnx", {"precision": "fp32"}, progress)
    cases = graph.report.to_manifest()["cases"]
    return {"graph": str(graph.path), "parameters": loaded.record["parameters"], "passed": graph.report.passed,
            "max_abs_vs_vocos_eager": max(c["max_abs"]["wav"] for c in cases),
            "min_snr_db_vs_vocos_eager": min(c["snr_db"]["wav"] for c in cases),
            "weights_bytes": (folder / "pytorch_model.bin").stat().st_size}


def run_child(graph: Path, seconds, repeats: int) -> dict:
    proc = subprocess.run([sys.executable, "-m", "s3gen_bench.vocos", str(graph),
                           ",".join(map(str, seconds)), str(repeats)], capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"vocoder benchmark failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def run_vocos(artifacts: Path, workdir: Path, seconds, repeats: int, progress: Progress = print) -> dict:
    """Parent side: export the Vocos graph, then time HiFT's (from the artifacts) and Vocos' graph."""
    from s3gen_runtime.manifest import load_manifest

    manifest = load_manifest(artifacts, verify=False)
    if manifest.vocoder.kind != "hift":
        raise RuntimeError(f"{artifacts}: its vocoder is {manifest.vocoder.kind}; the comparison needs HiFT's")
    vocos = export_published_size(workdir, progress)
    hift_graph = Path(artifacts) / manifest.component("vocoder").file
    result = {"vocos": vocos, "hift": {"graph": str(hift_graph), "weights_bytes": hift_graph.stat().st_size}}
    for name, graph in (("hift", hift_graph), ("vocos", Path(vocos["graph"]))):
        result[name].update(run_child(graph, seconds, repeats), graph_bytes=graph.stat().st_size)
        rates = ", ".join(f"{l['audio_seconds']:g} s: {l['seconds_per_audio_second']:.4f}" for l in result[name]["lengths"])
        progress(f"  {name}: s per s of audio ({rates}); peak RSS {result[name]['peak_rss_mb']:.0f} MiB")
    return result


def vocos_section(v: dict) -> list[str]:
    h, o = v["hift"], v["vocos"]
    lines = ["## h. Vocos vs HiFT as the vocoder", "",
             f"HiFT: the artifacts' vocoder graph. Vocos: the published vocos-mel-24khz size over S3Gen's mel "
             f"({o['parameters'] / 1e6:.1f} M parameters, random weights), exported and validated against the vocos "
             f"package's eager decode: max abs error {o['max_abs_vs_vocos_eager']:.2g}, SNR >= "
             f"{o['min_snr_db_vs_vocos_eager']:.0f} dB. ONNX Runtime fp32, each in its own torch-free process, batch 1, "
             "median seconds of compute per second of audio.", "",
             "| vocoder | graph MB | " + " | ".join(f"{l['audio_seconds']:g} s audio" for l in h["lengths"])
             + " | RSS after load MiB | peak RSS MiB | batch of 4 / rows alone (s) |",
             "|---" * (len(h["lengths"]) + 5) + "|"]
    for name, r in (("HiFT", h), ("Vocos", o)):
        lines.append(f"| {name} | {r['graph_bytes'] / 1e6:.0f} | "
                     + " | ".join(f"{l['seconds_per_audio_second']:.4f}" for l in r["lengths"])
                     + f" | {r['rss_after_load_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['batch4']['batched']:.2f} / {r['batch4']['one_at_a_time']:.2f} |")
    speedups = [a["seconds_per_audio_second"] / b["seconds_per_audio_second"] for a, b in zip(h["lengths"], o["lengths"])]
    load = v.get("machine", {}).get("load_average_at_start")
    lines += ["", f"Vocos is {min(speedups):.1f}-{max(speedups):.1f}x faster than HiFT here"
              + (f" (load average {load} at the start: shared cores, absolute times are inflated)" if load else "")
              + ". Padding rows to the longest makes a batch slower than its rows alone on this CPU, for both. A usable one must be "
              "trained on S3Gen's mel features (e.g. distilled from HiFT's outputs); speed does not depend on the weights.", ""]
    return lines


def main(argv=None) -> int:
    graph, seconds, repeats = (argv or sys.argv[1:])[:3]
    print(RESULT_PREFIX + json.dumps(measure(graph, [float(s) for s in seconds.split(",")], int(repeats))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

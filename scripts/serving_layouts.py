"""Server layouts side by side: instances x threads x max batch x thread spinning, by the load test.

    python scripts/serving_layouts.py ARTIFACTS --tokens g.npz --voice g.npz --out layouts.json \
        --layout 1:2:8:spin --layout 2:2:1:sleep --layout 2:1:1:spin [--precision int8] [--reps 2]

Each layout is INSTANCES:THREADS:MAX_BATCH:spin|sleep. Every run starts its own `s3gen-aot serve` on
loopback, load-tests it (the same jobs, every response checked against its single-request wav) and stops
it with SIGTERM; the layouts are interleaved and repeated so the machine's noise spreads over all of them.
Writes the reports as JSON and a .md table beside it (medians over the repeats), with the envelope: the best
throughput any layout reached at the lowest and at the highest level. `--report-only --out layouts.json`
rebuilds the table from the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

from s3gen_runtime.io import load_tokens
from s3gen_runtime.serving.client import is_ready
from s3gen_runtime.serving.launch import free_ports, serve_command
from s3gen_runtime.serving.loadtest import run_load_test
from s3gen_runtime.voice import load_voice

READY_TIMEOUT_S = 180


def parse_layout(text: str) -> dict:
    instances, threads, max_batch, spin = text.split(":")
    if spin not in ("spin", "sleep"):
        raise argparse.ArgumentTypeError(f"layout {text!r}: the last field is spin or sleep")
    return {"name": text, "instances": int(instances), "threads": int(threads), "max_batch": int(max_batch),
            "spinning": spin == "spin"}


def layout_options(layout: dict, precision: str) -> list[str]:
    return ["--instances", str(layout["instances"]), "--threads", str(layout["threads"]),
            "--max-batch", str(layout["max_batch"]), "--precision", precision,
            "--spinning" if layout["spinning"] else "--no-spinning"]


def load_test_layout(artifacts: Path, layout: dict, precision: str, tokens, voice, args) -> dict:
    ports = free_ports(3)
    url = f"127.0.0.1:{ports[0]}"
    server = subprocess.Popen(serve_command(artifacts, *ports, *layout_options(layout, precision)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not is_ready(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server for layout {layout['name']} did not become ready")
            time.sleep(1)
        return run_load_test(url, tokens, voice, args.levels, args.jobs, args.requests_per_client,
                             args.max_seconds, args.steps, say=lambda m: None)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def throughput(report: dict, level: int) -> float:
    return next(r["audio_s_per_s"] for r in report["levels"] if r["concurrency"] == level)


def p50(report: dict, level: int) -> float:
    return next(r["latency_p50_s"] for r in report["levels"] if r["concurrency"] == level)


def median_throughput(reports: list[dict], level: int) -> float:
    """A layout's audio-s/s at `level`, median over its repeats."""
    return float(np.median([throughput(r, level) for r in reports]))


def summary_table(runs: dict, levels: list[int]) -> str:
    """Medians over the repeats; the last column compares with the first layout's throughput at 1 client."""
    low, high = min(levels), max(levels)
    names = list(runs)
    medians = {name: {level: median_throughput(reports, level) for level in (low, high)}
               for name, reports in runs.items()}
    base = medians[names[0]][low]
    lines = [f"| layout (instances:threads:max batch:spin) | audio-s/s at {low} | p50 s at {low} | audio-s/s at "
             f"{high} | {high} vs {low}, same layout | {high} vs {names[0]} at {low} | errors | mismatches |",
             "|" + "---|" * 8]
    for name in names:
        reports = runs[name]
        at_low, at_high = medians[name][low], medians[name][high]
        latency = float(np.median([p50(r, low) for r in reports]))
        errors = sum(x["errors"] for r in reports for x in r["levels"])
        mismatches = sum(x["mismatches"] for r in reports for x in r["levels"])
        lines.append(f"| {name} | {at_low:.3f} | {latency:.2f} | {at_high:.3f} | {at_high / at_low:.2f}x | "
                     f"{at_high / base:.2f}x | {errors} | {mismatches} |")
    return "\n".join(lines + ["", envelope(medians, low, high)])


def envelope(medians: dict, low: int, high: int) -> str:
    """The best throughput any measured layout reached at the lowest and at the highest level: a server that
    switched between these layouts by load could at most pair those two, so their ratio bounds its gain.
    `medians`: {layout: {level: median audio-s/s}}."""
    best_low = max(medians, key=lambda n: medians[n][low])
    best_high = max(medians, key=lambda n: medians[n][high])
    ratio = medians[best_high][high] / medians[best_low][low]
    clients = "client" if low == 1 else "clients"
    return (f"Envelope: the best layout at {low} {clients} is {best_low} ({medians[best_low][low]:.3f} audio-s/s), at "
            f"{high} {best_high} ({medians[best_high][high]:.3f}); {high} vs {low} across them: {ratio:.2f}x, the most "
            "a server choosing among these layouts by load could reach.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path, nargs="?")
    parser.add_argument("--tokens")
    parser.add_argument("--voice")
    parser.add_argument("--layout", dest="layouts", type=parse_layout, action="append", default=[])
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report-only", action="store_true", help="rebuild the .md table from --out's JSON")
    args = parser.parse_args()
    if args.report_only:
        report = json.loads(args.out.read_text())
        args.out.with_suffix(".md").write_text(summary_table(report["runs"], report["levels"]) + "\n")
        return
    if not (args.layouts and args.artifacts and args.tokens and args.voice):
        parser.error("measuring needs ARTIFACTS, --tokens, --voice and at least one --layout")
    tokens, voice = load_tokens(args.tokens), load_voice(args.voice)
    runs: dict = {layout["name"]: [] for layout in args.layouts}
    for rep in range(args.reps):
        for layout in args.layouts:
            report = load_test_layout(args.artifacts, layout, args.precision, tokens, voice, args)
            runs[layout["name"]].append(report)
            print(f"repeat {rep + 1}/{args.reps} {layout['name']}: " + ", ".join(
                f"{r['audio_s_per_s']:.3f} audio-s/s at {r['concurrency']}" for r in report["levels"]), flush=True)
    table = summary_table(runs, args.levels)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"precision": args.precision, "steps": args.steps, "levels": args.levels,
                                    "load_average_at_end": os.getloadavg(), "runs": runs}, indent=2, default=str))
    args.out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()

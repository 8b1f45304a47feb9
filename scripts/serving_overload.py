"""Overload of a default `s3gen-aot serve`: C closed-loop clients for a fixed time (the issue's 32 clients,
2 minutes). Every answer must be a wav equal to its job's single-request wav, or a busy refusal (HTTP 503);
reports accepted-latency percentiles, how fast refusals come, and the server tree's RSS over the run.

    python scripts/serving_overload.py --artifacts ART --tokens t.npz --voice v.npz \\
        --clients 32 --seconds 120 --out bench/results/serving/overload.json [-- serve options]

The server is started here on loopback with its defaults (plus any options after --), and stopped with
SIGTERM at the end; its exit code is recorded (0: it drained). A refused client waits --backoff-s before
its next request, as a well-behaved client would; 0 makes it hammer.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from s3gen_runtime.cpu import cpu_info
from s3gen_runtime.io import load_tokens
from s3gen_runtime.serving.client import is_ready, synthesize
from s3gen_runtime.serving.launch import free_ports, serve_command
from s3gen_runtime.serving.loadtest import TOLERANCE, make_jobs, percentile
from s3gen_runtime.voice import load_voice


def tree_rss_mb(pid: int) -> float:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def start(artifacts: Path, log: Path, extra: list[str]):
    http, grpc, metrics = free_ports(3)
    with open(log, "wb") as out:
        proc = subprocess.Popen(serve_command(artifacts, http, grpc, metrics, *extra), stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"127.0.0.1:{http}"
    deadline = time.monotonic() + 300
    while not is_ready(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"server did not come up:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
    return proc, url


def client_loop(url, tokens, voice, jobs, references, steps, stop_at, backoff_s, offset, records):
    from tritonclient.utils import InferenceServerException

    i = offset
    while time.monotonic() < stop_at:
        job = jobs[i % len(jobs)]
        i += 1
        begin = time.perf_counter()
        try:
            wav = synthesize(url, tokens[:job.new_tokens], voice, seed=job.seed,
                             **({} if steps is None else {"steps": steps})).wav
        except InferenceServerException as e:
            kind = "busy" if e.status() == "503" else f"error {e.status()}: {e.message()[:120]}"
            records.append({"kind": kind, "seconds": time.perf_counter() - begin})
            if kind == "busy":
                time.sleep(backoff_s)
            continue
        except Exception as e:   # noqa: BLE001 - any other failure is a result here, counted and named
            records.append({"kind": f"error {type(e).__name__}", "seconds": time.perf_counter() - begin})
            continue
        ref = references[job]
        diff = float(np.max(np.abs(wav - ref))) if wav.shape == ref.shape else float("inf")
        records.append({"kind": "wav", "seconds": time.perf_counter() - begin, "diff": diff})


def sample_rss(pid: int, stop: threading.Event, samples: list, every_s: float = 2.0, t0: float = 0.0) -> None:
    while not stop.wait(every_s):
        try:
            samples.append((round(time.monotonic() - t0, 1), round(tree_rss_mb(pid), 1)))
        except psutil.Error:
            return


def summarize(records: list, rss: list, clients: int, seconds: float) -> dict:
    """The run's numbers (pure): outcomes, latency of accepted requests and of refusals, RSS trend."""
    wavs = [r for r in records if r["kind"] == "wav"]
    busy = [r["seconds"] for r in records if r["kind"] == "busy"]
    errors = sorted({r["kind"] for r in records if r["kind"] not in ("wav", "busy")})
    accepted = [r["seconds"] for r in wavs]
    loaded = [mb for t, mb in rss if t >= 10.0] or [mb for _, mb in rss]    # after the first 10 s of load
    return {
        "clients": clients, "seconds": seconds, "requests": len(records), "accepted": len(wavs),
        "busy": len(busy), "errors": len(records) - len(wavs) - len(busy), "error_kinds": errors,
        "mismatches": sum(1 for r in wavs if r["diff"] >= TOLERANCE),
        "max_abs_diff": max((r["diff"] for r in wavs), default=float("nan")),
        "accepted_per_s": len(wavs) / seconds,
        "accepted_p50_s": percentile(accepted, 50), "accepted_p95_s": percentile(accepted, 95),
        "accepted_p99_s": percentile(accepted, 99), "accepted_max_s": max(accepted, default=float("nan")),
        "busy_p50_s": percentile(busy, 50), "busy_p99_s": percentile(busy, 99),
        "busy_max_s": max(busy, default=float("nan")),
        "rss_mb_first": loaded[0] if loaded else None, "rss_mb_last": loaded[-1] if loaded else None,
        "rss_mb_max": max(loaded) if loaded else None,
        "rss_growth_pct": round(100 * (loaded[-1] / loaded[0] - 1), 2) if loaded else None,
    }


def markdown(report: dict) -> str:
    s = report["summary"]
    rows = [
        "| clients | seconds | requests | accepted | busy (503) | errors | mismatches | accepted/s |",
        "|---|---|---|---|---|---|---|---|",
        f"| {s['clients']} | {s['seconds']:.0f} | {s['requests']} | {s['accepted']} | {s['busy']} | {s['errors']} | "
        f"{s['mismatches']} | {s['accepted_per_s']:.2f} |",
        "",
        "| accepted p50 / p95 / p99 / max (s) | busy refusal p50 / p99 / max (s) | RSS first / max / last (MiB) |",
        "|---|---|---|",
        f"| {s['accepted_p50_s']:.2f} / {s['accepted_p95_s']:.2f} / {s['accepted_p99_s']:.2f} / "
        f"{s['accepted_max_s']:.2f} | {s['busy_p50_s']:.3f} / {s['busy_p99_s']:.3f} / {s['busy_max_s']:.3f} | "
        f"{s['rss_mb_first']} / {s['rss_mb_max']} / {s['rss_mb_last']} ({s['rss_growth_pct']:+.2f} %) |",
        "",
        f"Server: `s3gen-aot serve` defaults {' '.join(report['serve_options']) or ''}; SIGTERM at the end -> "
        f"exit {report['server_exit_code']}. Backoff after a refusal: {report['backoff_s']} s. "
        f"CPU: {report['cpu']['model']}, {os.cpu_count()} cores, flags {' '.join(report['cpu'].get('flags', []))}; "
        f"load average at end {report['load_average_at_end']} (a shared machine).",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", required=True, type=Path)
    parser.add_argument("--tokens", required=True)
    parser.add_argument("--voice", required=True)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--backoff-s", type=float, default=0.5)
    parser.add_argument("--out", required=True, type=Path)
    args, serve_options = parser.parse_known_args()
    serve_options = [o for o in serve_options if o != "--"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tokens, voice = load_tokens(args.tokens), load_voice(args.voice)
    jobs = make_jobs(len(tokens), args.jobs)
    proc, url = start(args.artifacts, args.out.with_suffix(".server.log"), serve_options)
    try:
        step = {} if args.steps is None else {"steps": args.steps}
        references = {job: synthesize(url, tokens[:job.new_tokens], voice, seed=job.seed, **step).wav for job in jobs}
        records, rss, stop = [], [], threading.Event()
        t0 = time.monotonic()
        sampler = threading.Thread(target=sample_rss, args=(proc.pid, stop, rss, 2.0, t0))
        sampler.start()
        stop_at = t0 + args.seconds
        clients = [threading.Thread(target=client_loop, args=(url, tokens, voice, jobs, references, args.steps,
                                                              stop_at, args.backoff_s, i, records))
                   for i in range(args.clients)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        wall = time.monotonic() - t0
        stop.set()
        sampler.join()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    report = {"summary": summarize(records, rss, args.clients, wall), "rss_mb": rss, "serve_options": serve_options,
              "backoff_s": args.backoff_s, "steps": args.steps, "jobs": [vars(j) for j in jobs],
              "server_exit_code": code, "cpu": cpu_info(), "load_average_at_end": os.getloadavg(),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.write_text(json.dumps(report, indent=2, default=str))
    args.out.with_suffix(".md").write_text(markdown(report) + "\n")
    print(markdown(report))
    s = report["summary"]
    if s["errors"] or s["mismatches"] or code != 0:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

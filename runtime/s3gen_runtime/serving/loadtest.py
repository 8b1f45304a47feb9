"""A closed-loop load test of a running `s3gen` server: concurrency levels, bounded in requests and time.

Each level runs C clients that send their next request as soon as the last one is answered. The jobs
are a few (length, seed) utterances; every response is compared with the single-request answer for its
job (taken first, one at a time), so a batching bug shows up as a mismatch, not as a fast number.
The server's side comes from Triton's statistics: time queued vs computing, and the batch sizes formed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from ..constants import SAMPLE_RATE
from .client import model_stats, stats_delta, synthesize

TOLERANCE = 2e-3


@dataclass(frozen=True)
class Job:
    new_tokens: int
    seed: int


def make_jobs(tokens: int, count: int) -> list[Job]:
    """`count` jobs cycling through full, 3/4 and 1/2 of the tokens: lengths differ, so batches are ragged."""
    fractions = (1.0, 0.75, 0.5)
    return [Job(max(1, int(tokens * fractions[i % 3])), 100 + i) for i in range(count)]


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def summarize(level: int, records: list, wall_s: float, server: dict) -> dict:
    """One level's numbers (pure): throughput, latency percentiles, errors, server queue/compute, batches."""
    ok = [r for r in records if r["error"] is None]
    latencies = [r["seconds"] for r in ok]
    audio = sum(r["audio_s"] for r in ok)
    served = max(server["success"], 1)
    return {
        "concurrency": level, "requests": len(records), "errors": len(records) - len(ok),
        "mismatches": sum(1 for r in ok if not r["matches"]),
        "max_abs_diff": max((r["diff"] for r in ok), default=float("nan")),
        "wall_s": wall_s, "audio_s": audio, "audio_s_per_s": audio / wall_s if wall_s > 0 else float("nan"),
        "rtf": wall_s / audio if audio > 0 else float("nan"),
        "latency_p50_s": percentile(latencies, 50), "latency_p95_s": percentile(latencies, 95),
        "latency_p99_s": percentile(latencies, 99),
        "server_queue_ms": server["queue_ns"] / served / 1e6, "server_compute_ms": server["compute_ns"] / served / 1e6,
        "batch_sizes": server["batch_sizes"],
        "mean_batch": server["requests"] / server["executions"] if server["executions"] else float("nan"),
    }


class LoadTest:
    def __init__(self, url: str, tokens, voice, jobs: list[Job], steps: int | None = None):
        self.url, self.tokens, self.voice, self.jobs, self.steps = url, np.asarray(tokens), voice, jobs, steps
        self.references: dict[Job, np.ndarray] = {}

    def _send(self, job: Job):
        return synthesize(self.url, self.tokens[:job.new_tokens], self.voice, seed=job.seed,
                          **({} if self.steps is None else {"steps": self.steps}))

    def take_references(self) -> None:
        """The single-request answer of every job, one request at a time."""
        for job in self.jobs:
            self.references[job] = self._send(job).wav

    def _one(self, job: Job) -> dict:
        try:
            reply = self._send(job)
        except Exception as e:   # noqa: BLE001 - an error is a result of a load test, counted and shown
            return {"job": job, "error": f"{type(e).__name__}: {str(e)[:200]}", "seconds": float("nan"), "audio_s": 0}
        ref = self.references[job]
        diff = float(np.max(np.abs(reply.wav - ref))) if reply.wav.shape == ref.shape else float("inf")
        return {"job": job, "error": None, "seconds": reply.seconds, "audio_s": reply.wav.size / SAMPLE_RATE,
                "diff": diff, "matches": diff <= TOLERANCE}

    def level(self, concurrency: int, max_requests: int, max_seconds: float) -> dict:
        """C closed-loop clients until max_requests were sent or max_seconds passed (requests in flight finish)."""
        lock, records, sent = threading.Lock(), [], [0]
        deadline = time.monotonic() + max_seconds

        def client():
            while True:
                with lock:
                    if sent[0] >= max_requests or time.monotonic() > deadline:
                        return
                    job = self.jobs[sent[0] % len(self.jobs)]
                    sent[0] += 1
                record = self._one(job)
                with lock:
                    records.append(record)

        before = model_stats(self.url)
        start = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        return summarize(concurrency, records, wall, stats_delta(before, model_stats(self.url)))


def direct_seconds(artifacts, tokens, voice, jobs: list[Job], steps: int | None, threads: int | None,
                   precision: str = "fp32") -> list[float]:
    """The same jobs through the runtime called directly in this process, one at a time (after one
    warm-up call): the baseline for the server's overhead at concurrency 1."""
    from ..pipeline import S3GenRuntime

    runtime = S3GenRuntime(artifacts, precision=precision, **({} if threads is None else {"intra_op_threads": threads}))
    tokens = np.asarray(tokens)
    seconds = []
    for job in [jobs[0], *jobs]:
        start = time.perf_counter()
        runtime.synthesize(tokens[:job.new_tokens], voice, seed=job.seed, steps=steps)
        seconds.append(time.perf_counter() - start)
    return seconds[1:]


def run_load_test(url, tokens, voice, levels=(1, 2, 4, 8), jobs: int = 6, requests_per_client: int = 2,
                  max_seconds_per_level: float = 30.0, steps: int | None = None, say=print,
                  artifacts=None, threads: int | None = None, precision: str = "fp32") -> dict:
    """References, then each level bounded by requests (C x requests_per_client, at least `jobs`) and time."""
    test = LoadTest(url, tokens, voice, make_jobs(len(np.asarray(tokens).reshape(-1)), jobs), steps)
    start = time.perf_counter()
    test.take_references()
    say(f"references: {len(test.jobs)} single requests in {time.perf_counter() - start:.1f} s")
    results = []
    for c in levels:
        result = test.level(c, max(jobs, c * requests_per_client), max_seconds_per_level)
        say(format_row(result))
        results.append(result)
    report = {"url": url, "steps": steps, "jobs": [vars(j) for j in test.jobs], "levels": results}
    if artifacts is not None:   # after the levels, while the server idles, so the two do not share the cores
        direct = percentile(direct_seconds(artifacts, tokens, voice, test.jobs, steps, threads, precision), 50)
        served = next((r["latency_p50_s"] for r in results if r["concurrency"] == 1), float("nan"))
        report["direct_p50_s"], report["server_overhead_p50"] = direct, served / direct - 1.0
        report["direct_precision"] = precision
        say(f"runtime called directly: p50 {direct:.2f} s; served at concurrency 1: p50 {served:.2f} s "
            f"({100 * report['server_overhead_p50']:+.1f}%)")
    return report


def format_row(r: dict) -> str:
    sizes = ", ".join(f"{s}x{n}" for s, n in r["batch_sizes"].items())
    return (f"c={r['concurrency']}: {r['requests']} req, {r['errors']} errors, {r['mismatches']} mismatches | "
            f"{r['audio_s_per_s']:.3f} audio-s/s, RTF {r['rtf']:.2f} | p50 {r['latency_p50_s']:.2f} "
            f"p95 {r['latency_p95_s']:.2f} p99 {r['latency_p99_s']:.2f} s | server queue {r['server_queue_ms']:.0f} "
            f"ms, compute {r['server_compute_ms']:.0f} ms | batches {sizes}")


def markdown_table(report: dict) -> str:
    head = ("| concurrency | requests | errors | mismatches | audio-s/s | RTF | p50 s | p95 s | p99 s | "
            "queue ms | compute ms | batches (size x count) |\n|" + "---|" * 12)
    rows = [f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['mismatches']} | {r['audio_s_per_s']:.3f} | "
            f"{r['rtf']:.2f} | {r['latency_p50_s']:.2f} | {r['latency_p95_s']:.2f} | {r['latency_p99_s']:.2f} | "
            f"{r['server_queue_ms']:.0f} | {r['server_compute_ms']:.0f} | "
            f"{', '.join(f'{s}x{n}' for s, n in r['batch_sizes'].items())} |" for r in report["levels"]]
    return "\n".join([head, *rows])


def plot(report: dict, path) -> None:
    """Throughput and latency against concurrency (matplotlib, from the bench extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [r["concurrency"] for r in report["levels"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(levels, [r["audio_s_per_s"] for r in report["levels"]], "o-")
    a.set(xlabel="concurrent clients", ylabel="audio seconds per second", title="throughput", xscale="log", xticks=levels)
    a.set_xticklabels(levels)
    for q in ("p50", "p95", "p99"):
        b.plot(levels, [r[f"latency_{q}_s"] for r in report["levels"]], "o-", label=q)
    b.set(xlabel="concurrent clients", ylabel="latency (s)", title="latency", xscale="log", xticks=levels)
    b.set_xticklabels(levels)
    b.legend()
    for axis in (a, b):
        axis.minorticks_off()   # log-scale minor labels ("3x10^0") between the levels say nothing
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

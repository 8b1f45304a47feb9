"""RSS of a running `s3gen-aot serve` over many sequential short requests (the issue's "flat RSS" check).

    python scripts/serving_rss.py --url 127.0.0.1:8000 --pid PID --tokens t.npz --voice v.npz --requests 1000

The server's process (PID) holds the runtime; tritonserver and its stub are its children, counted too.
Prints RSS after a warm-up of --warmup requests and every --every requests after it, and the growth.
"""
from __future__ import annotations

import argparse
import json

import psutil

from s3gen_runtime.io import load_tokens
from s3gen_runtime.serving.client import synthesize
from s3gen_runtime.voice import load_voice


def tree_rss_mb(pid: int) -> float:
    """RSS of the process and its children (tritonserver, the Python-backend stub), MiB."""
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--tokens", required=True)
    parser.add_argument("--voice", required=True)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--new-tokens", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1)
    args = parser.parse_args()
    tokens, voice = load_tokens(args.tokens)[:args.new_tokens], load_voice(args.voice)
    samples = []
    for i in range(args.warmup + args.requests):
        synthesize(args.url, tokens, voice, seed=i, steps=args.steps)
        done = i + 1 - args.warmup
        if done == 0 or (done > 0 and done % args.every == 0):
            samples.append((done, round(tree_rss_mb(args.pid), 1)))
            print(f"after {done} requests: {samples[-1][1]} MiB", flush=True)
    base, last = samples[0][1], samples[-1][1]
    print(json.dumps({"requests": args.requests, "rss_mb": samples, "growth_pct": round(100 * (last / base - 1), 2)}))


if __name__ == "__main__":
    main()

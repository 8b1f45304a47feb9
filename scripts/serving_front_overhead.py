"""Latency of the HTTP front: the same short requests sent through `serve`'s public HTTP port and straight to
tritonserver's loopback port (printed in serve's "ready" line), interleaved, medians compared.

    python scripts/serving_front_overhead.py --front 127.0.0.1:8000 --backend 127.0.0.1:PORT --tokens G --voice G
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from s3gen_runtime.io import load_tokens
from s3gen_runtime.serving.client import synthesize
from s3gen_runtime.voice import load_voice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--front", required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--tokens", required=True)
    parser.add_argument("--voice", required=True)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--new-tokens", type=int, default=5)
    args = parser.parse_args()
    tokens, voice = load_tokens(args.tokens)[:args.new_tokens], load_voice(args.voice)
    times: dict[str, list] = {args.front: [], args.backend: []}
    for url in (args.front, args.backend) * 3:          # warm-up, not counted
        synthesize(url, tokens, voice, seed=0, steps=1)
    for i in range(args.requests):
        for url in ((args.front, args.backend) if i % 2 else (args.backend, args.front)):
            start = time.perf_counter()
            synthesize(url, tokens, voice, seed=i, steps=1)
            times[url].append(time.perf_counter() - start)
    front, backend = np.median(times[args.front]), np.median(times[args.backend])
    print(f"front p50 {front * 1000:.1f} ms, tritonserver direct p50 {backend * 1000:.1f} ms, ratio "
          f"{front / backend:.3f} (n={args.requests} each, interleaved)")


if __name__ == "__main__":
    main()

"""Vocoder probes (bench/s3gen_bench/vocoder_probe.py): Snake forms, conv layout and int8 per layer group.

    python scripts/vocoder_probe.py snake  --out bench/results/vocoder_probe
    python scripts/vocoder_probe.py graphs --checkpoint ckpt.safetensors --out bench/results/vocoder_probe
    python scripts/vocoder_probe.py int8   --checkpoint ckpt.safetensors --out bench/results/vocoder_probe

Each writes <out>/<probe>.json (with this machine's CPU) and prints one line per row.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    from s3gen_runtime.cpu import cpu_info, describe

    from s3gen_bench import vocoder_probe as probe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=("snake", "graphs", "int8"))
    parser.add_argument("--checkpoint", type=Path, help="S3Gen checkpoint (graphs, int8)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/vocoder_probe"))
    parser.add_argument("--frames", type=int, default=500, help="mel frames (500 = 10 s of audio)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args = parser.parse_args(argv)
    if args.probe != "snake" and args.checkpoint is None:
        parser.error(f"{args.probe} needs --checkpoint")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.probe == "snake":
        result = probe.probe_snake(threads=args.threads)
        for r in result:
            print(f"{r['form']:>6} {r['channels']:>4} x {r['samples']:<6} {r['ns_per_element']:.2f} ns/element, "
                  f"max abs error {r['max_abs_error']:.1e}")
    elif args.probe == "graphs":
        result = probe.probe_graphs(args.checkpoint, args.out, args.frames, threads=args.threads)
        for name, v in result["variants"].items():
            top = ", ".join(f"{k} {ms:.0f}" for k, ms in sorted(v["ops"].items(), key=lambda kv: -kv[1])[:6])
            print(f"{name}: {v['ms']:.0f} ms ({top}), wav max abs vs eager {v['wav_max_abs_vs_eager']:.1e}")
    else:
        graph = args.out / "vocoder_1d.onnx"
        if not graph.is_file():
            probe.probe_graphs(args.checkpoint, args.out, args.frames, variants=("1d",), threads=args.threads)
        result = probe.probe_int8(graph, args.out, args.frames, threads=args.threads)
        for r in result:
            print(f"{r['group']}: {r['convs']} convs int8, {r['ms']:.0f} ms, wav SNR {r['wav_snr_db']:.1f} dB vs fp32")
    record = {"probe": args.probe, "frames": args.frames, "threads": args.threads, "cpu": cpu_info(), "result": result}
    (args.out / f"{args.probe}.json").write_text(json.dumps(record, indent=1, default=str))
    print(f"CPU: {describe(record['cpu'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

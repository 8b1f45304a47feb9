"""Benchmarks: speed (eager vs torch.compile vs ONNX Runtime fp32/int8), solver fidelity, scaling, memory.

    python scripts/bench.py --out bench/results              (make bench: < 30 min on 2 cores)
    python scripts/bench.py --quick --out bench/results/quick (make bench-quick: ~3 min)

Writes <out>/{speed,fidelity,scaling,memory,machine}.json, <out>/summary.md and PNG plots. The
synthetic checkpoint and its fp32 + int8 export live in --workdir and are reused while current.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def log(message: str) -> None:
    print(message, flush=True)


def main(argv=None) -> int:
    from s3gen_bench import SECTIONS, run_bench

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="results folder")
    parser.add_argument("--quick", action="store_true", help="one short length, one repeat, few NFEs (~3 min)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="standard checkpoint (default: the synthetic one, made in --workdir)")
    parser.add_argument("--workdir", type=Path, default=Path("artifacts/bench"),
                        help="checkpoint, export and raw outputs")
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="use this export of --checkpoint as is (no int8 numbers if it has no int8 graphs)")
    parser.add_argument("--meanflow", type=Path, nargs=2, metavar=("CHECKPOINT", "ARTIFACTS"), default=None,
                        help="a meanflow checkpoint and its export for sections e and g, used as they are "
                             "(default: the synthetic one, exported with int8 in --workdir)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild summary.md and the plots from the JSON already in --out; measure nothing")
    args = parser.parse_args(argv)
    if args.report_only:
        from s3gen_bench import rebuild_report

        rebuild_report(args.out, progress=log)
        return 0
    if args.artifacts is not None and args.checkpoint is None:
        parser.error("--artifacts needs the --checkpoint it was exported from (the eager baseline loads it)")
    sections = tuple(s for s in args.sections.split(",") if s)
    run_bench(args.out, quick=args.quick, checkpoint=args.checkpoint, workdir=args.workdir, artifacts=args.artifacts,
              sections=sections, progress=log, meanflow=args.meanflow)
    return 0


if __name__ == "__main__":
    from s3gen_runtime.errors import S3GenError

    try:
        sys.exit(main())
    except (S3GenError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)

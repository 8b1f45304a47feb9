"""Starting `s3gen-aot serve` from another process on loopback (the tests, scripts/serving_layouts.py):
free ports and the command line. Torch-free; no server import."""

from __future__ import annotations

import socket
import sys
from pathlib import Path


def free_ports(count: int) -> list[int]:
    """`count` TCP ports on 127.0.0.1 that nothing listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def serve_command(artifacts, http: int, grpc: int, metrics: int, *options: str) -> list[str]:
    """`s3gen-aot serve ARTIFACTS` on 127.0.0.1 with these ports, by this environment's CLI, plus `options`."""
    cli = Path(sys.executable).with_name("s3gen-aot")
    return [str(cli), "serve", str(artifacts), "--host", "127.0.0.1", "--http-port", str(http),
            "--grpc-port", str(grpc), "--metrics-port", str(metrics), *options]

"""A real `s3gen-aot serve` started by the tests on loopback, on free ports, and stopped by them.

Every wait is bounded; a server that does not come up fails the test with its log. (A module of its own,
not conftest: test modules import from it, and `conftest` is a name several test folders share.)"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from s3gen_runtime.serving.client import is_ready
from s3gen_runtime.serving.launch import free_ports, serve_command

START_TIMEOUT_S = 240     # load + warm-up + tritonserver on a loaded 2-core machine
STOP_TIMEOUT_S = 60
STEPS = 2                 # requests in these tests: 2 Euler steps keep each one near a second


@dataclass
class Server:
    proc: subprocess.Popen
    log: Path
    http: int
    grpc: int
    metrics: int

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.text()[-4000:]}")
            if is_ready(self.url):
                return
            time.sleep(0.5)
        raise AssertionError(f"server not ready after {START_TIMEOUT_S} s:\n{self.text()[-4000:]}")

    def terminate(self) -> int:
        """SIGTERM, then wait; a server that does not stop is killed and the test fails."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"server ignored SIGTERM for {STOP_TIMEOUT_S} s:\n{self.text()[-4000:]}")


def start_server(artifacts: Path, workdir: Path, *extra: str) -> Server:
    http, grpc, metrics = free_ports(3)
    log = workdir / f"server_{http}.log"
    command = serve_command(artifacts, http, grpc, metrics, "--threads", "1", *extra)
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    return Server(proc, log, http, grpc, metrics)

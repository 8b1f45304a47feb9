"""Parent side of the worker protocol (see worker.py): start, ask with a timeout, close."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

from .worker import RESULT_PREFIX


class WorkerError(RuntimeError):
    """The worker answered with an error, died, or did not answer in time."""


class WorkerProcess:
    def __init__(self, config: str, checkpoint=None, artifacts=None, log_path: Path | None = None,
                 env: dict | None = None):
        self.config = config
        args = [sys.executable, "-m", "s3gen_bench.worker", config]
        if checkpoint is not None:
            args += ["--checkpoint", str(checkpoint)]
        if artifacts is not None:
            args += ["--artifacts", str(artifacts)]
        self._log = open(log_path, "a", encoding="utf-8") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, bufsize=1, env={**os.environ, **(env or {})})
        self._answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(RESULT_PREFIX):
                self._answers.put(json.loads(line[len(RESULT_PREFIX):]))
        self._answers.put(None)   # EOF: the worker is gone

    def receive(self, timeout: float) -> dict:
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise WorkerError(f"{self.config}: no answer within {timeout:.0f} s (stopped)") from None
        if answer is None:
            raise WorkerError(f"{self.config}: the worker exited (code {self.proc.wait()})")
        if not answer.get("ok", False):
            raise WorkerError(f"{self.config}: {answer.get('error', 'unknown error')}")
        return answer

    def ask(self, command: dict, timeout: float = 1800.0) -> dict:
        if self.proc.poll() is not None:
            raise WorkerError(f"{self.config}: the worker is not running")
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.receive(timeout)

    def close(self, timeout: float = 60.0) -> dict | None:
        """Quit; returns the final answer (peak RSS) or None when the worker is already gone."""
        answer = None
        if self.proc.poll() is None:
            try:
                answer = self.ask({"op": "quit"}, timeout)
            except (WorkerError, OSError):
                answer = None
        self.kill()
        return answer

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()
            self._log = subprocess.DEVNULL

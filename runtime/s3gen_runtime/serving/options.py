"""`serve`'s options, in a module of their own: the CLI reads their defaults without importing the runtime."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeOptions:
    """The defaults are the layout that measured best on CPU (README "Serving", load test): two instances
    over one runtime, each request alone, ORT threads that sleep between kernels. A batch of B padded
    requests cost about B requests plus its padding (0.85-0.91x the throughput of single requests at
    concurrency 4), while two requests side by side use the cores better than one request on both."""
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 1
    max_queue_delay_ms: float = 20.0
    instances: int = 2
    threads: int | None = None
    precision: str = "fp32"
    backend: str = "onnxruntime"
    # spinning threads of two concurrent requests fight over the cores they share with tritonserver,
    # the stub and PyTriton's proxy
    allow_spinning: bool = False

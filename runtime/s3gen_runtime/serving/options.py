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
    # Triton's queue policy: beyond max_queue_size waiting requests a new one is refused at once ("server
    # busy", HTTP 503), and one that waited queue_timeout_ms is refused instead of run; 0 = no limit.
    # Two waiting per instance keeps both instances busy under load while an accepted request waits about
    # two requests' time; with 8 waiting, 12 clients saw accepted p50 28 s and 30 s queue timeouts on the
    # 2-core CPU (README "Overload" has the 32-client run). The timeout is only a safety net.
    max_queue_size: int = 4
    queue_timeout_ms: float = 30_000.0
    # the HTTP front refuses larger bodies (413); the largest valid request (4096 mel frames of prompt in
    # JSON text) is about 5 MB
    max_request_mb: float = 16.0
    instances: int = 2
    threads: int | None = None
    precision: str = "fp32"
    backend: str = "onnxruntime"
    # spinning threads of two concurrent requests fight over the cores they share with tritonserver,
    # the stub and PyTriton's proxy
    allow_spinning: bool = False

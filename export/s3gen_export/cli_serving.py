"""`s3gen-aot serve` (and the load test): thin click commands over s3gen_runtime.serving.

Registered on the main group by cli.py. Torch-free; PyTriton is imported only when a server starts,
and a missing `serve` extra is one line naming it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

SERVE_PACKAGES = ("pytriton", "tritonclient")


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _needs_serve_extra(e: ModuleNotFoundError) -> None:
    if (e.name or "").split(".")[0] not in SERVE_PACKAGES:
        raise e
    _fail(f"this command needs the serve extra ({e.name} is not installed): pip install 's3gen-aot[serve]'")


@click.command("serve")
@click.argument("artifacts", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(1, 65535))
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Largest batch Triton's dynamic batcher forms (requests of one bucket share a runtime batch).")
@click.option("--max-queue-delay-ms", default=20.0, show_default=True, type=click.FloatRange(0, 10_000),
              help="How long a request may wait for others to batch with.")
@click.option("--instances", default=1, show_default=True, type=click.IntRange(1, 16),
              help="Model instances (batches run concurrently; they share one loaded runtime).")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="ONNX Runtime intra-op threads per graph.")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True)
def serve_cmd(artifacts, host, http_port, grpc_port, metrics_port, max_batch, max_queue_delay_ms, instances, threads,
              precision) -> None:
    """Serve ARTIFACTS as Triton model 's3gen' (KServe v2 over HTTP and gRPC) until SIGTERM or Ctrl-C."""
    from s3gen_runtime.errors import S3GenError
    from s3gen_runtime.serving.server import ServeOptions, serve

    options = ServeOptions(host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                           max_batch=max_batch, max_queue_delay_ms=max_queue_delay_ms, instances=instances,
                           threads=threads, precision=precision)
    try:
        code = serve(artifacts, options, say=lambda m: click.echo(m, err=False))
    except ModuleNotFoundError as e:
        _needs_serve_extra(e)
    except (S3GenError, ValueError, RuntimeError) as e:
        _fail(str(e))
    sys.exit(code)

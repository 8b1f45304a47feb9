"""`s3gen-aot serve` (and the load test): thin click commands over s3gen_runtime.serving.

Registered on the main group by cli.py. Torch-free; PyTriton is imported only when a server starts,
and a missing `serve` extra is one line naming it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from s3gen_runtime.backends import known_backends
from s3gen_runtime.serving.options import ServeOptions

SERVE_PACKAGES = ("pytriton", "tritonclient")


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _needs_serve_extra(e: ModuleNotFoundError) -> None:
    package = (e.name or "").split(".")[0]
    if package not in SERVE_PACKAGES:
        raise e
    _fail(f"this command needs the serve extra ({package} is not installed): pip install 's3gen-aot[serve]'")


# the bounded queue, shared by serve and triton-repo (Triton's queue policy; 0 = no limit)
QUEUE_SIZE = click.option(
    "--max-queue-size", default=ServeOptions.max_queue_size, show_default=True, type=click.IntRange(0, 100_000),
    help="Requests that may wait for a model instance; past it a request is refused at once (HTTP 503, server busy).")
QUEUE_TIMEOUT = click.option(
    "--queue-timeout-ms", default=ServeOptions.queue_timeout_ms, show_default=True,
    type=click.FloatRange(0, 3_600_000), help="A request still waiting after this long is refused instead of run.")


@click.command("serve")
@click.argument("artifacts", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(1, 65535))
@click.option("--max-batch", default=ServeOptions.max_batch, show_default=True, type=click.IntRange(1, 64),
              help="Largest batch Triton's dynamic batcher forms (requests of one bucket share a runtime batch; "
                   "on CPU, batching measured slower than instances).")
@click.option("--max-queue-delay-ms", default=20.0, show_default=True, type=click.FloatRange(0, 10_000),
              help="How long a request may wait for others to batch with.")
@click.option("--instances", default=ServeOptions.instances, show_default=True, type=click.IntRange(1, 16),
              help="Model instances (batches run concurrently; they share one loaded runtime).")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="ONNX Runtime intra-op threads per graph.")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True)
@click.option("--spinning/--no-spinning", default=ServeOptions.allow_spinning, show_default=True,
              help="ONNX Runtime's threads spin between kernels (they share the cores with the server's own processes).")
@QUEUE_SIZE
@QUEUE_TIMEOUT
@click.option("--max-request-mb", default=ServeOptions.max_request_mb, show_default=True,
              type=click.FloatRange(0.01, 1024), help="Largest HTTP request body; larger ones are refused (HTTP 413).")
def serve_cmd(artifacts, host, http_port, grpc_port, metrics_port, max_batch, max_queue_delay_ms, instances, threads,
              precision, spinning, max_queue_size, queue_timeout_ms, max_request_mb) -> None:
    """Serve ARTIFACTS as Triton model 's3gen' (KServe v2 over HTTP and gRPC) until SIGTERM or Ctrl-C."""
    from s3gen_runtime.errors import S3GenError
    from s3gen_runtime.serving.server import serve

    options = ServeOptions(host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                           max_batch=max_batch, max_queue_delay_ms=max_queue_delay_ms, instances=instances,
                           threads=threads, precision=precision, allow_spinning=spinning,
                           max_queue_size=max_queue_size, queue_timeout_ms=queue_timeout_ms,
                           max_request_mb=max_request_mb)
    try:
        code = serve(artifacts, options, say=lambda m: click.echo(m, err=False))
    except ModuleNotFoundError as e:
        _needs_serve_extra(e)
    except (S3GenError, ValueError, RuntimeError) as e:
        _fail(str(e))
    sys.exit(code)


@click.command("loadtest")
@click.argument("url")
@click.option("--tokens", "tokens_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--voice", "voice_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--levels", default="1,2,4,8", show_default=True, help="Concurrency levels, comma-separated.")
@click.option("--jobs", default=6, show_default=True, type=click.IntRange(1, 100),
              help="Distinct (length, seed) utterances; each response is checked against its single-request answer.")
@click.option("--requests-per-client", default=2, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--max-seconds", default=30.0, show_default=True, type=click.FloatRange(1, 3600),
              help="Time bound per level (requests in flight still finish).")
@click.option("--steps", default=None, type=click.IntRange(1, 1000), help="Solver steps sent with every request.")
@click.option("--artifacts", default=None, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Also time the same jobs through the runtime called directly (the server's overhead).")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="Intra-op threads for --artifacts.")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True,
              help="Precision for --artifacts (the server's own).")
@click.option("--out", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report as JSON here, a .png plot and a .md table beside it.")
def loadtest_cmd(url, tokens_file, voice_file, levels, jobs, requests_per_client, max_seconds, steps, artifacts,
                 threads, precision, out) -> None:
    """Closed-loop load test of the s3gen model at URL (host:port of the HTTP endpoint)."""
    import json
    import os

    from s3gen_runtime.errors import S3GenError
    from s3gen_runtime.io import load_tokens
    from s3gen_runtime.voice import load_voice

    try:
        from s3gen_runtime.serving.loadtest import markdown_table, plot, run_load_test

        concurrency = tuple(int(x) for x in levels.split(","))
        tokens, voice = load_tokens(tokens_file), load_voice(voice_file)
        report = run_load_test(url, tokens, voice, concurrency, jobs, requests_per_client, max_seconds, steps,
                               say=click.echo, artifacts=artifacts, threads=threads, precision=precision)
    except ModuleNotFoundError as e:
        _needs_serve_extra(e)
    except (S3GenError, ValueError, OSError) as e:
        _fail(str(e))
    report["load_average_at_end"] = os.getloadavg()
    click.echo(markdown_table(report))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str))
        out.with_suffix(".md").write_text(markdown_table(report) + "\n")
        plot(report, out.with_suffix(".png"))
        click.echo(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    if any(r["errors"] or r["mismatches"] for r in report["levels"]):
        sys.exit(1)


@click.command("triton-repo")
@click.argument("artifacts", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Repository folder.")
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(1, 64))
@click.option("--max-queue-delay-ms", default=20.0, show_default=True, type=click.FloatRange(0, 10_000))
@click.option("--instances", default=1, show_default=True, type=click.IntRange(1, 16))
@click.option("--threads", default=None, type=click.IntRange(min=1), help="ONNX Runtime intra-op threads per graph.")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True)
@click.option("--backend", type=click.Choice(known_backends()), default="onnxruntime",
              show_default=True, help="The runtime's backend inside the Python-backend model.")
@QUEUE_SIZE
@QUEUE_TIMEOUT
def triton_repo_cmd(artifacts, out, max_batch, max_queue_delay_ms, instances, threads, precision, backend,
                    max_queue_size, queue_timeout_ms) -> None:
    """Write a Triton model repository serving ARTIFACTS as model 's3gen' (Python backend, this environment)."""
    from s3gen_runtime.errors import S3GenError
    from s3gen_runtime.serving.triton_repo import write_repository

    try:
        repo = write_repository(artifacts, out, max_batch=max_batch, max_queue_delay_ms=max_queue_delay_ms,
                                instances=instances, threads=threads, precision=precision, backend=backend,
                                max_queue_size=max_queue_size, queue_timeout_ms=queue_timeout_ms)
    except (S3GenError, ValueError, OSError) as e:
        _fail(str(e))
    click.echo(f"wrote {repo}/s3gen (config.pbtxt, 1/model.py); start it with: tritonserver --model-repository {repo}")

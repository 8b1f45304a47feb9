"""`s3gen-aot serve`: PyTriton runs a real `tritonserver` and binds the runtime to it in this process.

PyTriton (the `serve` extra) is imported only inside `serve`, so importing this module costs nothing.
The traps of the nvidia-pytriton wheel are handled here, not by the user (environment.py):
its Python-backend stub links `libpython3.X.so` by soname, ragged batching is off in its config
generator, and its statistics endpoint is behind an access token by default.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np

from ..pipeline import S3GenRuntime
from .environment import (allow_ragged_batching, check_numpy, patch_generated_models, point_stub_at_libpython,
                          refusal_prefix)
from .front import FrontLimits, start_front
from .launch import free_ports
from .model import S3GenModel
from .options import ServeOptions
from .processes import dead_stubs, stub_models
from .protocol import INPUTS, MODEL_NAME, OUTPUTS
from .stream_model import STREAM_INPUTS, STREAM_MODEL_NAME, STREAM_OUTPUTS, S3GenStreamModel

LOG = logging.getLogger("s3gen_runtime.serving")
# Triton waits this long for in-flight requests after SIGTERM; PyTriton kills tritonserver after 30 s,
# so the drain must end before that or the requests still running are cut off.
EXIT_TIMEOUT_S = 25


def triton_tensors(specs):
    from pytriton.model_config import Tensor

    return [Tensor(name=s.name, dtype=s.dtype, shape=s.shape, optional=s.optional) for s in specs]


def triton_config(options: ServeOptions, backend_http_port: int):
    """tritonserver's own HTTP port is on loopback only: clients reach it through the front (front.py)."""
    from pytriton.triton import TritonConfig

    return TritonConfig(http_address="127.0.0.1", http_port=backend_http_port, grpc_address=options.host,
                        grpc_port=options.grpc_port, metrics_address=options.host,
                        metrics_port=options.metrics_port, exit_timeout_secs=EXIT_TIMEOUT_S,
                        strict_readiness=True, log_verbose=0)


def queue_policy(options: ServeOptions):
    """The bounded queue: requests past max_queue_size, or waiting past the timeout, are refused (REJECT)."""
    from pytriton.model_config import QueuePolicy, TimeoutAction

    return QueuePolicy(timeout_action=TimeoutAction.REJECT, max_queue_size=options.max_queue_size,
                       default_timeout_microseconds=int(round(options.queue_timeout_ms * 1000)))


def model_config(options: ServeOptions):
    from pytriton.model_config import DynamicBatcher, ModelConfig

    delay_us = int(round(options.max_queue_delay_ms * 1000))
    batcher = DynamicBatcher(max_queue_delay_microseconds=delay_us, default_queue_policy=queue_policy(options))
    return ModelConfig(max_batch_size=options.max_batch, batcher=batcher)


def stream_model_config(options: ServeOptions):
    """Decoupled, one request per call: every response of a decoupled callable answers all the requests of
    its call, so requests batched together would have to stream in lockstep. max_batch_size 1 (not 0)
    keeps the batch dimension, so a stream request is shaped exactly as an `s3gen` request; the batcher
    (batches of one) is there for its queue policy, the same bound as the `s3gen` model's."""
    from pytriton.model_config import DynamicBatcher, ModelConfig

    return ModelConfig(max_batch_size=1, batcher=DynamicBatcher(default_queue_policy=queue_policy(options)),
                       decoupled=True)


def security_config():
    """Statistics open (read-only, and what the load test reads batch sizes and queue times from);
    the endpoints that change the server (repository, logging, trace, shared memory) keep PyTriton's token."""
    from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, TritonSecurityConfig

    return TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])


class RefusalLogFilter(logging.Filter):
    """PyTriton logs every refused request at WARNING with its traceback and reason, and a reason may quote
    the request's values (token ids, a solver string). The record keeps one line without them: the
    reason goes to the client only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if refusal_prefix() in record.getMessage():
            record.msg = "refused a request (HTTP 400 / INVALID_ARGUMENT; the reason went to the client)"
            record.args = ()
        return True


def quiet_refusals() -> None:
    """Idempotent: PyTriton's inference handler's logger gets the filter once."""
    logger = logging.getLogger("pytriton.proxy.inference")
    if not any(isinstance(f, RefusalLogFilter) for f in logger.filters):
        logger.addFilter(RefusalLogFilter())


def load_model(artifacts: Path, options: ServeOptions, say=print) -> S3GenModel:
    """Open the artifacts and warm them up: all before the server starts, so ready means ready."""
    extra = {} if options.threads is None else {"intra_op_threads": options.threads}
    if not options.allow_spinning:
        extra["allow_spinning"] = False
    start = time.perf_counter()
    runtime = S3GenRuntime(artifacts, backend=options.backend, precision=options.precision, **extra)
    say(f"loaded {artifacts} ({runtime.variant}, {options.precision}) in {time.perf_counter() - start:.1f} s")
    model = S3GenModel(runtime)
    say(f"warm-up synthesis {model.warm_up():.1f} s")
    return model


def stop_on_signals(event: threading.Event) -> None:
    """SIGTERM and SIGINT end the serve loop; the server then drains (Triton finishes in-flight requests)."""
    def handler(signum, _frame):
        LOG.info("signal %d: finishing in-flight requests, then exiting", signum)
        event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def serve(artifacts, options: ServeOptions = ServeOptions(), say=print, stop: threading.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or `stop` is set); 0 after a clean drain, 1 when tritonserver or a model
    instance's stub died (the server drains what it can and stops, for its supervisor to restart it)."""
    check_numpy(np.__version__)
    point_stub_at_libpython()
    from pytriton.triton import Triton, TritonLifecyclePolicy   # before loading: a missing extra fails at once

    model = load_model(Path(artifacts), options, say)
    allow_ragged_batching()
    patch_generated_models()
    quiet_refusals()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        stop_on_signals(stop)
    # PyTriton's default starts tritonserver empty and loads the model afterwards, and an empty server
    # answers /v2/health/ready with 200. With the model written to a local repository before the server
    # starts, tritonserver loads it first and opens its endpoints only then.
    policy = TritonLifecyclePolicy(launch_triton_on_startup=False, local_model_store=True)
    backend_http_port = free_ports(1)[0]
    limits = FrontLimits(int(options.max_request_mb * 2**20), options.max_queue_size, options.queue_timeout_ms)
    front = None
    try:
        with Triton(config=triton_config(options, backend_http_port), security_config=security_config(),
                    triton_lifecycle_policy=policy) as triton:
            triton.bind(model_name=MODEL_NAME, infer_func=[model] * options.instances, inputs=triton_tensors(INPUTS),
                        outputs=triton_tensors(OUTPUTS), config=model_config(options), strict=False)
            stream_model = S3GenStreamModel(model.runtime)      # the same loaded runtime, no second copy
            triton.bind(model_name=STREAM_MODEL_NAME, infer_func=[stream_model] * options.instances,
                        inputs=triton_tensors(STREAM_INPUTS), outputs=triton_tensors(STREAM_OUTPUTS),
                        config=stream_model_config(options), strict=False)
            triton.run()
            front = start_front(options.host, options.http_port, backend_http_port, limits)
            say(f"ready: model '{MODEL_NAME}' (and '{STREAM_MODEL_NAME}', gRPC streaming) on "
                f"http://{options.host}:{options.http_port} (tritonserver's HTTP on 127.0.0.1:{backend_http_port}) "
                f"grpc {options.host}:{options.grpc_port} metrics :{options.metrics_port}")
            code = watch(triton, front, stop, stub_models(os.getpid()), say)
            if code == 1 and not triton.is_alive():
                return 1
            # the front stays up while tritonserver drains: the answers in flight go back through it, and
            # health checks and new requests get a prompt 503 saying why
            front.unready = front.unready or "the server is stopping (SIGTERM): no new requests"
            say("stopping: draining in-flight requests")
    finally:
        if front is not None:
            front.shutdown()
            front.server_close()
    # tritonserver has answered every request it accepted: let the front hand the last answers back
    front.wait_idle(timeout_s=10.0)
    say("stopped")
    return code


def watch(triton, front, stop: threading.Event, stubs: dict, say) -> int:
    """Until `stop`: 0. When tritonserver or a model instance's stub dies: 1 (the front then reports why)."""
    while not stop.wait(0.5):
        if not triton.is_alive():
            say("error: tritonserver stopped on its own")
            return 1
        dead = dead_stubs(stubs)
        if dead:
            front.unready = (f"a model instance of '{dead[0]}' died (its backend stub process is gone); "
                             "the server is stopping to be restarted")
            say(f"error: {front.unready}; draining the other instances, then exit 1")
            return 1
    return 0

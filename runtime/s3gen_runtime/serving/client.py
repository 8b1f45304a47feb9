"""A small client of the `s3gen` model over KServe v2 HTTP (tritonclient, which the serve extra brings).

tritonclient's plain HTTP client is used, not PyTriton's FuturesModelClient: that one drops the scheme
of a "grpc://" URL and silently talks HTTP to the gRPC port.
"""

from __future__ import annotations

import json
import queue
import re
import time
import urllib.request
from dataclasses import dataclass

import numpy as np

from .protocol import MODEL_NAME, request_arrays
from .stream_model import STREAM_MODEL_NAME

_TRITON_DTYPES = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32", np.dtype(np.object_): "BYTES"}


@dataclass(frozen=True)
class Reply:
    wav: np.ndarray       # (S,) float32
    sample_rate: int
    seconds: float        # wall time of the call, client side


def infer_arrays(url: str, arrays: dict, timeout_s: float = 300.0) -> Reply:
    """One inference with the given named arrays (any dtype: the server's checks are what is tested).
    Raises tritonclient's InferenceServerException on a server error."""
    import tritonclient.http as http

    client = http.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
    try:
        inputs = []
        for name, value in arrays.items():
            a = np.asarray(value)
            tensor = http.InferInput(name, list(a.shape), _TRITON_DTYPES.get(a.dtype) or http_dtype(a.dtype))
            tensor.set_data_from_numpy(a, binary_data=True)
            inputs.append(tensor)
        # binary outputs: the JSON default spells 24 000 floats a second out as text
        outputs = [http.InferRequestedOutput(name, binary_data=True) for name in ("wav", "sample_rate")]
        start = time.perf_counter()
        result = client.infer(MODEL_NAME, inputs, outputs=outputs)
        seconds = time.perf_counter() - start
        return Reply(result.as_numpy("wav")[0], int(result.as_numpy("sample_rate").reshape(-1)[0]), seconds)
    finally:
        client.close()


def http_dtype(dtype) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(dtype)


def synthesize(url: str, tokens, voice, seed: int, **overrides) -> Reply:
    """tokens + a Voice + a seed -> the server's wav (overrides: steps, cfg_rate, solver)."""
    return infer_arrays(url, request_arrays(tokens, voice, seed, **overrides))


@dataclass(frozen=True)
class Chunk:
    wav: np.ndarray       # (S_chunk,) float32
    start_sample: int     # its first sample in the utterance
    final: bool


def stream_arrays(grpc_url: str, arrays: dict, timeout_s: float = 300.0):
    """Generator of the `s3gen_stream` model's Chunks for one request, over gRPC streaming (a decoupled
    model answers nowhere else). Raises InferenceServerException when the server refuses the request,
    and TimeoutError when no response comes for timeout_s."""
    import tritonclient.grpc as grpc

    replies: queue.Queue = queue.Queue()
    client = grpc.InferenceServerClient(grpc_url)
    try:
        # the callback runs on tritonclient's stream thread: hand each result or error to this one
        client.start_stream(callback=lambda result, error: replies.put((result, error)))
        inputs = []
        for name, value in arrays.items():
            a = np.asarray(value)
            inputs.append(grpc.InferInput(name, list(a.shape), _TRITON_DTYPES.get(a.dtype) or http_dtype(a.dtype)))
            inputs[-1].set_data_from_numpy(a)
        # the empty final response marks the end even when the last chunk is lost to an error
        client.async_stream_infer(STREAM_MODEL_NAME, inputs, enable_empty_final_response=True)
        while True:
            try:
                result, error = replies.get(timeout=timeout_s)
            except queue.Empty:
                raise TimeoutError(f"no response from {STREAM_MODEL_NAME} for {timeout_s} s") from None
            if error is not None:
                raise error
            if result.as_numpy("wav") is not None:
                yield Chunk(result.as_numpy("wav")[0], int(result.as_numpy("start_sample")[0, 0]),
                            bool(result.as_numpy("final")[0, 0]))
            if result.get_response().parameters["triton_final_response"].bool_param:
                return
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()


def stream(grpc_url: str, tokens, voice, seed: int, first_chunk_tokens: int | None = None,
           chunk_tokens: int | None = None, **overrides):
    """tokens + a Voice + a seed -> the server's Chunks as they are made (overrides: steps, cfg_rate, solver)."""
    arrays = request_arrays(tokens, voice, seed, **overrides)
    for name, value in (("first_chunk_tokens", first_chunk_tokens), ("chunk_tokens", chunk_tokens)):
        if value is not None:
            arrays[name] = np.array([[value]], dtype=np.int64)
    return stream_arrays(grpc_url, arrays)


def get_json(url: str, path: str, timeout_s: float = 10.0) -> dict:
    with urllib.request.urlopen(f"http://{url}{path}", timeout=timeout_s) as r:
        return json.loads(r.read())


def is_ready(url: str) -> bool:
    """GET /v2/health/ready: True on 200; False on any other answer or no answer."""
    try:
        with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=2.0) as r:
            return r.status == 200
    except OSError:
        return False


def model_stats(url: str) -> dict:
    """Triton's statistics of the model: counts, queue and compute times (ns), executions per batch size."""
    stats = get_json(url, f"/v2/models/{MODEL_NAME}/stats")["model_stats"][0]
    inference = stats["inference_stats"]
    return {
        "requests": int(stats["inference_count"]),
        "executions": int(stats["execution_count"]),
        "success": int(inference["success"]["count"]),
        "fail": int(inference["fail"]["count"]),
        "queue_ns": int(inference["queue"]["ns"]),
        "compute_ns": int(inference["compute_infer"]["ns"]),
        "batch_sizes": {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])},
    }


def stats_delta(before: dict, after: dict) -> dict:
    """What happened between two model_stats snapshots (pure)."""
    out = {k: after[k] - before[k] for k in ("requests", "executions", "success", "fail", "queue_ns", "compute_ns")}
    sizes = {s: n - before["batch_sizes"].get(s, 0) for s, n in after["batch_sizes"].items()}
    out["batch_sizes"] = {s: n for s, n in sorted(sizes.items()) if n > 0}
    return out


def metric_values(metrics_url: str, name: str) -> float:
    """Sum of a Prometheus metric of the s3gen model from Triton's metrics port."""
    with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=5.0) as r:
        text = r.read().decode()
    pattern = re.compile(rf'^{name}\{{[^}}]*model="{MODEL_NAME}"[^}}]*\}} ([0-9.e+-]+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))

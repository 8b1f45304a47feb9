"""`s3gen-aot triton-repo`: a Triton model repository a stock tritonserver loads, and how to start the
nvidia-pytriton wheel's tritonserver binary on it (CPU, loopback).

REPO/s3gen/config.pbtxt carries the wire contract (protocol.py), ragged dynamic batching, the instance
group and the parameters (artifacts, precision, backend, threads, python_path); REPO/s3gen/1/model.py is
triton_model.py, a Python-backend model running the runtime in-process. On a GPU machine the same model
takes `backend: tensorrt` (the runtime's engines per bucket); only the parameter changes.
"""

from __future__ import annotations

import os
import shutil
import site
import sys
import tempfile
from pathlib import Path

import numpy as np

from .environment import libpython_dir
from .options import ServeOptions
from .protocol import INPUTS, MODEL_NAME, OUTPUTS

_TYPES = {np.int64: "TYPE_INT64", np.float32: "TYPE_FP32", np.bytes_: "TYPE_STRING"}


def _tensor(spec, ragged: bool) -> str:
    lines = [f'    name: "{spec.name}"', f"    data_type: {_TYPES[spec.dtype]}",
             f"    dims: [ {', '.join(str(d) for d in spec.shape)} ]"]
    if spec.optional:
        lines.append("    optional: true")
    if ragged:
        lines.append("    allow_ragged_batch: true")
    return "  {\n" + "\n".join(lines) + "\n  }"


def batching_text(max_queue_delay_ms: float, max_queue_size: int, queue_timeout_ms: float) -> str:
    """The dynamic batcher with its bounded queue (0: no limit), as `serve` sets it (server.queue_policy)."""
    policy = (f"default_queue_policy {{ timeout_action: REJECT max_queue_size: {max_queue_size} "
              f"default_timeout_microseconds: {int(round(queue_timeout_ms * 1000))} }}")
    return f"dynamic_batching {{ max_queue_delay_microseconds: {int(round(max_queue_delay_ms * 1000))} {policy} }}"


def config_text(parameters: dict, max_batch: int, max_queue_delay_ms: float, instances: int,
                max_queue_size: int = 0, queue_timeout_ms: float = 0.0) -> str:
    """config.pbtxt (pure). Ragged inputs: Triton batches utterances of different lengths."""
    params = ",\n".join(f'  {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in parameters.items())
    return "\n".join([
        f'name: "{MODEL_NAME}"', 'backend: "python"', f"max_batch_size: {max_batch}",
        "input [\n" + ",\n".join(_tensor(s, True) for s in INPUTS) + "\n]",
        "output [\n" + ",\n".join(_tensor(s, False) for s in OUTPUTS) + "\n]",
        batching_text(max_queue_delay_ms, max_queue_size, queue_timeout_ms),
        f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]",
        "parameters [\n" + params + "\n]", ""])


def python_path() -> str:
    """Where the stub finds this package and its dependencies: the environment writing the repository."""
    package_root = Path(__file__).resolve().parents[2]
    return os.pathsep.join([str(package_root), *site.getsitepackages()])


def write_repository(artifacts, out, *, max_batch: int = 8, max_queue_delay_ms: float = 20.0, instances: int = 1,
                     threads: int | None = None, precision: str = "fp32", backend: str = "onnxruntime",
                     max_queue_size: int = ServeOptions.max_queue_size,
                     queue_timeout_ms: float = ServeOptions.queue_timeout_ms) -> Path:
    from ..manifest import load_manifest

    artifacts = Path(artifacts).resolve()
    load_manifest(artifacts, verify=False)   # a folder that is not an artifact folder fails here, not in Triton
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # all or nothing: the model folder is made beside its place and renamed into it, so a tritonserver
    # (or a failed or interrupted write) never sees a config without its model.py
    staging = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}-", dir=out))
    try:
        (staging / "1").mkdir()
        parameters = {"artifacts": str(artifacts), "precision": precision, "backend": backend,
                      "threads": str(threads or 0), "python_path": python_path()}
        (staging / "config.pbtxt").write_text(config_text(parameters, max_batch, max_queue_delay_ms, instances,
                                                          max_queue_size, queue_timeout_ms))
        shutil.copyfile(Path(__file__).with_name("triton_model.py"), staging / "1" / "model.py")
        replace_folder(staging, out / MODEL_NAME)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def replace_folder(new: Path, target: Path) -> None:
    """`new` takes `target`'s place; an older `target` is moved aside first and removed after."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def prepare_tritonserver(workdir) -> Path:
    """The wheel's tritonserver tree copied to workdir with this Python's backend stub in place (the
    wheel keeps one stub per Python version beside it, as PyTriton arranges it at start)."""
    import pytriton

    wheel = Path(pytriton.__file__).parent / "tritonserver"
    target = Path(workdir) / "tritonserver"
    if not target.exists():
        shutil.copytree(wheel, target, ignore=shutil.ignore_patterns("python_backend_stubs"))
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
        shutil.copy2(stub, target / "backends" / "python" / "triton_python_backend_stub")
    return target


def server_command(server_dir: Path, repo: Path, host: str, http_port: int, grpc_port: int,
                   metrics_port: int) -> list[str]:
    return [str(server_dir / "bin" / "tritonserver"), f"--model-repository={repo}",
            f"--backend-directory={server_dir / 'backends'}", f"--http-address={host}", f"--http-port={http_port}",
            f"--grpc-address={host}", f"--grpc-port={grpc_port}", f"--metrics-address={host}",
            f"--metrics-port={metrics_port}", "--exit-timeout-secs=25", "--strict-readiness=true"]


def server_environment(environ: dict) -> dict:
    """The wheel's own libraries and this interpreter's libpython first (environment.py), and this
    environment's bin first on PATH: the stub's embedded Python takes its prefix from the `python` it
    finds there. Without it the stub ran on the base interpreter's site-packages, whose numpy 2 its
    extension does not match: every output came back empty ("output tensor shape does not match size")."""
    import pytriton

    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    first = [p for p in (libpython_dir(), str(libs)) if p]
    rest = [p for p in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p not in first]
    path = os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")])
    return {**environ, "LD_LIBRARY_PATH": os.pathsep.join(first + rest), "PATH": path}

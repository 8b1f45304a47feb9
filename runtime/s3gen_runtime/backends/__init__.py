"""Inference backends behind one `Runner` interface, chosen by name.

The registry maps a backend name to the module and factory that open a runner; the module
is imported only when that backend is used, so a deployment needs only its own backend's
package. A new backend (TensorRT) adds one entry here or calls `register_backend`.
"""

from __future__ import annotations

import importlib
from typing import Callable

from ..errors import InputError
from ..manifest import Manifest
from .base import Runner

# name -> (module, factory); factory(folder, manifest, component_name, **options) -> Runner
_BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("s3gen_runtime.backends.onnxruntime", "open_onnxruntime"),
    "onnxruntime-cuda": ("s3gen_runtime.backends.onnxruntime_cuda", "open_onnxruntime_cuda"),
    "tensorrt": ("s3gen_runtime.backends.tensorrt.bucketed", "open_tensorrt"),
}


def register_backend(name: str, module: str, factory: str) -> None:
    """Make `name` openable: `module.factory(folder, manifest, component_name, **options)`."""
    if not isinstance(name, str) or not name:
        raise InputError(f"backend name must be a non-empty string, got {name!r}")
    _BACKENDS[name] = (module, factory)


def known_backends() -> list[str]:
    return sorted(_BACKENDS)


def _factory(backend: str) -> Callable[..., Runner]:
    if backend not in _BACKENDS:
        raise InputError(f"unknown backend {backend!r}; known backends: {', '.join(known_backends())}")
    module, name = _BACKENDS[backend]
    return getattr(importlib.import_module(module), name)


def open_runner(folder, manifest: Manifest, component_name: str, backend: str = "onnxruntime",
                **options) -> Runner:
    """A runner for one component of the artifact folder, checked against the manifest."""
    return _factory(backend)(folder, manifest, component_name, **options)


__all__ = ["Runner", "open_runner", "register_backend", "known_backends"]

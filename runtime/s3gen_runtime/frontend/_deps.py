"""Lazy imports of the optional audio libraries (the `voice` extra), with an error that says how to get them."""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import S3GenError

VOICE_EXTRA_HINT = "pip install 's3gen-aot[voice]'"


class MissingDependencyError(S3GenError, ImportError):
    """An optional package of the `voice` extra is not installed."""


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` now (not at package import, so the base runtime never needs it) or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module}' ({e}); install it with: {VOICE_EXTRA_HINT}") from e
    except OSError as e:       # soundfile imports but cannot load its libsndfile
        raise MissingDependencyError(
            f"{purpose} needs '{module}' but it could not load its native library ({e}); "
            f"reinstall it with: {VOICE_EXTRA_HINT}") from e

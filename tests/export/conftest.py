"""Fixtures of the engine tests: the exported synthetic graphs (exported once per session by tests/conftest.py)."""
from __future__ import annotations

import pytest

from s3gen_export.engines.build import load_for_tensorrt
from s3gen_runtime.manifest import load_manifest


@pytest.fixture(scope="module")
def standard(exported):
    """(folder, manifest) of the exported standard artifacts."""
    folder = exported("standard")
    return folder, load_manifest(folder, verify=False)


@pytest.fixture(scope="module")
def protos(exported):
    """protos(variant, graph name) -> the ONNX ModelProto an engine build starts from (cached)."""
    cache = {}

    def get(variant, name):
        if (variant, name) not in cache:
            cache[(variant, name)] = load_for_tensorrt(exported(variant) / f"{name}.onnx")
        return cache[(variant, name)]

    return get

"""Runtimes on the exported synthetic checkpoint, loaded once for every runtime test module
(loading hashes every graph file)."""
import pytest

from s3gen_runtime.pipeline import S3GenRuntime


@pytest.fixture(scope="session")
def std(exported):
    return S3GenRuntime(exported("standard"))


@pytest.fixture(scope="session")
def mf(exported):
    return S3GenRuntime(exported("meanflow"))

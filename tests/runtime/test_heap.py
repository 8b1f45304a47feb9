"""Returning the C heap's free pages: a no-op where there is no glibc, measurable where there is."""
import ctypes

import numpy as np
import pytest

from s3gen_runtime import heap


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


@pytest.mark.skipif(heap._malloc_trim() is None, reason="no glibc malloc_trim here")
def test_freed_small_blocks_go_back_to_the_os():
    # many small blocks come from the heap (not mmap), so freeing them alone leaves RSS where it was
    blocks = [ctypes.create_string_buffer(4096) for _ in range(50_000)]
    for b in blocks:
        ctypes.memset(b, 1, 4096)
    keep = np.ones(1)   # noqa: F841 - the heap top stays in use, as in a running process
    del blocks
    before = _rss_mb()
    heap.release_free_heap()
    assert _rss_mb() < before - 50


def test_without_glibc_nothing_happens(monkeypatch):
    monkeypatch.setattr(heap, "_malloc_trim", lambda: None)
    assert heap.release_free_heap() is False

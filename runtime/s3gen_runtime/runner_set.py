"""The runtime's graphs by role, each opened on first use.

The unguided `estimator` holds the same U-Net weights as `estimator_cfg` (~280 MB fp32) and only
serves cfg_rate = 0, so a runtime that never gets such a request never opens it. Opening is
thread-safe: concurrent first uses of a role open it once.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Callable

from .backends.base import Runner


class RunnerSet(Mapping):
    """role -> Runner. `eager` roles open now (so load errors show at construction); the rest on first
    lookup. Iterating yields every role; `opened()` says which are open."""

    def __init__(self, opener: Callable[[str], Runner], roles, eager):
        self._opener = opener
        self._roles = tuple(roles)
        self._open: dict[str, Runner] = {}
        self._lock = threading.Lock()
        for role in eager:
            self[role]

    def __getitem__(self, role: str) -> Runner:
        if role not in self._roles:
            raise KeyError(role)
        runner = self._open.get(role)
        if runner is None:
            with self._lock:
                runner = self._open.get(role)
                if runner is None:
                    runner = self._open[role] = self._opener(role)
        return runner

    def __iter__(self):
        return iter(self._roles)

    def __len__(self) -> int:
        return len(self._roles)

    def opened(self) -> tuple[str, ...]:
        return tuple(r for r in self._roles if r in self._open)


__all__ = ["RunnerSet"]

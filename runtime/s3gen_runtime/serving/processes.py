"""The Python-backend stub processes under `serve`, read from /proc (Linux, as the PyTriton wheel is).

Why: a model instance's stub that dies (killed, out of memory) is not restarted by this tritonserver, and
the server still answers /v2/health/ready with 200 while every request to that instance fails with HTTP
500 "Stub process 's3gen_0_0' is not healthy" (seen: 60 s of it, no recovery). serve watches the stubs
and stops (exit 1) when one is gone, reporting not ready meanwhile, so a supervisor restarts it.
"""

from __future__ import annotations

from pathlib import Path

STUB_COMM = "triton_python_b"      # the stub's executable name as /proc/PID/comm keeps it (15 characters)
PROC = Path("/proc")


def _stat(pid_dir: Path) -> tuple[str, str, int] | None:
    """(comm, state, parent pid) of one /proc entry, or None when it is gone."""
    try:
        text = (pid_dir / "stat").read_text()
    except OSError:
        return None
    close = text.rindex(")")
    state, ppid = text[close + 2:].split()[:2]
    return text[text.index("(") + 1:close], state, int(ppid)


def descendants(root: int, proc: Path = PROC) -> dict[int, str]:
    """Every process under `root` (children, grandchildren, ...): pid -> comm."""
    table = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            stat = _stat(entry)
            if stat is not None:
                table[int(entry.name)] = stat
    found, frontier = {}, {root}
    while frontier:
        frontier = {pid for pid, (_, _, ppid) in table.items() if ppid in frontier and pid not in found}
        found.update({pid: table[pid][0] for pid in frontier})
    return found


def stub_models(root: int, proc: Path = PROC) -> dict[int, str]:
    """The backend stubs under `root`: pid -> the model they serve (from the model.py path they load)."""
    stubs = {}
    for pid, comm in descendants(root, proc).items():
        if comm == STUB_COMM:
            try:
                args = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            model_py = Path(args[1].decode(errors="replace")) if len(args) > 1 else Path("?/?/?")
            stubs[pid] = model_py.parent.parent.name
    return stubs


def alive(pid: int, proc: Path = PROC) -> bool:
    """Running (a zombie, dead but not yet reaped by tritonserver, counts as gone)."""
    stat = _stat(proc / str(pid))
    return stat is not None and stat[1] not in ("Z", "X")


def dead_stubs(stubs: dict[int, str], proc: Path = PROC) -> list[str]:
    """The models whose stub (of those found at start) is gone."""
    return sorted({model for pid, model in stubs.items() if not alive(pid, proc)})

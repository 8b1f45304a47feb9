"""processes.py on a fake /proc: which stubs are under the server, and which of them are gone."""
from __future__ import annotations

from s3gen_runtime.serving.processes import alive, dead_stubs, descendants, stub_models


def fake_proc(tmp_path, table):
    """table: pid -> (comm, state, ppid, argv)."""
    for pid, (comm, state, ppid, argv) in table.items():
        folder = tmp_path / str(pid)
        folder.mkdir()
        (folder / "stat").write_text(f"{pid} ({comm}) {state} {ppid} 1 1 0 -1\n")
        (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (tmp_path / "self").mkdir()      # not a pid: ignored
    return tmp_path


def test_stubs_under_the_server_and_the_dead_ones(tmp_path):
    stub = "/ws/tritonserver/backends/python/triton_python_backend_stub"
    proc = fake_proc(tmp_path, {
        10: ("s3gen-aot", "S", 1, ["python"]),
        11: ("tritonserver", "S", 10, ["tritonserver"]),
        12: ("triton_python_b", "S", 11, [stub, "/ws/model-store/s3gen/1/model.py", "x"]),
        13: ("triton_python_b", "Z", 11, [stub, "/ws/model-store/s3gen_stream/1/model.py", "x"]),
        14: ("triton_python_b", "S", 1, [stub, "/other/model-store/theirs/1/model.py", "x"]),   # another server's
        15: ("weird ) name", "S", 12, ["x"]),     # a ')' in comm: the last one closes it
    })
    assert descendants(10, proc) == {11: "tritonserver", 12: "triton_python_b", 13: "triton_python_b",
                                     15: "weird ) name"}
    stubs = stub_models(10, proc)
    assert stubs == {12: "s3gen", 13: "s3gen_stream"}
    assert alive(12, proc) and not alive(13, proc) and not alive(99, proc)   # a zombie or no entry: gone
    assert dead_stubs(stubs, proc) == ["s3gen_stream"]

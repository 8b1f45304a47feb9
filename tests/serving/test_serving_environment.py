"""The PyTriton handshake race (environment.py, trap 4): a later model instance that connects to the first
instance's config socket after it was bound but before it listens is refused. The patched proxy code
waits for the listener; PyTriton's own gives up at once."""
from __future__ import annotations

import importlib.util
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from s3gen_runtime.serving.environment import HANDSHAKE_RETRY, add_handshake_retry

CONFIG = {"authkey": "c2VjcmV0\n", "answer": 42}


def proxy_communication(tmp_path: Path, patched: bool):
    import pytriton

    source = Path(pytriton.__file__).parent / "proxy" / "communication.py"
    copy = tmp_path / ("patched" if patched else "original") / "communication.py"
    copy.parent.mkdir()
    shutil.copyfile(source, copy)
    if patched:
        add_handshake_retry(copy)
        add_handshake_retry(copy)          # idempotent
        assert copy.read_text().count(HANDSHAKE_RETRY) == 1
    spec = importlib.util.spec_from_file_location(f"communication_{copy.parent.name}", copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bound_not_listening(path: Path, listen_after_s: float, communication):
    """A socket file that refuses connections (bound, not listening), replaced by PyTriton's own
    HandshakeServer after listen_after_s: the window of the race, made long."""
    early = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    early.bind(str(path))
    servers = []

    def later():
        time.sleep(listen_after_s)
        early.close()
        path.unlink()
        server = communication.HandshakeServer(path, CONFIG)
        server.start()
        servers.append(server)

    thread = threading.Thread(target=later)
    thread.start()
    return thread, servers


@pytest.mark.parametrize("patched", [False, True])
def test_handshake_refused_before_listen(tmp_path, patched):
    communication = proxy_communication(tmp_path, patched)
    path = tmp_path / "s3gen-config.sock"
    thread, servers = bound_not_listening(path, 0.5, communication)
    try:
        if patched:
            assert communication.get_config_from_handshake_server(path) == CONFIG
        else:
            with pytest.raises(ConnectionRefusedError):
                communication.get_config_from_handshake_server(path)
    finally:
        thread.join(timeout=10)
        for server in servers:
            server.close()


def test_unknown_proxy_code_is_refused_by_name(tmp_path):
    stranger = tmp_path / "communication.py"
    stranger.write_text("def something_else():\n    pass\n")
    with pytest.raises(RuntimeError, match="expected nvidia-pytriton 0.7.x"):
        add_handshake_retry(stranger)


def test_every_generated_model_gets_the_retry(tmp_path):
    """retry_refused_handshakes wraps PyTriton's model generation: the copied file carries the retry."""
    import numpy as np
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.models.model import Model

    from s3gen_runtime.serving.environment import retry_refused_handshakes

    retry_refused_handshakes()
    retry_refused_handshakes()          # idempotent: one wrapper

    class Workspace:
        path = tmp_path / "workspace"

    Workspace.path.mkdir()
    model = Model(model_name="probe", model_version=1, inference_fn=lambda requests: requests,
                  inputs=[Tensor(name="x", dtype=np.float32, shape=(-1,))],
                  outputs=[Tensor(name="y", dtype=np.float32, shape=(-1,))], config=ModelConfig(),
                  workspace=Workspace(), triton_context=None, strict=False)
    model.generate_model(tmp_path / "repo")
    text = (tmp_path / "repo" / "probe" / "1" / "communication.py").read_text()
    assert text.count(HANDSHAKE_RETRY) == 1

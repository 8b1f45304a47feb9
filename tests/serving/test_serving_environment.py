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

from s3gen_runtime.serving.environment import (HANDSHAKE_RETRY, REFUSAL_CODES, add_handshake_retry, add_refusal_codes,
                                               refusal_prefix)

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


def test_every_generated_model_gets_the_patches(tmp_path):
    """patch_generated_models wraps PyTriton's model generation: the copied files carry both patches."""
    import numpy as np
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.models.model import Model

    from s3gen_runtime.serving.environment import patch_generated_models

    patch_generated_models()
    patch_generated_models()          # idempotent: one wrapper

    class Workspace:
        path = tmp_path / "workspace"

    Workspace.path.mkdir()
    model = Model(model_name="probe", model_version=1, inference_fn=lambda requests: requests,
                  inputs=[Tensor(name="x", dtype=np.float32, shape=(-1,))],
                  outputs=[Tensor(name="y", dtype=np.float32, shape=(-1,))], config=ModelConfig(),
                  workspace=Workspace(), triton_context=None, strict=False)
    model.generate_model(tmp_path / "repo")
    version = tmp_path / "repo" / "probe" / "1"
    assert (version / "communication.py").read_text().count(HANDSHAKE_RETRY) == 1
    code = REFUSAL_CODES.format(prefix=refusal_prefix())
    assert (version / "model.py").read_text().count(code) == 1
    add_refusal_codes(version / "model.py")   # idempotent
    assert (version / "model.py").read_text().count(code) == 1
    compile((version / "model.py").read_text(), "model.py", "exec")


class FakeUtils:
    """The parts of triton_python_backend_utils the refusal patch uses."""

    class TritonModelException(Exception):
        pass

    class TritonError:
        INVALID_ARG = "INVALID_ARG"

        def __init__(self, message, code=None):
            self.message, self.code = message, code

    class InferenceResponse:
        def __init__(self, error=None):
            self.error = error

    TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


class FakeTensor:
    def __init__(self, name, shape):
        self._name, self._shape = name, shape

    def name(self):
        return self._name

    def shape(self):
        return self._shape


class FakeRequest:
    """A pb_utils.InferenceRequest: its input tensors, and the sender a decoupled model answers through."""

    def __init__(self, label, tokens_shape=(1, 5)):
        self.label, self.sent = label, []
        self._inputs = [FakeTensor("speech_tokens", list(tokens_shape)), FakeTensor("seed", [1, 1])]

    def inputs(self):
        return self._inputs

    def get_response_sender(self):
        request = self

        class Sender:
            def send(self, response, flags=0):
                request.sent.append((response, flags))

        return Sender()


def patched_module(outcome, decoupled=False):
    """A proxy model module whose execute raises or returns `outcome` (or, called, outcome(requests)),
    with the patch appended."""
    class TritonPythonModel:
        _decoupled_model = decoupled

        def execute(self, triton_requests):
            if isinstance(outcome, Exception):
                raise outcome
            return outcome(triton_requests) if callable(outcome) else outcome

    namespace = {"TritonPythonModel": TritonPythonModel, "pb_utils": FakeUtils}
    exec(REFUSAL_CODES.format(prefix=refusal_prefix()), namespace)
    return namespace


def patched_execute(outcome, decoupled=False):
    model = patched_module(outcome, decoupled)["TritonPythonModel"]()
    return model.execute


REASON = "speech_tokens: token id 6566 at position 3 is outside the vocabulary [0, 6561)"


def refusal_traceback() -> str:
    """What PyTriton's inference handler sends for a ClientError: the formatted traceback."""
    import traceback

    from s3gen_runtime.serving.protocol import ClientError

    try:
        raise ClientError(REASON)
    except ClientError as e:
        return "".join(traceback.format_exception(None, e, e.__traceback__))


def test_refused_requests_answer_invalid_arg():
    # as PyTriton nests it: the callable's traceback inside the batch handler's exception, inside execute's
    nested = FakeUtils.TritonModelException(f"Model execute error: Traceback (most recent call last):\n"
                                            f"  ...\nTritonModelException: {refusal_traceback()}\n")
    responses = patched_execute(nested)([FakeRequest("a"), FakeRequest("b")])
    assert len(responses) == 2
    assert {(r.error.code, r.error.message) for r in responses} == {("INVALID_ARG", REASON)}
    # a model failure stays one, and results pass through
    failure = FakeUtils.TritonModelException("Model execute error: RuntimeError: out of memory")
    with pytest.raises(FakeUtils.TritonModelException, match="out of memory"):
        patched_execute(failure)([FakeRequest("a")])
    assert patched_execute(["wav"])([FakeRequest("a")]) == ["wav"]


def test_empty_inputs_are_refused_before_pytriton_sees_them():
    """PyTriton's tensor store fails on a zero in a shape: such a request is answered INVALID_ARG by name,
    the others of the batch go through in order."""
    handed = []

    def answer(requests):
        handed.extend(requests)
        return [f"wav {r.label}" for r in requests]

    batch = [FakeRequest("a"), FakeRequest("b", (1, 0)), FakeRequest("c")]
    responses = patched_execute(answer)(batch)
    assert [r.label for r in handed] == ["a", "c"]
    assert responses[0] == "wav a" and responses[2] == "wav c"
    assert responses[1].error.code == "INVALID_ARG"
    assert responses[1].error.message == ("input 'speech_tokens' has no values (shape [1, 0]): every input needs "
                                          "at least one value")
    # all empty: nothing reaches PyTriton
    handed.clear()
    assert [r.error.code for r in patched_execute(answer)([FakeRequest("d", (0, 3))])] == ["INVALID_ARG"]
    assert handed == []


def test_empty_inputs_of_a_stream_are_refused_in_the_stream():
    handed = []
    batch = [FakeRequest("a", (1, 0)), FakeRequest("b")]
    assert patched_execute(lambda requests: handed.extend(requests), decoupled=True)(batch) is None
    assert [r.label for r in handed] == ["b"] and batch[1].sent == []
    (response, flags), = batch[0].sent
    assert response.error.code == "INVALID_ARG" and "speech_tokens" in response.error.message
    assert flags == FakeUtils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def test_streamed_refusals_answer_invalid_arg():
    """The decoupled handler builds its error responses with the module's pb_utils.TritonError."""
    utils = patched_module(None)["pb_utils"]
    refused = utils.TritonError(refusal_traceback())
    assert (refused.code, refused.message) == ("INVALID_ARG", REASON)
    failure = utils.TritonError("Traceback ...\nRuntimeError: out of memory")
    assert (failure.code, failure.message) == (None, "Traceback ...\nRuntimeError: out of memory")
    cancelled = utils.TritonError(error="Cancelled responses handler")
    assert cancelled.message == "Cancelled responses handler" and cancelled.code is None
    assert utils.InferenceResponse is FakeUtils.InferenceResponse


def test_unknown_proxy_model_is_refused_by_name(tmp_path):
    stranger = tmp_path / "model.py"
    stranger.write_text("class SomethingElse:\n    pass\n")
    with pytest.raises(RuntimeError, match="expected nvidia-pytriton 0.7.x"):
        add_refusal_codes(stranger)

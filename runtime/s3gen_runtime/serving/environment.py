"""The nvidia-pytriton wheel's traps, handled before its server starts.

1. Its Python-backend stub (pytriton/tritonserver/python_backend_stubs/3.X) links `libpython3.X.so.1.0`
   by soname. With a Python built outside the system (pyenv, conda, uv) the loader finds the system's
   libpython of another patch release first, whose C layer does not match this interpreter's standard
   library: the stub then dies inside multiprocessing (seen on 3.11.2 vs 3.11.7:
   "'_thread.RLock' object has no attribute '_recursion_count'"). The fix is LD_LIBRARY_PATH -> this
   interpreter's LIBDIR, set before tritonserver starts (it and the stub inherit the environment).
2. Its config generator writes no `allow_ragged_batch`, so Triton batches only requests whose every
   variable dimension matches: utterances of different lengths would never share a batch.
3. The wheel requires numpy < 2 (its metadata pins it; the stub process imports the same numpy).
4. With two or more instances, each later instance's stub fetches its config from a unix socket that the
   first instance's stub serves. asyncio binds that socket (the file appears) before it listens, and a
   later instance that connects in between gets "Connection refused": the model fails to load and the
   server exits (seen once in ~35 two-instance starts on 2 busy cores). The copied proxy code is given a
   handshake that retries a refused connection for a few seconds.
5. Every exception of the inference callable reaches the client as a model failure (HTTP 500, gRPC
   INTERNAL), a refused request too. The copied proxy model answers the runtime's refusals (ClientError)
   with INVALID_ARG instead, which Triton sends as HTTP 400 / gRPC INVALID_ARGUMENT, with the reason alone
   as the message (not PyTriton's nested tracebacks); a decoupled (streaming) model's refusal, which
   PyTriton sends as an error response in the stream, gets the same code and message.
6. PyTriton's tensor store fails on a tensor with a zero in its shape ("memoryview: cannot cast view with
   zeros in shape"), which Triton lets through: `speech_tokens` [1, 0] was an HTTP 500. The proxy refuses
   such a request with INVALID_ARG naming the input before handing it to PyTriton.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

_patched = False
_models_patched = False

# Appended to the proxy's communication.py in each generated model: the module's last binding of the
# name wins, so proxy/model.py's `from .communication import get_config_from_handshake_server` takes it.
HANDSHAKE_RETRY = """

# --- added by s3gen_runtime.serving.environment: retry a handshake refused before its server listens
_s3gen_handshake_once = get_config_from_handshake_server


def get_config_from_handshake_server(socket_path, timeout_s=1.0):
    deadline = time.time() + 10.0
    while True:
        try:
            return _s3gen_handshake_once(socket_path, timeout_s)
        except ConnectionRefusedError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
"""


# Appended to the proxy's model.py in each generated model. PyTriton formats the callable's exception as a
# traceback whose last line for a refusal is "<refusal_prefix()><reason>"; that text travels inside the
# TritonModelException that execute raises.
REFUSAL_CODES = """

# --- added by s3gen_runtime.serving.environment: a refused request answers INVALID_ARG (HTTP 400)
_S3GEN_REFUSAL_PREFIX = {prefix!r}
_s3gen_pb_utils = pb_utils
_s3gen_execute = TritonPythonModel.execute


def _s3gen_refusal(text):
    start = text.rfind(_S3GEN_REFUSAL_PREFIX)
    return None if start < 0 else text[start + len(_S3GEN_REFUSAL_PREFIX):].splitlines()[0]


def _s3gen_invalid_arg(reason):
    return _s3gen_pb_utils.TritonError(reason, _s3gen_pb_utils.TritonError.INVALID_ARG)


def _s3gen_execute_refusing(self, triton_requests):
    try:
        return _s3gen_execute(self, triton_requests)
    except _s3gen_pb_utils.TritonModelException as e:
        reason = _s3gen_refusal(str(e))
        if reason is None:
            raise
        return [_s3gen_pb_utils.InferenceResponse(error=_s3gen_invalid_arg(reason)) for _ in triton_requests]


def _s3gen_empty_input(triton_request):
    # PyTriton's tensor store cannot serialize a tensor with a zero in its shape (a TypeError, answered
    # as a model failure): such a request is refused here, before it reaches the callable
    for tensor in triton_request.inputs():
        shape = [int(d) for d in tensor.shape()]
        if 0 in shape:
            return f"input '{{tensor.name()}}' has no values (shape {{shape}}): every input needs at least one value"
    return None


def _s3gen_execute_answering_refusals(self, triton_requests):
    empty = [_s3gen_empty_input(r) for r in triton_requests]
    if not any(empty):
        return _s3gen_execute_refusing(self, triton_requests)
    kept = [r for r, reason in zip(triton_requests, empty) if reason is None]
    if self._decoupled_model:
        for r, reason in zip(triton_requests, empty):
            if reason is not None:
                r.get_response_sender().send(_s3gen_pb_utils.InferenceResponse(error=_s3gen_invalid_arg(reason)),
                                             flags=_s3gen_pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return _s3gen_execute_refusing(self, kept) if kept else None
    answers = iter(_s3gen_execute_refusing(self, kept) if kept else [])
    return [next(answers) if reason is None else _s3gen_pb_utils.InferenceResponse(error=_s3gen_invalid_arg(reason))
            for reason in empty]


class _S3genBackendUtils:
    # pb_utils as this module's handlers see it: the decoupled handler builds its error responses with
    # pb_utils.TritonError(traceback text), which for a refusal becomes INVALID_ARG with the reason
    def __getattr__(self, name):
        return getattr(_s3gen_pb_utils, name)

    def TritonError(self, error, *code):
        reason = None if code else _s3gen_refusal(error)
        return _s3gen_pb_utils.TritonError(error, *code) if reason is None else _s3gen_invalid_arg(reason)


TritonPythonModel.execute = _s3gen_execute_answering_refusals
pb_utils = _S3genBackendUtils()
"""


def refusal_prefix() -> str:
    """How a ClientError's line starts in a formatted traceback."""
    from .protocol import ClientError

    return f"{ClientError.__module__}.{ClientError.__qualname__}: "


def libpython_dir() -> str | None:
    """The folder holding this interpreter's shared libpython, or None for a static build."""
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME")
    if libdir and soname and (Path(libdir) / soname).exists():
        return libdir
    return None


def with_libpython(environ: dict, libdir: str | None) -> dict:
    """The environment with `libdir` first on LD_LIBRARY_PATH (pure: returns a new dict)."""
    if libdir is None:
        return dict(environ)
    parts = [p for p in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
    return {**environ, "LD_LIBRARY_PATH": os.pathsep.join([libdir, *parts])}


def point_stub_at_libpython() -> None:
    os.environ["LD_LIBRARY_PATH"] = with_libpython(dict(os.environ), libpython_dir()).get("LD_LIBRARY_PATH", "")


def check_numpy(version: str) -> None:
    """A clear error instead of a stub crash when numpy 2 was forced in beside the wheel."""
    if int(version.split(".")[0]) >= 2:
        raise RuntimeError(f"nvidia-pytriton needs numpy < 2, this environment has numpy {version}: "
                           "pip install 's3gen-aot[serve]' installs a matching numpy")


def allow_ragged_batching() -> None:
    """Every input of a PyTriton model gets allow_ragged_batch: Triton then batches requests of different
    lengths, and the model pads them itself (the runtime's padding is inert). Idempotent."""
    global _patched
    if _patched:
        return
    from pytriton.model_config import generator

    original = generator.ModelConfigGenerator._set_model_signature

    def set_model_signature(self, model_config: dict) -> None:
        original(self, model_config)
        for tensor in model_config.get("input", []):
            tensor["allow_ragged_batch"] = True

    generator.ModelConfigGenerator._set_model_signature = set_model_signature
    _patched = True


def append_to_proxy(path: Path, code: str, expected: tuple[str, ...], what: str) -> None:
    """Append `code` to a copied PyTriton proxy file once; refuse a file without the `expected` pieces the
    code relies on (another PyTriton version) rather than patch it blindly."""
    text = path.read_text()
    if not all(piece in text for piece in expected):
        raise RuntimeError(f"{path}: this PyTriton's {what} is not the one patched here (expected nvidia-pytriton 0.7.x)")
    if code not in text:
        path.write_text(text + code)


def add_handshake_retry(communication_py: Path) -> None:
    """Append the retrying handshake to a copied proxy communication.py (idempotent)."""
    append_to_proxy(communication_py, HANDSHAKE_RETRY, ("def get_config_from_handshake_server(", "\nimport time\n"),
                    "handshake code")


def add_refusal_codes(model_py: Path) -> None:
    """Append the INVALID_ARG answer for refused requests to a copied proxy model.py (idempotent)."""
    append_to_proxy(model_py, REFUSAL_CODES.format(prefix=refusal_prefix()),
                    ("class TritonPythonModel", "\n    def execute(self, triton_requests):", "self._decoupled_model",
                     "import triton_python_backend_utils as pb_utils"), "proxy model")


def patch_generated_models() -> None:
    """Every model PyTriton writes gets its copied proxy code patched: the retrying handshake
    (communication.py) and INVALID_ARG for refused requests (model.py). Idempotent."""
    global _models_patched
    if _models_patched:
        return
    from pytriton.models.model import Model

    original = Model.generate_model

    def generate_model(self, model_repository) -> None:
        original(self, model_repository)
        version = Path(model_repository) / self.model_name / str(self.model_version)
        add_handshake_retry(version / "communication.py")
        add_refusal_codes(version / "model.py")

    Model.generate_model = generate_model
    _models_patched = True

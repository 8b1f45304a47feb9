"""The HTTP front of `s3gen-aot serve`: listens on the public HTTP address, checks each inference body
(wire_checks.py) and forwards everything else unchanged to tritonserver's HTTP port on loopback.

Only HTTP needs it: tritonserver's gRPC front end answered every malformed request tried with
INVALID_ARGUMENT. It also words Triton's busy refusals (HTTP 503) with the limit that caused them, and
logs no request lines: a request's tokens and voice never reach a log.
"""

from __future__ import annotations

import contextlib
import http.client
import sys
import threading
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .wire_checks import WireError, check_body

# headers that describe the body, passed through in both directions
BODY_HEADERS = ("Content-Type", "Content-Encoding", "Inference-Header-Content-Length")
# and to tritonserver: the answer's encoding, and PyTriton's access token for the restricted endpoints
REQUEST_HEADERS = BODY_HEADERS + ("Accept-Encoding", "triton-access-token")
BACKEND_TIMEOUT_S = 3600.0     # a request may queue and run long; the client's own timeout ends it sooner


@dataclass(frozen=True)
class FrontLimits:
    max_request_bytes: int
    max_queue_size: int
    queue_timeout_ms: float


def busy_message(text: str, limits: FrontLimits) -> str | None:
    """Triton's 503 text -> the refusal with its limit named, or None when it is another 503."""
    if "Exceeds maximum queue size" in text:
        return (f"server busy: {limits.max_queue_size} requests are already waiting (--max-queue-size "
                f"{limits.max_queue_size}); retry later")
    if "Request timeout expired" in text:
        return (f"server busy: the request waited the queue timeout ({limits.queue_timeout_ms:g} ms, "
                f"--queue-timeout-ms) without a free model instance; retry later")
    return None


def decoded_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as Triton will read it: gzip and deflate (the encodings Triton takes) inflated, at most
    `limit` bytes of it (a small compressed body must not inflate without bound here)."""
    if encoding in (None, "", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise WireError(f"Content-Encoding {encoding!r} is not supported (use gzip, deflate or none)", status=415)
    inflater = zlib.decompressobj(zlib.MAX_WBITS | (16 if encoding == "gzip" else 0))
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise WireError(f"request body is not valid {encoding} data: {e}") from None
    if len(out) > limit:
        raise WireError(f"request body inflates past the limit of {limit} bytes", status=413)
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"     # keep-alive, as tritonclient expects
    server: "FrontServer"

    def log_message(self, format, *args):   # noqa: A002 - no request logs (the base class writes one per request)
        pass

    def _answer(self, status: int, body: bytes, headers: dict) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _refuse(self, error: WireError) -> None:
        import json

        self._answer(error.status, json.dumps({"error": str(error)}).encode(), {"Content-Type": "application/json"})

    def _body(self) -> bytes | None:
        """The request body, or None after answering a refusal (no length, too long)."""
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                self._refuse(WireError("send the body with a Content-Length (no chunked encoding)", status=411))
                return None
            return b""
        limit = self.server.limits.max_request_bytes
        if not length.isdigit() or int(length) > limit:
            self.close_connection = True       # the body is not kept: the connection cannot be reused
            self._refuse(WireError(f"request body of {length} bytes is over the limit of {limit} bytes "
                                   "(--max-request-mb)", status=413))
            self._discard(min(int(length) if length.isdigit() else 0, 2 * limit))
            return None
        return self.rfile.read(int(length))

    def _discard(self, count: int) -> None:
        """Read (and drop) what the client is still sending, up to a bound, so it reads the refusal instead of
        a broken pipe; a client sending more than that is cut off."""
        self.connection.settimeout(10.0)
        try:
            while count > 0:
                chunk = self.rfile.read(min(count, 1 << 16))
                if not chunk:
                    return
                count -= len(chunk)
        except OSError:
            return

    def _forward(self) -> None:
        with self.server.in_flight():
            self._forward_one()

    def _forward_one(self) -> None:
        body = self._body()
        if body is None:
            return
        if self.server.unready is not None and (self.path.rstrip("/").endswith(("/ready", "/infer"))):
            self._refuse(WireError(self.server.unready, status=503))     # stopping: not ready, no new work
            return
        if self.command == "POST" and self.path.rstrip("/").endswith("/infer"):
            try:
                limit = self.server.limits.max_request_bytes
                header = self.headers.get("Inference-Header-Content-Length")
                check_body(decoded_body(body, self.headers.get("Content-Encoding"), limit),
                           None if header is None else int(header) if header.isdigit() else -1, limit)
            except WireError as e:
                self._refuse(e)
                return
        headers = {k: self.headers[k] for k in REQUEST_HEADERS if self.headers.get(k) is not None}
        try:
            status, reply, reply_headers = self.server.send(self.command, self.path, body, headers)
        except (OSError, http.client.HTTPException) as e:
            self._refuse(WireError(f"tritonserver did not answer: {type(e).__name__}", status=502))
            return
        if status == 503:
            message = busy_message(reply.decode(errors="replace"), self.server.limits)
            if message is not None:
                import json

                reply, reply_headers = json.dumps({"error": message}).encode(), {"Content-Type": "application/json"}
        self._answer(status, reply, reply_headers)

    def do_GET(self):   # noqa: N802 - BaseHTTPRequestHandler's names
        self._forward()

    def do_POST(self):   # noqa: N802
        self._forward()

    def do_HEAD(self):   # noqa: N802
        self._forward()


class FrontServer(ThreadingHTTPServer):
    """One thread per client connection; each keeps its own connection to tritonserver."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], backend: tuple[str, int], limits: FrontLimits):
        super().__init__(address, _Handler)
        self.backend, self.limits = backend, limits
        self.unready: str | None = None      # set when the server is going down for a fault: why
        self._local = threading.local()
        self._busy = 0
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def in_flight(self):
        with self._idle:
            self._busy += 1
        try:
            yield
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """After tritonserver drained: wait until every answer has been written back to its client."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout=timeout_s)

    def handle_error(self, request, client_address):
        """A client that hung up before its answer is not an error of the server; anything else is."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    def send(self, method: str, path: str, body: bytes, headers: dict) -> tuple[int, bytes, dict]:
        """One request to tritonserver on this thread's connection. A kept-alive connection that tritonserver
        closed meanwhile is replaced once; a fresh one is not retried (the request may have run)."""
        while True:
            conn = getattr(self._local, "conn", None)
            fresh = conn is None
            if fresh:
                conn = self._local.conn = http.client.HTTPConnection(*self.backend, timeout=BACKEND_TIMEOUT_S)
            try:
                conn.request(method, path, body=body if method == "POST" else None, headers=headers)
                response = conn.getresponse()
                reply = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self._local.conn = None
                if fresh:
                    raise
                continue
            return response.status, reply, {k: response.headers[k] for k in BODY_HEADERS if k in response.headers}


def start_front(host: str, port: int, backend_port: int, limits: FrontLimits) -> FrontServer:
    """The front listening on host:port, serving on a daemon thread; stop it with .shutdown()."""
    server = FrontServer((host, port), ("127.0.0.1", backend_port), limits)
    threading.Thread(target=server.serve_forever, name="http-front", daemon=True).start()
    return server

"""The HTTP front's pure parts: the body checks (wire_checks.py), busy wording and inflating (front.py).
No server here; test_serving_hostile.py sends the same bodies to a real one."""
from __future__ import annotations

import gzip
import json
import zlib

import pytest

from s3gen_runtime.serving.front import FrontLimits, busy_message, decoded_body
from s3gen_runtime.serving.wire_checks import WireError, check_body

LIMIT = 1 << 20


def body(*inputs, **extra) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def tensor(name="seed", datatype="INT64", shape=(1, 1), **fields) -> dict:
    return {"name": name, "datatype": datatype, "shape": list(shape), **fields}


def refusal(raw: bytes, header_length=None) -> WireError:
    with pytest.raises(WireError) as caught:
        check_body(raw, header_length, LIMIT)
    return caught.value


def test_well_formed_bodies_pass():
    check_body(body(tensor(data=[3]), tensor("prompt_feat", "FP32", (1, 2, 2), data=[[[1, 2.5], [0, -1e3]]])),
               None, LIMIT)
    check_body(body(tensor("solver", "BYTES", data=["euler"]), outputs=[{"name": "wav"}]), None, LIMIT)
    header = body(tensor(parameters={"binary_data_size": 8}), tensor("w", "BYTES", parameters={"binary_data_size": 9}))
    check_body(header + bytes(17), len(header), LIMIT)


@pytest.mark.parametrize("raw, words", [
    (b"{", ["not valid JSON"]),
    (b"\xff", ["not UTF-8"]),
    (b'{"inputs": []}', ["non-empty 'inputs'"]),
    (b'{"inputs": [1]}', ["'name' string"]),
    (b'{"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [Infinity]}]}', ["Infinity"]),
    (body(tensor(datatype="FP128", data=[1])), ["unknown datatype"]),
    (body(tensor(shape=[1, True], data=[1])), ["non-negative integers"]),
    (body(tensor(shape=[1] * 9, data=[1])), ["at most 8"]),
    (body(tensor(data=[1, 2])), ["holds 2 value(s)", "needs 1"]),
    (body(tensor(data=[1.0])), ["1.0", "not a INT64"]),
    (body(tensor(data=[True])), ["not a INT64"]),
    (body(tensor(datatype="INT32", data=[2**31])), ["not a INT32"]),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1e400]}]}', ["not a FP32"]),   # -> inf
    (body(tensor(datatype="BYTES", data=[7])), ["not a BYTES"]),
    (body(tensor(parameters={"binary_data_size": 4})) + bytes(4), ["4 bytes", "needs 8"]),
    (body(tensor(), outputs={"name": "wav"}), ["'outputs'"]),
    (body(tensor(), parameters=[1]), ["'parameters'"]),
])
def test_malformed_bodies_name_the_problem(raw, words):
    header = raw.index(b"}]}") + 3 if b"binary_data_size" in raw else None
    error = refusal(raw, header)
    assert error.status == 400
    for word in words:
        assert word in str(error), f"{word!r} not in {error}"


def test_sizes_are_checked_before_anything_is_allocated():
    error = refusal(body(tensor(shape=[1, 10**12], data=[1])))
    assert error.status == 413 and "8000000000000 bytes" in str(error) and str(LIMIT) in str(error)
    assert refusal(b" " * (LIMIT + 1)).status == 413


def test_binary_parts_must_add_up_to_the_body():
    header = body(tensor(parameters={"binary_data_size": 8}))
    assert "carries 9" in str(refusal(header + bytes(9), len(header)))
    assert "does not fit" in str(refusal(header, len(header) + 5))


def test_busy_refusals_name_the_limit():
    limits = FrontLimits(LIMIT, 8, 30_000.0)
    assert busy_message("[request id: <id_unknown>] Exceeds maximum queue size", limits) == (
        "server busy: 8 requests are already waiting (--max-queue-size 8); retry later")
    assert "30000 ms" in busy_message("Request timeout expired", limits)
    assert busy_message("Server is stopping", limits) is None


def test_compressed_bodies_are_checked_as_triton_reads_them():
    raw = body(tensor(data=[1]))
    assert decoded_body(gzip.compress(raw), "gzip", LIMIT) == raw
    assert decoded_body(zlib.compress(raw), "deflate", LIMIT) == raw
    assert decoded_body(raw, None, LIMIT) == raw
    with pytest.raises(WireError, match="inflates past"):      # a small bomb stays small here
        decoded_body(gzip.compress(bytes(LIMIT + 10)), "gzip", LIMIT)
    with pytest.raises(WireError) as caught:
        decoded_body(raw, "br", LIMIT)
    assert caught.value.status == 415
    with pytest.raises(WireError, match="not valid gzip"):
        decoded_body(b"plain", "gzip", LIMIT)


def test_the_front_forwards_what_tritonserver_needs_and_refuses_while_unready():
    """A front before a stand-in tritonserver on loopback (both stopped here): the access token and the body
    headers reach it, a bad body does not, and an unready front answers 503 with its reason."""
    import http.client
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from s3gen_runtime.serving.front import start_front
    from s3gen_runtime.serving.launch import free_ports

    seen = []

    class Backend(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):   # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, dict(self.headers), body))
            reply = b'{"error":"[request id: <id_unknown>] Exceeds maximum queue size"}'
            self.send_response(503 if self.path.endswith("/infer") else 200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    backend = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    front = start_front("127.0.0.1", free_ports(1)[0], backend.server_address[1], FrontLimits(LIMIT, 3, 1000.0))

    def ask(path, raw, **headers):
        conn = http.client.HTTPConnection(*front.server_address, timeout=10)
        try:
            conn.request("POST", path, body=raw, headers={"Content-Type": "application/json", **headers})
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    try:
        assert ask("/v2/repository/index", b"{}", **{"triton-access-token": "t0k"})[0] == 200
        assert seen[-1][1]["triton-access-token"] == "t0k" and seen[-1][2] == b"{}"
        status, text = ask("/v2/models/s3gen/infer", body(tensor(data=[1])))
        assert status == 503 and "3 requests are already waiting (--max-queue-size 3)" in text
        count = len(seen)
        assert ask("/v2/models/s3gen/infer", b"nope")[0] == 400 and len(seen) == count   # never forwarded
        front.unready = "the server is stopping (SIGTERM): no new requests"
        assert ask("/v2/models/s3gen/infer", body(tensor(data=[1]))) == (
            503, json.dumps({"error": "the server is stopping (SIGTERM): no new requests"}))
        assert len(seen) == count
    finally:
        front.shutdown()
        front.server_close()
        backend.shutdown()
        backend.server_close()

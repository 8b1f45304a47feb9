"""Checks of a KServe v2 HTTP inference body before tritonserver parses it (pure; front.py applies them).

Why: the HTTP front end of the tritonserver in nvidia-pytriton 0.7 answers several malformed bodies with
HTTP 500 (a body that is not JSON, JSON without an `inputs` list, `data` shorter or longer than the
declared shape, values of the wrong JSON type, a negative dimension), and a declared shape such as
[1, 10**12] makes it allocate first and abort on std::bad_alloc: one request killed the server. Each of
those is refused here with HTTP 400 naming the input and the limit; Triton checks the rest (names,
dtypes against the model, binary sizes) and answers 400 itself.
"""

from __future__ import annotations

import json
import math

BYTES_PER_VALUE = {"BOOL": 1, "INT8": 1, "UINT8": 1, "INT16": 2, "UINT16": 2, "FP16": 2, "BF16": 2, "INT32": 4,
                   "UINT32": 4, "FP32": 4, "INT64": 8, "UINT64": 8, "FP64": 8}
INT_RANGES = {name: ((-(2 ** (8 * size - 1)), 2 ** (8 * size - 1) - 1) if name[0] == "I" else (0, 2 ** (8 * size) - 1))
              for name, size in BYTES_PER_VALUE.items() if "INT" in name}
MAX_DIMS = 8


class WireError(ValueError):
    """A body refused before tritonserver sees it; .status is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _reject_constant(word: str):
    raise WireError(f"request body is not valid JSON: {word} is not a JSON number (send finite values)")


def parse_header(header: bytes) -> dict:
    """The JSON part of the body -> a dict with an `inputs` list; WireError otherwise."""
    try:
        doc = json.loads(header.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as e:
        raise WireError(f"request body is not UTF-8 JSON: {e.reason} at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise WireError(f"request body is not valid JSON: {e.msg} at character {e.pos}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise WireError("request JSON must be an object with a non-empty 'inputs' list (KServe v2 inference)")
    for key in ("outputs",):
        outputs = doc.get(key, [])
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                    for o in outputs):
            raise WireError("request 'outputs' must be a list of objects with a 'name' string")
    if not isinstance(doc.get("parameters", {}), dict):
        raise WireError("request 'parameters' must be an object")
    return doc


def _shape(tensor: dict, name: str) -> list[int]:
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**63 for d in shape)):
        raise WireError(f"input '{name}': 'shape' must be a list of at most {MAX_DIMS} non-negative integers, "
                        f"got {json.dumps(shape)[:80]}")
    return shape


def _flatten(data, out: list) -> list:
    for item in data:
        if isinstance(item, list):
            _flatten(item, out)
        else:
            out.append(item)
    return out


def _check_value(name: str, datatype: str, value) -> None:
    if datatype == "BYTES":
        ok = isinstance(value, str)
    elif datatype == "BOOL":
        ok = isinstance(value, bool)
    elif datatype in INT_RANGES:
        low, high = INT_RANGES[datatype]
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if not ok:
        raise WireError(f"input '{name}' ({datatype}): 'data' holds {json.dumps(value)[:40]}, "
                        f"which is not a {datatype} value")


def check_input(tensor, max_bytes: int) -> int:
    """One entry of `inputs`; returns the bytes it sends in the binary part (0 for JSON data)."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise WireError("every entry of 'inputs' must be an object with a 'name' string")
    name, datatype = tensor["name"], tensor.get("datatype")
    if datatype not in BYTES_PER_VALUE and datatype != "BYTES":
        raise WireError(f"input '{name}': unknown datatype {json.dumps(datatype)[:40]}")
    shape = _shape(tensor, name)
    count = math.prod(shape)
    per_value = BYTES_PER_VALUE.get(datatype, 1)      # BYTES: at least one byte each
    if count * per_value > max_bytes:
        raise WireError(f"input '{name}': shape {shape} of {datatype} is {count * per_value} bytes, over the "
                        f"request size limit of {max_bytes} bytes", status=413)
    params = tensor.get("parameters", {})
    if not isinstance(params, dict):
        raise WireError(f"input '{name}': 'parameters' must be an object")
    if "data" in tensor:
        data = tensor["data"]
        values = _flatten(data, []) if isinstance(data, list) else [data]
        if len(values) != count:
            raise WireError(f"input '{name}': 'data' holds {len(values)} value(s) but shape {shape} needs {count}")
        for value in values:
            _check_value(name, datatype, value)
        return 0
    size = params.get("binary_data_size")
    if size is None:
        return 0          # shared memory, or nothing: Triton answers those itself (400)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise WireError(f"input '{name}': binary_data_size must be a non-negative integer")
    if datatype != "BYTES" and size != count * per_value:
        raise WireError(f"input '{name}': {size} bytes of binary data, but shape {shape} of {datatype} "
                        f"needs {count * per_value}")
    return size


def check_body(body: bytes, header_length: int | None, max_bytes: int) -> None:
    """A whole inference body (JSON, or JSON header + binary tensors) -> None, or WireError."""
    if len(body) > max_bytes:
        raise WireError(f"request body is {len(body)} bytes, over the limit of {max_bytes}", status=413)
    if header_length is not None and not 0 < header_length <= len(body):
        raise WireError(f"Inference-Header-Content-Length {header_length} does not fit a body of {len(body)} bytes")
    doc = parse_header(body if header_length is None else body[:header_length])
    binary = sum(check_input(tensor, max_bytes) for tensor in doc["inputs"])
    sent = 0 if header_length is None else len(body) - header_length
    if binary != sent:
        raise WireError(f"the inputs declare {binary} bytes of binary data but the body carries {sent}")

"""Malformed and extreme requests for the hostile-input tests: raw KServe v2 HTTP bodies (what tritonclient
cannot send) and hypothesis strategies over the shapes, dtypes and values of every input.

A module of its own, not conftest: test modules import from it."""
from __future__ import annotations

import http.client
import json

import numpy as np
from hypothesis import strategies as st

from s3gen_runtime.constants import MEL_BINS, SAMPLE_RATE, SPEAKER_EMBED_DIM, SPEECH_VOCAB_SIZE, TOKEN_MEL_RATIO

SAMPLES_PER_TOKEN = SAMPLE_RATE // 25          # speech tokens are 25 Hz
HOP = SAMPLE_RATE // 50                        # samples per mel frame (50 Hz)
TRITON_DTYPES = {np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32",
                 np.dtype(np.float64): "FP64", np.dtype(np.bool_): "BOOL", np.dtype(object): "BYTES"}


def post(url: str, body: bytes, headers: dict | None = None, timeout_s: float = 120.0) -> tuple[int, str]:
    """POST a raw body to the s3gen model's infer endpoint: (HTTP status, response text)."""
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        conn.request("POST", "/v2/models/s3gen/infer", body=body,
                     headers=headers or {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def json_inputs(arrays: dict) -> list[dict]:
    """Named arrays -> the JSON form of KServe v2 inputs (data flattened, row-major)."""
    inputs = []
    for name, value in arrays.items():
        a = np.asarray(value)
        data = [x.decode() for x in a.reshape(-1)] if a.dtype == object else a.reshape(-1).tolist()
        inputs.append({"name": name, "shape": list(a.shape), "datatype": TRITON_DTYPES[a.dtype], "data": data})
    return inputs


def json_body(inputs: list[dict]) -> bytes:
    return json.dumps({"inputs": inputs, "outputs": [{"name": "sample_rate"}]}).encode()


def binary_body(arrays: dict, cut: dict | None = None) -> tuple[bytes, dict]:
    """Named arrays in the binary-tensor extension; cut={name: n} sends only n bytes of that tensor while
    declaring its full shape. Returns (body, headers)."""
    inputs, raw = [], b""
    for name, value in arrays.items():
        a = np.asarray(value)
        data = a.tobytes()[:(cut or {}).get(name)]
        inputs.append({"name": name, "shape": list(a.shape), "datatype": TRITON_DTYPES[a.dtype],
                       "parameters": {"binary_data_size": len(data)}})
        raw += data
    header = json.dumps({"inputs": inputs}).encode()
    return header + raw, {"Content-Type": "application/octet-stream",
                          "Inference-Header-Content-Length": str(len(header))}


def expected_samples(arrays: dict) -> int:
    """The wav length of an accepted request: the generated frames 2 (P + N) less the prompt's F frames
    (F is 2P or 2P + 1), HOP samples each."""
    prompt, new = arrays["prompt_token"].shape[1], arrays["speech_tokens"].shape[1]
    return (TOKEN_MEL_RATIO * (prompt + new) - arrays["prompt_feat"].shape[1]) * HOP


# ---------------------------------------------------------------- hypothesis strategies

INPUT_NAMES = ("speech_tokens", "prompt_token", "prompt_feat", "embedding", "seed", "steps", "cfg_rate", "solver")
ODD_FLOATS = st.sampled_from([np.nan, np.inf, -np.inf, 3e38, -1e30, 1e4, -1e4, 0.0])
ODD_SOLVERS = [b"", b"\xff\xfe", b"rk45", "\u00e9uler".encode(), b"euler\x00", b"meanflow"]


def _dtype(draw, spoil: bool, right, wrong):
    return draw(st.sampled_from(wrong)) if spoil and draw(st.booleans()) else right


@st.composite
def _tokens(draw, length: int, spoil: bool):
    high = SPEECH_VOCAB_SIZE + 2 if spoil else SPEECH_VOCAB_SIZE - 1
    values = draw(st.lists(st.integers(-2 if spoil else 0, high), min_size=length, max_size=length))
    return np.array(values, np.int64).reshape(1, length).astype(_dtype(draw, spoil, np.int64,
                                                                        [np.int32, np.float32, np.bool_]))


@st.composite
def _floats(draw, shape, spoil: bool, scale: float):
    values = np.full(shape, draw(st.floats(-scale, scale, width=32)), np.float32)
    if values.size:
        values.reshape(-1)[draw(st.integers(0, values.size - 1))] = draw(
            ODD_FLOATS if spoil else st.floats(-scale, scale, width=32))
    return values.astype(_dtype(draw, spoil, np.float32, [np.float64, np.int64]))


@st.composite
def requests(draw):
    """A request with up to two of its inputs spoiled: lengths (0, or past every bucket), shapes that
    disagree (prompt frames vs tokens, mel bins, embedding width, batch), wrong dtypes, ids outside the
    vocabulary, NaN/Inf and extreme finite values, odd solver strings. The rest are valid and kept cheap
    (at most 40 + 40 tokens, 1 or 2 steps), so an accepted request costs about a second."""
    spoiled = draw(st.sets(st.sampled_from(INPUT_NAMES), max_size=2))
    bad = {name: name in spoiled for name in INPUT_NAMES}
    lengths = st.sampled_from([0, 3000]) if bad["speech_tokens"] else st.integers(1, 40)
    new = draw(lengths)
    prompt = draw(st.sampled_from([0, 3000]) if bad["prompt_token"] else st.integers(1, 40))
    frames = 2 * prompt + draw(st.sampled_from([-1, 2, -2 * prompt] if bad["prompt_feat"] else [0, 1]))
    bins = draw(st.sampled_from([MEL_BINS, 79, 1])) if bad["prompt_feat"] else MEL_BINS
    width = draw(st.sampled_from([191, 0, 1000])) if bad["embedding"] else SPEAKER_EMBED_DIM
    arrays = {
        "speech_tokens": draw(_tokens(new, bad["speech_tokens"])),
        "prompt_token": draw(_tokens(prompt, False)),
        "prompt_feat": draw(_floats((1, max(frames, 0), bins), bad["prompt_feat"], 12.0)),
        "embedding": draw(_floats((1, width), bad["embedding"], 3.0)),
        "seed": np.array([[draw(st.integers(-5, 2**63 - 1) if bad["seed"] else st.integers(0, 2**63 - 1))]],
                         np.int64).astype(_dtype(draw, bad["seed"], np.int64, [np.float32, np.int32])),
    }
    arrays["steps"] = np.array([[draw(st.sampled_from([0, -1, 1001, 2**40]) if bad["steps"] else st.integers(1, 2))]],
                               np.int64).astype(_dtype(draw, bad["steps"], np.int64, [np.int32, np.float32]))
    if bad["cfg_rate"] or draw(st.booleans()):
        arrays["cfg_rate"] = draw(_floats((1, 1), bad["cfg_rate"], 1.0)) if bad["cfg_rate"] else \
            np.array([[draw(st.floats(0.0, 1.0, width=32))]], np.float32)
    if bad["solver"] or draw(st.booleans()):
        words = ODD_SOLVERS if bad["solver"] else [b"euler", b"midpoint"]
        arrays["solver"] = np.array([[draw(st.sampled_from(words))]], dtype=object)
    if draw(st.integers(0, 20)) == 0:     # now and then a batch of two where one utterance is allowed
        name = draw(st.sampled_from(INPUT_NAMES[:5]))
        arrays[name] = np.concatenate([arrays[name]] * 2)
    return arrays

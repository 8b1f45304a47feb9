"""The TensorRT backend: compatibility and freshness checks, engine selection, and the runners.

No GPU here: the runners are driven through a simulated CUDA runtime (`FakeCuda`: device
pointers are host memory, copies are memmove, CUDA graphs replay recorded launches) and a
simulated TensorRT (`make_fake_trt`: an "engine" is a header plus an ONNX graph that ONNX Runtime
executes on the bound device memory). They implement the calls the backend makes, so every check,
buffer, pool and graph-capture path runs for real. tests/export/test_engines.py reuses them.
Tests marked `gpu` run on a real GPU with TensorRT and skip cleanly elsewhere.
"""
from __future__ import annotations

import ctypes
import enum
import hashlib
import json
import subprocess
import sys
import threading
import time
import types
import warnings
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from s3gen_runtime import gpu
from s3gen_runtime.backends import tensorrt as trt_backend
from s3gen_runtime.backends.tensorrt import (
    BucketedTensorRTRunner,
    EngineMismatchWarning,
    TensorRTRunner,
    TensorRTUnavailableError,
    axis_sizes,
    bucket_frames,
    check_engine_compatible,
    check_engine_fresh,
    engines_for,
    open_tensorrt,
    parse_compute_capability,
    parse_version,
    select_engine,
    sm_tag,
)
from s3gen_runtime.errors import ArtifactError, BucketError, EngineMismatchError, InputError, S3GenError
from s3gen_runtime.manifest import Audio, Engine, Manifest, load_manifest, sha256_file, write_manifest

REPO = Path(__file__).resolve().parents[2]


# ================================================================ a simulated CUDA runtime

class _Err(enum.Enum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidValue = 1


class FakeCuda:
    """The subset of `cuda.bindings.runtime` the backend uses; device memory is host memory."""

    cudaError_t = _Err
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2, cudaMemcpyDeviceToDevice=3)
    cudaDeviceAttr = SimpleNamespace(cudaDevAttrComputeCapabilityMajor=75, cudaDevAttrComputeCapabilityMinor=76)
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)
    cudaStreamNonBlocking = 1

    def __init__(self, devices: int = 1, cc=(9, 0), name: str = "NVIDIA H100 80GB HBM3"):
        self.devices, self.cc, self.name = devices, cc, name
        self.mem: dict[int, object] = {}
        self.mallocs = 0
        self.frees = 0
        self.streams = 0
        self.capturing: dict[int, list] = {}
        self.instantiated = 0
        self.launches = 0
        self.lock = threading.Lock()
        self.fail_next: str | None = None

    def _ok(self, *values):
        return (_Err.cudaSuccess, *values)

    def _maybe_fail(self, what):
        if self.fail_next == what:
            self.fail_next = None
            return (_Err.cudaErrorMemoryAllocation,)
        return None

    def cudaGetErrorString(self, err):
        return self._ok(f"simulated {err.name}".encode())

    def cudaGetDeviceCount(self):
        if self.devices == 0:
            return (_Err.cudaErrorInsufficientDriver, None)
        return self._ok(self.devices)

    def cudaSetDevice(self, dev):
        return self._ok() if dev < self.devices else (_Err.cudaErrorInvalidValue,)

    def cudaDeviceGetAttribute(self, attr, dev):
        return self._ok(self.cc[0] if attr == 75 else self.cc[1])

    def cudaGetDeviceProperties(self, dev):
        return self._ok(SimpleNamespace(name=self.name.encode() + b"\0\0", major=self.cc[0], minor=self.cc[1]))

    def cudaMalloc(self, n):
        failed = self._maybe_fail("malloc")
        if failed:
            return (failed[0], None)
        buf = ctypes.create_string_buffer(int(n))
        with self.lock:
            self.mem[ctypes.addressof(buf)] = buf
            self.mallocs += 1
        return self._ok(ctypes.addressof(buf))

    def cudaFree(self, ptr):
        with self.lock:
            self.mem.pop(ptr)
            self.frees += 1
        return self._ok()

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        ctypes.memmove(dst, src, n)
        return self._ok()

    def cudaStreamCreateWithFlags(self, flags):
        with self.lock:
            self.streams += 1
            return self._ok(1000 + self.streams)

    def cudaStreamSynchronize(self, stream):
        return self._ok()

    def cudaDeviceSynchronize(self):
        return self._ok()

    def cudaStreamDestroy(self, stream):
        return self._ok()

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing[int(stream)] = []
        return self._ok()

    def cudaStreamEndCapture(self, stream):
        return self._ok(self.capturing.pop(int(stream)))

    def cudaGraphInstantiate(self, graph, flags):
        self.instantiated += 1
        return self._ok(list(graph))

    def cudaGraphLaunch(self, exec_, stream):
        self.launches += 1
        for fn in exec_:
            fn()
        return self._ok()

    def cudaGraphExecDestroy(self, exec_):
        return self._ok()

    def cudaGraphDestroy(self, graph):
        return self._ok()

    def read(self, ptr, shape, dtype) -> np.ndarray:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raw = (ctypes.c_char * n).from_address(ptr)
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()

    def write(self, ptr, array: np.ndarray) -> None:
        a = np.ascontiguousarray(array)
        ctypes.memmove(ptr, a.ctypes.data, a.nbytes)


# ================================================================ a simulated TensorRT

_MAGIC = b"FAKETRT1"
_ELEM_NP = {TensorProto.FLOAT: "float32", TensorProto.INT64: "int64", TensorProto.INT32: "int32",
            TensorProto.FLOAT16: "float16", TensorProto.BOOL: "bool"}


def fake_engine_bytes(model_bytes: bytes, profiles: dict, extra: dict | None = None) -> bytes:
    """A serialized fake engine: header (I/O, profile, build flags) + the ONNX graph it runs."""
    model = onnx.load_from_string(model_bytes)
    g = model.graph

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    header = {
        "inputs": {i.name: {"dtype": _ELEM_NP[i.type.tensor_type.elem_type], "dims": dims(i),
                            "profile": [list(map(int, s)) for s in profiles[i.name]]} for i in g.input},
        "outputs": {o.name: {"dtype": _ELEM_NP[o.type.tensor_type.elem_type], "dims": dims(o)} for o in g.output},
        **(extra or {}),
    }
    blob = json.dumps(header).encode()
    return _MAGIC + len(blob).to_bytes(8, "little") + blob + model_bytes


def _eval_dim(expr, symbols: dict) -> int:
    if isinstance(expr, int):
        return expr
    return int(eval(compile(expr, "<dim>", "eval"), {"__builtins__": {}}, dict(symbols)))


class FakeEngine:
    def __init__(self, trt, data: bytes):
        n = int.from_bytes(data[8:16], "little")
        self.trt = trt
        self.header = json.loads(data[16:16 + n])
        self.model_bytes = data[16 + n:]
        self.names = list(self.header["inputs"]) + list(self.header["outputs"])
        self._session = None
        self._lock = threading.Lock()

    @property
    def num_io_tensors(self):
        return len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode.INPUT if name in self.header["inputs"] else self.trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        spec = self.header["inputs"].get(name) or self.header["outputs"][name]
        return spec["dtype"]

    def get_tensor_profile_shape(self, name, index):
        assert index == 0
        return [tuple(s) for s in self.header["inputs"][name]["profile"]]

    def create_execution_context(self):
        return FakeContext(self)

    def session(self):
        with self._lock:
            if self._session is None:
                self._session = _ort_session(self.model_bytes)
            return self._session


_SESSIONS: OrderedDict = OrderedDict()
_SESSIONS_LOCK = threading.Lock()


def _ort_session(model_bytes: bytes):
    """One ONNX Runtime session per distinct graph (engines of several buckets share it); the
    four most recent are kept (the graphs are large)."""
    key = hashlib.sha256(model_bytes).digest()
    with _SESSIONS_LOCK:
        if key not in _SESSIONS:
            import onnxruntime as ort
            options = ort.SessionOptions()
            options.log_severity_level = 3
            _SESSIONS[key] = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
            while len(_SESSIONS) > 4:
                _SESSIONS.popitem(last=False)
        _SESSIONS.move_to_end(key)
        return _SESSIONS[key]


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}
        self.trt = engine.trt

    def set_input_shape(self, name, shape):
        lo, _, hi = self.engine.header["inputs"][name]["profile"]
        if len(shape) != len(lo) or any(not a <= s <= b for s, a, b in zip(shape, lo, hi)):
            return False
        self.shapes[name] = tuple(int(s) for s in shape)
        return True

    def _symbols(self):
        symbols = {}
        for name, spec in self.engine.header["inputs"].items():
            for d, s in zip(spec["dims"], self.shapes.get(name, ())):
                if isinstance(d, str) and d.isidentifier():
                    symbols[d] = s
        return symbols

    def get_tensor_shape(self, name):
        if name in self.shapes:
            return self.shapes[name]
        symbols = self._symbols()
        return tuple(_eval_dim(d, symbols) for d in self.engine.header["outputs"][name]["dims"])

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream):
        cuda = self.trt.cuda
        shapes, addresses = dict(self.shapes), dict(self.addresses)
        out_shapes = {n: self.get_tensor_shape(n) for n in self.engine.header["outputs"]}
        missing = [n for n in self.engine.names if n not in addresses]
        if missing:
            return False

        def run():
            feeds = {n: cuda.read(addresses[n], shapes[n], spec["dtype"])
                     for n, spec in self.engine.header["inputs"].items()}
            with self.trt.stats_lock:
                self.trt.active += 1
                self.trt.max_active = max(self.trt.max_active, self.trt.active)
                self.trt.executions += 1
            try:
                time.sleep(self.trt.delay)
                names = list(self.engine.header["outputs"])
                values = self.engine.session().run(names, feeds)
            finally:
                with self.trt.stats_lock:
                    self.trt.active -= 1
            noise = self.engine.header.get("perturb", 0.0)
            for n, v in zip(names, values):
                v = np.asarray(v)
                if noise and v.dtype.kind == "f":
                    v = v + noise * float(np.std(v) or 1.0) * np.random.default_rng(0).standard_normal(v.shape)
                    v = v.astype(np.float32)
                assert v.shape == tuple(out_shapes[n]), (n, v.shape, out_shapes[n])
                cuda.write(addresses[n], v.astype(self.engine.header["outputs"][n]["dtype"]))

        if int(stream) in cuda.capturing:
            cuda.capturing[int(stream)].append(run)
        else:
            run()
        return True


class _FakeLayer:
    def __init__(self, trt, name, metadata, ltype, out_dtypes):
        self.trt, self.name, self.metadata, self.type = trt, name, metadata, ltype
        self._outs = [SimpleNamespace(dtype=d) for d in out_dtypes]
        self.precision = None
        self.output_types = {}

    @property
    def num_outputs(self):
        return len(self._outs)

    def get_output(self, j):
        return self._outs[j]

    def set_output_type(self, j, dtype):
        self.output_types[j] = dtype


class FakeNetwork:
    def __init__(self, trt, flags):
        self.trt, self.flags, self.layers, self.model_bytes = trt, flags, [], None

    @property
    def num_layers(self):
        return len(self.layers)

    def get_layer(self, i):
        return self.layers[i]


class FakeParser:
    def __init__(self, network, logger):
        self.network = network
        self.num_errors = 0

    def parse(self, data):
        trt = self.network.trt
        model = onnx.load_from_string(data)
        types_ = {v.name: v.type.tensor_type.elem_type for v in
                  list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
        for node in model.graph.node:
            ltype = trt.LayerType.CONSTANT if node.op_type == "Constant" else trt.LayerType.ELEMENTWISE
            # float64 becomes float32: TensorRT has no double precision
            outs = [trt.float32 if types_.get(o, TensorProto.FLOAT) in (1, 10, 11, 16) else trt.int32
                    for o in node.output]
            metadata = f"[ONNX Layer: {node.name}]" if trt.layer_metadata else ""
            self.network.layers.append(_FakeLayer(trt, node.name, metadata, ltype, outs))
            if not trt.layer_metadata:   # helper layers the parser adds for one node
                self.network.layers.append(_FakeLayer(trt, f"{node.name}_helper", "", ltype, outs))
        self.network.model_bytes = bytes(data)
        return True


class FakeProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi):
        self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class FakeTimingCache:
    def __init__(self, data: bytes):
        self.data = bytes(data)

    def serialize(self):
        return self.data


class FakeConfig:
    def __init__(self, trt):
        self.trt, self.flags, self.profiles, self.cache, self.pools = trt, set(), [], None, {}
        self.flags.add("TF32")   # TensorRT's default

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = size

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data):
        if data and not bytes(data).startswith(b"cache"):
            return None
        return FakeTimingCache(data or b"cache")

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


class FakeBuilder:
    def __init__(self, trt, logger):
        self.trt = trt

    def create_network(self, flags):
        return FakeNetwork(self.trt, flags)

    def create_builder_config(self):
        return FakeConfig(self.trt)

    def create_optimization_profile(self):
        return FakeProfile()

    def build_serialized_network(self, network, config):
        trt = self.trt
        if len(config.profiles) != 1:
            return None
        if config.cache is not None:
            config.cache.data += b"+"
        trt.builds.append({"flags": set(config.flags), "network_flags": network.flags,
                           "pinned": [l.name for l in network.layers if l.precision is not None],
                           "profile": config.profiles[0].shapes})
        if trt.garbage:
            return b"not an engine"
        return fake_engine_bytes(network.model_bytes, config.profiles[0].shapes, {"perturb": trt.perturb})


def make_fake_trt(cuda: FakeCuda, version: str = "10.3.0", weak_typing: bool = True, layer_metadata: bool = True):
    """A stand-in `tensorrt` module (TensorRT 10 with weak typing, or 11-like without)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.cuda = cuda
    trt.layer_metadata = layer_metadata
    trt.stats_lock = threading.Lock()
    trt.active = trt.max_active = trt.executions = 0
    trt.delay = 0.0
    trt.perturb = 0.0
    trt.garbage = False
    trt.builds = []
    trt.deserialized = 0

    class Logger:
        WARNING = 2

        def __init__(self, level=2):
            self.level = level

    trt.Logger = Logger
    trt.TensorIOMode = SimpleNamespace(INPUT="input", OUTPUT="output")
    trt.nptype = lambda dtype: np.dtype(dtype).type
    trt.float32, trt.float16, trt.bfloat16, trt.int32 = "float32", "float16", "bfloat16", "int32"
    trt.LayerType = SimpleNamespace(CONSTANT="CONSTANT", ELEMENTWISE="ELEMENTWISE", SHAPE="SHAPE", CAST="CAST")
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=5)
    flags = {"TF32": "TF32"}
    if weak_typing:
        flags.update(FP16="FP16", BF16="BF16", OBEY_PRECISION_CONSTRAINTS="OBEY_PRECISION_CONSTRAINTS")
    trt.BuilderFlag = SimpleNamespace(**flags)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            trt.deserialized += 1
            if not bytes(data[:8]) == _MAGIC:
                return None
            return FakeEngine(trt, bytes(data))

    trt.Runtime = Runtime
    trt.Builder = lambda logger: FakeBuilder(trt, logger)
    trt.OnnxParser = FakeParser
    return trt


@pytest.fixture
def fake_gpu(monkeypatch):
    """A simulated H100 with TensorRT 10.3: (cuda, trt)."""
    cuda = FakeCuda()
    trt = make_fake_trt(cuda)
    gpu._reset_for_tests(cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_backend, "_LOGGER", None)
    yield cuda, trt
    gpu._reset_for_tests(None)


# ================================================================ a tiny artifact folder with engines

def _vi(name, elem, dims):
    return helper.make_tensor_value_info(name, elem, dims)


def tiny_estimator_onnx() -> bytes:
    """velocity = 2 x + mu * mask + t (estimator-shaped I/O: x, mask, mu, t -> velocity)."""
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["x2"], name="node_mul_x"),
        helper.make_node("Mul", ["mu", "mask"], ["mm"], name="node_mul_mu"),
        helper.make_node("Add", ["x2", "mm"], ["s"], name="node_add_1"),
        helper.make_node("Unsqueeze", ["t", "axes"], ["t3"], name="node_unsqueeze_t"),
        helper.make_node("Add", ["s", "t3"], ["velocity"], name="node_add_t"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [_vi("x", TensorProto.FLOAT, ["batch", 80, "frames"]), _vi("mask", TensorProto.FLOAT, ["batch", 1, "frames"]),
         _vi("mu", TensorProto.FLOAT, ["batch", 80, "frames"]), _vi("t", TensorProto.FLOAT, ["batch"])],
        [_vi("velocity", TensorProto.FLOAT, ["batch", 80, "frames"])],
        initializer=[helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
                     helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def expected_velocity(feeds):
    return 2 * feeds["x"] + feeds["mu"] * feeds["mask"] + feeds["t"][:, None, None]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


BUCKETS = (("mel256", 256), ("mel512", 512), ("mel1024", 1024))


def engine_profile(prev, top, min_batch=1, max_batch=2):
    lo = prev + 1
    return {"x": ((min_batch, 80, lo), (1, 80, top), (max_batch, 80, top)),
            "mask": ((min_batch, 1, lo), (1, 1, top), (max_batch, 1, top)),
            "mu": ((min_batch, 80, lo), (1, 80, top), (max_batch, 80, top)),
            "t": ((min_batch,), (1,), (max_batch,))}


def engine_record(file, data, bucket, prev, top, onnx_sha, *, precision="fp16", trt="10.3.0", cc="9.0",
                  gpu_name="NVIDIA H100 80GB HBM3", min_batch=1, max_batch=2) -> dict:
    profile = engine_profile(prev, top, min_batch, max_batch)
    return {"file": file, "sha256": _sha(data), "graph": "estimator", "bucket": bucket, "precision": precision,
            "tensorrt": trt, "gpu": gpu_name, "compute_capability": cc, "min_batch": min_batch,
            "max_batch": max_batch,
            "build_options": {"onnx_sha256": onnx_sha, "frames_range": [prev + 1, top],
                              "profile": {n: {"min": list(a), "opt": list(b), "max": list(c)}
                                          for n, (a, b, c) in profile.items()}},
            "validation": None}


def write_tiny_artifacts(folder: Path, buckets=BUCKETS, precision="fp16", **record_options) -> Manifest:
    """An artifact folder with one tiny 'estimator' graph and one fake engine per bucket."""
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_estimator_onnx()
    (folder / "estimator.onnx").write_bytes(model)
    engines, prev = [], 0
    for name, top in buckets:
        data = fake_engine_bytes(model, engine_profile(prev, top, record_options.get("min_batch", 1),
                                                       record_options.get("max_batch", 2)))
        rel = f"engines/estimator.{name}.{precision}.sm90.engine"
        (folder / rel).parent.mkdir(exist_ok=True)
        (folder / rel).write_bytes(data)
        engines.append(engine_record(rel, data, name, prev, top, _sha(model), precision=precision, **record_options))
        prev = top
    spec = lambda name, shape: {"name": name, "dtype": "float32", "shape": shape}  # noqa: E731
    manifest = Manifest.from_dict({
        "schema_version": 1,
        "tool": {"name": "s3gen-aot", "version": "0.1.0"},
        "versions": {"python": "3.11", "torch": None, "onnx": None, "onnxruntime": None, "tensorrt": "10.3.0"},
        "checkpoint": {"file": "s3gen.safetensors", "sha256": _sha(b"ckpt"), "variant": "standard"},
        "audio": Audio.current().to_dict(),
        "defaults": {"solver": "euler", "steps": 10, "cfg_rate": 0.7},
        "buckets": [{"name": n, "mel_frames": f} for n, f in BUCKETS],
        "components": {"estimator": {
            "file": "estimator.onnx", "sha256": _sha(model), "format": "onnx", "precision": "fp32", "opset": 18,
            "spec_hash": "tiny",
            "inputs": [spec("x", ["batch", 80, "frames"]), spec("mask", ["batch", 1, "frames"]),
                       spec("mu", ["batch", 80, "frames"]), spec("t", ["batch"])],
            "outputs": [spec("velocity", ["batch", 80, "frames"])],
            "validation": {"passed": True, "cases": [],
                           "tolerance": {"velocity": {"atol": 1e-3, "rtol": 1e-3, "min_snr_db": None}}}}},
        "engines": engines,
        "tuning": None,
    })
    write_manifest(folder, manifest)
    return load_manifest(folder)


def feeds_for(frames: int, batch: int = 1, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, 1, frames), np.float32)
    mask[1:, :, frames // 2:] = 0.0
    return {"x": rng.standard_normal((batch, 80, frames)).astype(np.float32), "mask": mask,
            "mu": rng.standard_normal((batch, 80, frames)).astype(np.float32),
            "t": rng.uniform(0, 1, batch).astype(np.float32)}


@pytest.fixture
def tiny(tmp_path, fake_gpu):
    manifest = write_tiny_artifacts(tmp_path / "art")
    return tmp_path / "art", manifest


def record(manifest: Manifest, bucket: str) -> Engine:
    return next(e for e in manifest.engines if e.bucket == bucket)


# ================================================================ compatibility (pure)

def test_parse_version_and_compute_capability():
    assert parse_version("10.3.0") == (10, 3, 0)
    assert parse_version("10.3.0.26") == (10, 3, 0)
    assert parse_version("v11.4") == (11, 4)
    for value, want in (("9.0", (9, 0)), ("sm90", (9, 0)), ("sm_86", (8, 6)), ("80", (8, 0)), ((12, 0), (12, 0)),
                        ("sm100", (10, 0)), ("12.1", (12, 1))):
        assert parse_compute_capability(value) == want
    assert sm_tag("9.0") == "sm90" and sm_tag("10.0") == "sm100"
    with pytest.raises(ArtifactError):
        parse_compute_capability("hopper")
    with pytest.raises(ArtifactError):
        parse_version("")


def _engine(**changes) -> Engine:
    base = engine_record("engines/estimator.mel256.fp16.sm90.engine", b"x", "mel256", 0, 256, "0" * 64)
    base.update(changes)
    return Engine.from_dict(base, "engine")


def test_foreign_gpu_engine_is_refused_with_the_rebuild_command():
    foreign = _engine(compute_capability="8.0", tensorrt="10.0.1", gpu="NVIDIA A100-SXM4-80GB")
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10\.0\.1.*10\.3\.0") as e:
        check_engine_compatible(foreign, "10.3.0", "9.0", "NVIDIA H100 80GB HBM3", folder="/art")
    assert "rebuild for this GPU: s3gen-aot build-engines /art --precision fp16" in str(e.value)
    same_trt = _engine(compute_capability="8.0", gpu="NVIDIA A100-SXM4-80GB")
    with pytest.raises(EngineMismatchError, match=r"compute capability 8\.0.*9\.0") as e:
        check_engine_compatible(same_trt, "10.3.0", "9.0", "NVIDIA H100 80GB HBM3")
    assert "rebuild for this GPU: s3gen-aot build-engines DIR --precision fp16" in str(e.value)
    assert isinstance(e.value, ArtifactError) and isinstance(e.value, S3GenError)


def test_same_gpu_engine_is_accepted_and_another_name_only_warns():
    engine = _engine()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_engine_compatible(engine, "10.3.0", "9.0", "NVIDIA H100 80GB HBM3")
        check_engine_compatible(engine, "10.3.0.26", "sm90", "NVIDIA H100 80GB HBM3")   # build number only
    with pytest.warns(EngineMismatchWarning, match="NVIDIA H100 NVL"):
        check_engine_compatible(engine, "10.3.0", "9.0", "NVIDIA H100 NVL")
    with pytest.raises(EngineMismatchError):
        check_engine_compatible(engine, "10.4.0", "9.0", "NVIDIA H100 80GB HBM3")


def test_stale_engine_is_refused():
    engine = _engine(build_options={"onnx_sha256": "a" * 64})
    component = SimpleNamespace(sha256="b" * 64)
    with pytest.raises(EngineMismatchError, match="stale"):
        check_engine_fresh(engine, component)
    check_engine_fresh(engine, SimpleNamespace(sha256="a" * 64))
    with pytest.raises(ArtifactError, match="onnx_sha256"):
        check_engine_fresh(_engine(build_options={}), component)


# ================================================================ engine selection (pure)

def test_select_engine_picks_the_smallest_bucket_that_fits(tmp_path, fake_gpu):
    manifest = write_tiny_artifacts(tmp_path / "a")
    for frames, bucket in ((1, "mel256"), (256, "mel256"), (257, "mel512"), (512, "mel512"), (513, "mel1024"),
                           (1024, "mel1024")):
        assert select_engine(manifest, "estimator", frames, 1, "fp16").bucket == bucket
    assert select_engine(manifest, "estimator", 300, 2, "fp16", compute_capability="9.0").bucket == "mel512"
    with pytest.raises(BucketError, match="1025.*mel1024"):
        select_engine(manifest, "estimator", 1025, 1, "fp16")
    with pytest.raises(InputError, match="batch of 3.*1..2"):
        select_engine(manifest, "estimator", 100, 3, "fp16")
    with pytest.raises(ArtifactError, match="no fp32 TensorRT engine.*build-engines DIR --precision fp32"):
        select_engine(manifest, "estimator", 100, 1, "fp32")
    with pytest.raises(ArtifactError, match="compute capability 8.0"):
        select_engine(manifest, "estimator", 100, 1, "fp16", compute_capability="8.0")
    with pytest.raises(InputError):
        select_engine(manifest, "estimator", 0, 1, "fp16")
    with pytest.raises(InputError):
        select_engine(manifest, "estimator", 10, 1, "int8")
    assert [e.bucket for e in engines_for(manifest, "estimator", "fp16")] == ["mel256", "mel512", "mel1024"]


def test_select_engine_refuses_a_gap_between_engines(tmp_path, fake_gpu):
    manifest = write_tiny_artifacts(tmp_path / "a")
    data = manifest.to_dict()
    data["engines"] = [e for e in data["engines"] if e["bucket"] != "mel512"]   # mel1024 still starts at 513
    gapped = Manifest.from_dict(data)
    with pytest.raises(ArtifactError, match="513..1024"):
        select_engine(gapped, "estimator", 300, 1, "fp16")
    assert select_engine(gapped, "estimator", 600, 1, "fp16").bucket == "mel1024"


def test_bucket_frames_per_graph():
    assert bucket_frames({"batch": 2, "frames": 700}) == 700
    assert bucket_frames({"batch": 1, "mel_frames": 300, "samples": 144000}) == 300
    assert bucket_frames({"batch": 1, "tokens": 200, "prompt_tokens": 150, "prompt_frames": 300}) == 700
    with pytest.raises(InputError):
        bucket_frames({"batch": 1})
    component = SimpleNamespace(inputs=[SimpleNamespace(name="x", shape=("batch", 80, "frames")),
                                        SimpleNamespace(name="t", shape=("batch",))])
    assert axis_sizes(component, {"x": (2, 80, 33), "t": (2,)}) == {"batch": 2, "frames": 33}


# ================================================================ the manifest round trip

def test_engine_records_round_trip_through_the_strict_parser(tmp_path, fake_gpu):
    folder = tmp_path / "a"
    manifest = write_tiny_artifacts(folder)
    again = load_manifest(folder, verify=True)
    assert again.engines == manifest.engines
    assert again.engines[0].build_options["frames_range"] == [1, 256]
    text = (folder / "manifest.json").read_text()
    data = json.loads(text)
    data["engines"][0]["surprise"] = 1
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="unknown key engines\\[0\\].surprise"):
        load_manifest(folder)


# ================================================================ the single-engine runner

def test_runner_runs_the_engine_and_reuses_buffers(tiny, fake_gpu):
    folder, manifest = tiny
    cuda, trt = fake_gpu
    runner = TensorRTRunner(folder, record(manifest, "mel512"), manifest.component("estimator"), pool_size=1)
    assert runner.profile["x"] == ((1, 80, 257), (1, 80, 512), (2, 80, 512))
    feeds = feeds_for(300, batch=2)
    out = runner.run(feeds)
    np.testing.assert_allclose(out["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    mallocs = cuda.mallocs
    for frames in (300, 280, 300):   # same or smaller shapes: no new device memory
        feeds = feeds_for(frames, batch=2, seed=frames)
        np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    assert cuda.mallocs == mallocs
    feeds = feeds_for(500, batch=2)
    np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    assert cuda.mallocs > mallocs   # grew once for the longer shape
    runner.close()
    assert cuda.mem == {}   # every buffer freed


def test_runner_refuses_shapes_outside_the_bucket_profile(tiny):
    folder, manifest = tiny
    runner = TensorRTRunner(folder, record(manifest, "mel512"), manifest.component("estimator"))
    with pytest.raises(InputError, match=r"bucket mel512.*axis 'frames' is 600 but this engine takes 257..512"):
        runner.run(feeds_for(600))
    with pytest.raises(InputError, match=r"axis 'frames' is 100 but this engine takes 257..512"):
        runner.run(feeds_for(100))
    with pytest.raises(InputError, match=r"axis 'batch' is 3 but this engine takes 1..2"):
        runner.run(feeds_for(300, batch=3))
    with pytest.raises(InputError, match="must be float32"):
        runner.run({**feeds_for(300), "x": feeds_for(300)["x"].astype(np.float64)})


def test_tampered_engine_is_refused_before_deserialising(tiny, fake_gpu):
    folder, manifest = tiny
    _, trt = fake_gpu
    engine = record(manifest, "mel256")
    path = folder / engine.file
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with pytest.raises(ArtifactError, match="tampered or corrupt"):
        TensorRTRunner(folder, engine, manifest.component("estimator"))
    with pytest.raises(ArtifactError, match="tampered or corrupt"):
        load_manifest(folder)   # the manifest loader refuses it too
    path.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        TensorRTRunner(folder, engine, manifest.component("estimator"))
    assert trt.deserialized == 0


def test_foreign_engine_is_refused_before_deserialising(tmp_path, fake_gpu):
    _, trt = fake_gpu
    manifest = write_tiny_artifacts(tmp_path / "a", cc="8.0", trt="10.0.1", gpu_name="NVIDIA A100-SXM4-80GB")
    with pytest.raises(EngineMismatchError, match="rebuild for this GPU: s3gen-aot build-engines .* --precision fp16"):
        TensorRTRunner(tmp_path / "a", record(manifest, "mel256"), manifest.component("estimator"))
    assert trt.deserialized == 0
    with pytest.raises(ArtifactError, match="compute capability 9.0"):   # none for this GPU to choose from
        open_tensorrt(tmp_path / "a", manifest, "estimator", engine_precision="fp16")


def test_stale_engine_is_refused_by_the_runner(tiny, fake_gpu):
    folder, manifest = tiny
    data = manifest.to_dict()
    data["components"]["estimator"]["sha256"] = "c" * 64   # as if re-exported after the build
    with pytest.raises(EngineMismatchError, match="stale"):
        TensorRTRunner(folder, record(manifest, "mel256"), Manifest.from_dict(data).component("estimator"))


def test_runner_pool_serves_concurrent_callers(tiny, fake_gpu):
    folder, manifest = tiny
    cuda, trt = fake_gpu
    trt.delay = 0.01
    runner = TensorRTRunner(folder, record(manifest, "mel512"), manifest.component("estimator"), pool_size=2)
    errors, results = [], {}

    def worker(k):
        try:
            for j in range(4):
                feeds = feeds_for(260 + 10 * k + j, batch=1 + (k % 2), seed=k * 10 + j)
                out = runner.run(feeds)["velocity"]
                results[(k, j)] = np.max(np.abs(out - expected_velocity(feeds)))
        except Exception as e:   # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 24 and max(results.values()) < 1e-5
    assert trt.max_active == 2   # two contexts ran at once, never more
    assert cuda.streams == 2
    runner.close()


def test_cuda_graph_capture_and_replay(tiny, fake_gpu):
    folder, manifest = tiny
    cuda, trt = fake_gpu
    runner = TensorRTRunner(folder, record(manifest, "mel256"), manifest.component("estimator"), pool_size=1,
                            cuda_graph=True)
    for k in range(4):   # run, capture, replay, replay
        feeds = feeds_for(256, batch=2, seed=k)
        np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    assert cuda.instantiated == 1 and cuda.launches == 3 and trt.executions == 4
    feeds = feeds_for(200, batch=2)   # another shape: runs plainly and drops the graph
    np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    assert cuda.instantiated == 1 and cuda.launches == 3
    for k in range(3):   # back to 256: run, capture anew, replay
        feeds = feeds_for(256, batch=2, seed=10 + k)
        np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    assert cuda.instantiated == 2 and cuda.launches == 5 and trt.executions == 8
    runner.close()


def test_run_device_keeps_tensors_on_the_gpu(tiny, fake_gpu):
    folder, manifest = tiny
    runner = TensorRTRunner(folder, record(manifest, "mel512"), manifest.component("estimator"))
    feeds = feeds_for(300, batch=2)
    conditioning = {n: gpu.DeviceArray.from_host(feeds[n]) for n in ("mask", "mu")}   # uploaded once
    out_buffer = gpu.DeviceArray.empty((2, 80, 512), np.float32)
    for step in range(3):
        x = (feeds["x"] + step).astype(np.float32)
        t = np.full(2, 0.1 * step, np.float32)
        result = runner.run_device({"x": x, "t": t, **conditioning}, {"velocity": out_buffer})
        v = result["velocity"]
        assert v.shape == (2, 80, 300) and v.ptr == out_buffer.ptr
        np.testing.assert_allclose(v.to_host(), expected_velocity({**feeds, "x": x, "t": t}), rtol=1e-6, atol=1e-6)
    allocated = runner.run_device({"x": feeds["x"], "t": feeds["t"], **conditioning}, ["velocity"])["velocity"]
    np.testing.assert_allclose(allocated.to_host(), expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    allocated.close()
    np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    with pytest.raises(InputError, match="does not fit|must be a float32"):
        small = gpu.DeviceArray.empty((1, 80, 10), np.float32)
        runner.run_device({"x": feeds["x"], "t": feeds["t"], **conditioning}, {"velocity": small})
    with pytest.raises(InputError, match="feeds must be exactly"):
        runner.run_device({"x": feeds["x"]})
    runner.close()


# ================================================================ every bucket of one graph

def test_bucketed_runner_routes_each_call_to_its_bucket(tiny, fake_gpu):
    folder, manifest = tiny
    _, trt = fake_gpu
    runner = open_tensorrt(folder, manifest, "estimator")
    assert isinstance(runner, BucketedTensorRTRunner) and runner.engine_precision == "fp16"
    assert trt.deserialized == 0   # lazily, on first use
    for frames in (100, 256, 257, 700, 1024):
        feeds = feeds_for(frames, batch=2, seed=frames)
        np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    assert trt.deserialized == 3
    with pytest.raises(BucketError, match="1100"):
        runner.run(feeds_for(1100))
    with pytest.raises(InputError, match="batch of 3"):
        runner.run(feeds_for(100, batch=3))
    runner.close()
    with pytest.raises(InputError, match="engine precision"):
        open_tensorrt(folder, manifest, "estimator", engine_precision="int8")


# ================================================================ missing pieces

def test_missing_tensorrt_gives_the_install_command(tiny, monkeypatch):
    folder, manifest = tiny
    monkeypatch.setitem(sys.modules, "tensorrt", None)   # import tensorrt -> ImportError
    with pytest.raises(TensorRTUnavailableError, match=r"TensorRT is not installed: pip install 's3gen-aot\[tensorrt\]'"):
        TensorRTRunner(folder, record(manifest, "mel256"), manifest.component("estimator"))
    with pytest.raises(S3GenError, match="TensorRT is not installed"):
        open_tensorrt(folder, manifest, "estimator")


def test_no_gpu_is_a_clear_error(tiny, fake_gpu):
    folder, manifest = tiny
    cuda, _ = fake_gpu
    cuda.devices = 0
    assert gpu.device_count() == 0
    with pytest.raises(gpu.NoGpuError, match="no CUDA GPU"):
        TensorRTRunner(folder, record(manifest, "mel256"), manifest.component("estimator"))


def test_missing_cuda_python_gives_the_install_command(monkeypatch):
    gpu._reset_for_tests(None)
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(gpu.CudaError, match="s3gen-aot\\[tensorrt\\]"):
        gpu.device_count()
    gpu._reset_for_tests(None)


def test_gpu_helpers_on_the_simulated_runtime(fake_gpu):
    cuda, _ = fake_gpu
    assert gpu.device_count() == 1 and gpu.require_device(0) == 0
    assert gpu.compute_capability(0) == "9.0"
    assert gpu.device_name(0) == "NVIDIA H100 80GB HBM3"
    with pytest.raises(gpu.NoGpuError, match="device 3"):
        gpu.require_device(3)
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    d = gpu.DeviceArray.from_host(a, gpu.Stream())
    np.testing.assert_array_equal(d.to_host(), a)
    v = d.view((2, 3, 2))
    assert v.ptr == d.ptr and v.shape == (2, 3, 2)
    with pytest.raises(gpu.CudaError, match="does not fit"):
        d.view((3, 3, 4))
    cuda.fail_next = "malloc"
    with pytest.raises(gpu.CudaError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
        gpu.DeviceBuffer(16)
    d.close()
    assert cuda.mem == {}


def test_runtime_backend_imports_neither_torch_nor_tensorrt():
    code = ("import sys; import s3gen_runtime.backends.tensorrt, s3gen_runtime.backends.onnxruntime_cuda, "
            "s3gen_runtime.gpu; "
            "bad = [m for m in ('torch', 'tensorrt', 'cuda', 'onnxruntime') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


# ================================================================ ONNX Runtime on CUDA (IO binding)

def test_onnxruntime_cuda_runner_io_binding_on_cpu(tmp_path):
    """The IO-binding code path, exercised on the CPU provider (the same calls as on CUDA)."""
    import onnxruntime as ort
    from s3gen_runtime.backends.onnxruntime_cuda import OnnxRuntimeCudaRunner
    manifest = write_tiny_artifacts(tmp_path / "a")
    component = manifest.component("estimator")
    runner = OnnxRuntimeCudaRunner(tmp_path / "a" / "estimator.onnx", component, device_type="cpu",
                                   expected_metadata={})
    feeds = feeds_for(40, batch=2)
    np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    on_device = {n: runner.to_device(feeds[n]) for n in ("mask", "mu")}
    out = runner.run_device({"x": feeds["x"], "t": feeds["t"], **on_device})
    assert isinstance(out["velocity"], ort.OrtValue)
    np.testing.assert_allclose(out["velocity"].numpy(), expected_velocity(feeds), rtol=1e-6, atol=1e-6)
    with pytest.raises(InputError, match="must be float32"):
        runner.run_device({**feeds, "x": runner.to_device(feeds["x"].astype(np.float64))})


def test_onnxruntime_cuda_backend_needs_the_cuda_provider(tmp_path):
    import onnxruntime as ort
    from s3gen_runtime.backends.onnxruntime_cuda import open_onnxruntime_cuda
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    manifest = write_tiny_artifacts(tmp_path / "a")
    with pytest.raises(ArtifactError, match=r"onnxruntime-gpu"):
        open_onnxruntime_cuda(tmp_path / "a", manifest, "estimator")
    with pytest.raises(InputError, match="unknown onnxruntime-cuda backend option"):
        open_onnxruntime_cuda(tmp_path / "a", manifest, "estimator", providers=["x"])


# ================================================================ real GPU (skipped without one)

def _real_gpu_or_skip():
    trt = pytest.importorskip("tensorrt")
    gpu._reset_for_tests(None)
    try:
        if gpu.device_count() == 0:
            pytest.skip("no CUDA GPU")
    except gpu.CudaError as e:
        pytest.skip(str(e))
    return trt


@pytest.mark.gpu
def test_gpu_tensorrt_runner_concurrency(tmp_path):
    """Build the tiny graph into a real engine, then hammer it from several threads."""
    trt = _real_gpu_or_skip()
    from s3gen_export.engines import build_serialized_engine
    model = tiny_estimator_onnx()
    cc, name = gpu.compute_capability(0), gpu.device_name(0)
    folder = tmp_path / "a"
    manifest = write_tiny_artifacts(folder, buckets=BUCKETS[:1], trt=trt.__version__, cc=cc, gpu_name=name,
                                    precision="fp32")
    builder = trt.Builder(trt_backend._logger(trt))
    data, _ = build_serialized_engine(trt, builder, model, engine_profile(0, 256), "fp32", strongly_typed=False)
    engine = record(manifest, "mel256")
    (folder / engine.file).write_bytes(data)
    fixed = Engine.from_dict(dict(engine.to_dict(), sha256=sha256_file(folder / engine.file)), "engine")
    runner = TensorRTRunner(folder, fixed, manifest.component("estimator"), pool_size=2, cuda_graph=True)
    errors = []

    def worker(k):
        try:
            for j in range(5):
                feeds = feeds_for(100 + k, batch=1 + k % 2, seed=j)
                np.testing.assert_allclose(runner.run(feeds)["velocity"], expected_velocity(feeds), atol=1e-5)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runner.close()
    assert not errors, errors

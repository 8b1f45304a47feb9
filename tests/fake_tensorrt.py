"""A simulated TensorRT, for tests that need a GPU without having one (with tests/fake_cuda.py).

`make_fake_trt` is a stand-in `tensorrt` module: an "engine" is a header plus an ONNX graph that
ONNX Runtime executes on the bound device memory; its builder records the flags, pinned layers and
profile of every build, and its parser refuses what TensorRT's ONNX parser refuses (float64, ops of
other domains than the standard one).
They implement the calls the runtime backend and the engine build make, so every check, buffer,
pool, graph-capture and build path runs for real.

A plain helper module (no tests), imported by name: tests/ is on sys.path (conftest lives there).
"""
from __future__ import annotations

import hashlib
import json
import threading
import types
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import onnx
from onnx import TensorProto

from s3gen_export.stages.onnx_scopes import walk_nodes


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
            trt = self.trt
            with trt.stats:
                trt.active += 1
                trt.max_active = max(trt.max_active, trt.active)
                trt.executions += 1
                trt.stats.notify_all()
            try:
                if trt.gate is not None:   # a test holds executions here to observe how many overlap
                    if not trt.gate.wait(timeout=30):
                        raise TimeoutError("the test never opened trt.gate")
                names = list(self.engine.header["outputs"])
                values = self.engine.session().run(names, feeds)
            finally:
                with trt.stats:
                    trt.active -= 1
                    trt.stats.notify_all()
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
        self.errors: list[str] = []

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, i):
        return self.errors[i]

    def parse(self, data):
        trt = self.network.trt
        model = onnx.load_from_string(model_bytes := bytes(data))
        graph = model.graph
        if any(o and o not in {v.name for v in graph.value_info} for n in graph.node for o in n.output):
            graph = onnx.shape_inference.infer_shapes(model).graph   # TensorRT knows every tensor's type
        types_ = {v.name: v.type.tensor_type.elem_type for v in
                  list(graph.value_info) + list(graph.output) + list(graph.input)}
        types_.update({i.name: i.data_type for i in graph.initializer})
        for node in graph.node:
            for a in node.attribute:
                if node.op_type == "Constant" and a.name == "value" and a.HasField("t"):
                    types_[node.output[0]] = a.t.data_type
        for node in walk_nodes(graph.node):
            # TensorRT's ONNX parser knows the standard domain only (no com.microsoft contrib ops), in
            # If/Loop bodies as well
            if node.domain not in ("", "ai.onnx"):
                self.errors.append(f"In node {node.name!r} ({node.domain}.{node.op_type}): no importer registered "
                                   f"for op: {node.op_type}")
            # TensorRT has no double precision: its ONNX parser refuses any float64 tensor
            doubles = [t for t in list(node.input) + list(node.output) if t and types_.get(t) == TensorProto.DOUBLE]
            doubles += [node.name for a in node.attribute if a.name == "to" and a.i == TensorProto.DOUBLE]
            if doubles:
                self.errors.append(f"In node {node.name!r} ({node.op_type}): DOUBLE is not supported "
                                   f"(tensor {doubles[0]!r})")
        if self.errors:
            return False
        for node in graph.node:
            ltype = trt.LayerType.CONSTANT if node.op_type == "Constant" else trt.LayerType.ELEMENTWISE
            outs = [trt.float32 if types_.get(o, TensorProto.FLOAT) in (1, 10, 16) else trt.int32
                    for o in node.output]
            metadata = f"[ONNX Layer: {node.name}]" if trt.layer_metadata else ""
            self.network.layers.append(_FakeLayer(trt, node.name, metadata, ltype, outs))
            if not trt.layer_metadata:   # helper layers the parser adds for one node
                self.network.layers.append(_FakeLayer(trt, f"{node.name}_helper", "", ltype, outs))
        self.network.model_bytes = model_bytes
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


def make_fake_trt(cuda, version: str = "10.3.0", weak_typing: bool = True, layer_metadata: bool = True):
    """A stand-in `tensorrt` module (TensorRT 10 with weak typing, or 11-like without)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.cuda = cuda
    trt.layer_metadata = layer_metadata
    trt.stats = threading.Condition()   # guards and signals active / max_active / executions
    trt.active = trt.max_active = trt.executions = 0
    trt.gate = None   # a threading.Event: executions wait on it while set up by a test
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

"""A tiny artifact folder with TensorRT engines, for the backend tests (no GPU: tests/fake_tensorrt.py).

The "estimator" is velocity = 2 x + mu * mask + t, with estimator-shaped I/O; there is one fake
engine per bucket, each with a tight profile, recorded in a manifest the strict parser accepts.
A plain helper module (no tests), imported by name: tests/ is on sys.path (conftest lives there).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

import fake_tensorrt
from s3gen_runtime.manifest import SCHEMA_VERSION, Audio, Engine, Manifest, load_manifest, write_manifest


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


def sha(data: bytes) -> str:
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
    return {"file": file, "sha256": sha(data), "graph": "estimator", "bucket": bucket, "precision": precision,
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
        data = fake_tensorrt.fake_engine_bytes(model, engine_profile(prev, top, record_options.get("min_batch", 1),
                                                             record_options.get("max_batch", 2)))
        rel = f"engines/estimator.{name}.{precision}.sm90.engine"
        (folder / rel).parent.mkdir(exist_ok=True)
        (folder / rel).write_bytes(data)
        engines.append(engine_record(rel, data, name, prev, top, sha(model), precision=precision, **record_options))
        prev = top
    spec = lambda name, shape: {"name": name, "dtype": "float32", "shape": shape}  # noqa: E731
    manifest = Manifest.from_dict({
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "s3gen-aot", "version": "0.1.0"},
        "versions": {"python": "3.11", "torch": None, "onnx": None, "onnxruntime": None, "tensorrt": "10.3.0"},
        "checkpoint": {"file": "s3gen.safetensors", "sha256": sha(b"ckpt"), "variant": "standard"},
        "audio": Audio.current().to_dict(),
        "defaults": {"solver": "euler", "steps": 10, "cfg_rate": 0.7},
        "buckets": [{"name": n, "mel_frames": f} for n, f in BUCKETS],
        "components": {"estimator": {
            "file": "estimator.onnx", "sha256": sha(model), "format": "onnx", "precision": "fp32", "opset": 18,
            "spec_hash": "tiny",
            "inputs": [spec("x", ["batch", 80, "frames"]), spec("mask", ["batch", 1, "frames"]),
                       spec("mu", ["batch", 80, "frames"]), spec("t", ["batch"])],
            "outputs": [spec("velocity", ["batch", 80, "frames"])],
            "validation": {"passed": True, "cases": [],
                           "tolerance": {"velocity": {"atol": 1e-3, "rtol": 1e-3, "min_snr_db": None}}},
            "selftest": None}},
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


def record(manifest: Manifest, bucket: str) -> Engine:
    return next(e for e in manifest.engines if e.bucket == bucket)

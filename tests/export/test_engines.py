"""TensorRT engine planning, precision policy, validation and the build pipeline.

The pure parts run on the exported synthetic graphs. The build runs end to end through the
simulated CUDA runtime and TensorRT of tests/fake_gpu.py (an engine there is an ONNX graph
executed by ONNX Runtime), so profiles, file names, the timing cache, validation,
the manifest records and the runtime runner are all exercised without a GPU. Tests marked `gpu`
build real engines and skip cleanly where there is no TensorRT or CUDA device.
"""
from __future__ import annotations

import json
import re
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from s3gen_export import engines
from s3gen_export.components import specs_for_variant
from s3gen_export.engines import build as engine_build
from s3gen_export.engines import mixed_precision
from s3gen_export.engines import (
    EngineBuildError,
    apply_fp32_layers,
    axis_ranges,
    build_engines,
    buildable_graphs,
    engine_file_name,
    engine_tolerances,
    fp32_layer_names,
    match_layer_to_nodes,
    module_path,
    name_nodes,
    plan_profiles,
    random_feeds,
    resolve_buckets,
    to_mixed_precision,
    update_manifest,
    validate_engine,
    validation_shapes,
)
from s3gen_export.validate import snr_db
from s3gen_runtime import gpu
from s3gen_runtime.backends import tensorrt as trt_backend
from s3gen_runtime.backends.tensorrt import TensorRTUnavailableError, open_tensorrt
from s3gen_runtime.buckets import Bucket, make_buckets
from s3gen_runtime.errors import ArtifactError, EngineMismatchError, InputError, S3GenError
from s3gen_runtime.manifest import Manifest, Tolerance, load_manifest, write_manifest


# tests/fake_gpu.py: the simulated CUDA runtime and TensorRT (tests/ is on sys.path: conftest lives there)
import fake_gpu as fakes  # noqa: E402
B = {b.name: b for b in make_buckets()}   # mel256 .. mel4096


@pytest.fixture(scope="module")
def standard(exported):
    folder = exported("standard")
    return folder, load_manifest(folder, verify=False)


@pytest.fixture(scope="module")
def protos(exported):
    cache = {}

    def get(variant, name):
        if (variant, name) not in cache:
            cache[(variant, name)] = onnx.load(str(exported(variant) / f"{name}.onnx"))
        return cache[(variant, name)]

    return get


# ================================================================ planning

def test_axis_ranges_tile_the_buckets_without_overlap():
    buckets = make_buckets()
    covered = []
    for i, b in enumerate(buckets):
        r = axis_ranges(b, buckets[i - 1] if i else None, 1, 2, 4)
        lo, opt, hi = r["frames"]
        assert (opt, hi) == (b.mel_frames, b.mel_frames)
        covered.append((lo, hi))
        assert r["batch"] == (1, 2, 4)
        assert r["samples"] == tuple(480 * v for v in r["frames"])
        assert r["tokens"] == r["prompt_tokens"] == (1, b.tokens // 2, b.tokens)
        assert r["prompt_frames"] == tuple(2 * v for v in r["tokens"])
    assert covered[0][0] == 1
    assert all(covered[i + 1][0] == covered[i][1] + 1 for i in range(len(covered) - 1))


def test_plan_profiles_estimator(standard):
    _, manifest = standard
    for component in (manifest.component("estimator_cfg"), specs_for_variant("standard")[1]):
        p = plan_profiles(component, B["mel1024"], B["mel512"], 1, 1, 4)
        assert p["x"] == ((1, 80, 513), (1, 80, 1024), (4, 80, 1024))
        assert p["mask"] == ((1, 1, 513), (1, 1, 1024), (4, 1, 1024))
        assert p["spks"] == ((1, 80), (1, 80), (4, 80))
        assert p["t"] == p["cfg_rate"] == ((1,), (1,), (4,))
        assert set(p) == {"x", "mask", "mu", "t", "spks", "cond", "cfg_rate"}
    smallest = plan_profiles(manifest.component("estimator"), B["mel256"], None, 2, 2, 2)
    assert smallest["x"] == ((2, 80, 1), (2, 80, 256), (2, 80, 256))


def test_plan_profiles_encoder(standard):
    _, manifest = standard
    p = plan_profiles(manifest.component("encoder"), B["mel1024"], B["mel512"], 1, 2, 3)
    assert p["tokens"] == ((1, 1), (2, 256), (3, 512))            # capacity 512 tokens, opt half each
    assert p["prompt_tokens"] == ((1, 1), (2, 256), (3, 512))
    assert p["prompt_feat"] == ((1, 2, 80), (2, 512, 80), (3, 1024, 80))   # 2 x prompt_tokens
    assert p["embedding"] == ((1, 192), (2, 192), (3, 192))
    assert p["token_lengths"] == ((1,), (2,), (3,))


def test_plan_profiles_vocoder(standard):
    _, manifest = standard
    p = plan_profiles(manifest.component("vocoder"), B["mel2048"], B["mel1024"], 1, 1, 4)
    assert p["mel"] == ((1, 80, 1025), (1, 80, 2048), (4, 80, 2048))
    assert p["sine_noise"] == ((1, 9, 480 * 1025), (1, 9, 480 * 2048), (4, 9, 480 * 2048))
    assert p["sine_phase"] == ((1, 9, 1), (1, 9, 1), (4, 9, 1))


def test_plan_profiles_rejects_bad_arguments(standard):
    _, manifest = standard
    vocoder = manifest.component("vocoder")
    for args, message in (((2, 1, 4), "min_batch <= opt_batch <= max_batch"), ((1, 5, 4), "opt_batch"),
                          ((0, 1, 4), "min_batch must be a positive"), ((1, 1, True), "max_batch"),
                          ((1.5, 2, 4), "min_batch")):
        with pytest.raises(InputError, match=message):
            plan_profiles(vocoder, B["mel512"], B["mel256"], *args)
    with pytest.raises(InputError, match="must be smaller"):
        plan_profiles(vocoder, B["mel512"], B["mel1024"])
    with pytest.raises(InputError, match="Bucket"):
        plan_profiles(vocoder, 512, None)
    odd = type("C", (), {"inputs": [type("T", (), {"name": "z", "shape": ("batch", "width")})()]})()
    with pytest.raises(InputError, match="no profile rule for axis 'width'"):
        plan_profiles(odd, B["mel512"], None)


def test_validation_shapes_are_real_requests(standard):
    """Each case is a shape a request can have, inside the profile, and ONNX Runtime runs it."""
    folder, manifest = standard
    for name in ("encoder", "estimator_cfg", "vocoder"):
        component = manifest.component(name)
        profile = plan_profiles(component, B["mel512"], B["mel256"], 1, 1, 2)
        cases = validation_shapes(component, B["mel512"], B["mel256"], 1, 1, 2)
        assert list(cases) == ["min", "opt", "max"]
        for case, shapes in cases.items():
            for n, shape in shapes.items():
                lo, _, hi = profile[n]
                assert all(a <= s <= b for s, a, b in zip(shape, lo, hi)), (name, case, n, shape)
            axes = trt_backend.axis_sizes(component, shapes)
            frames = trt_backend.bucket_frames(axes)
            assert 256 < frames <= 512, (name, case, frames)
    enc = validation_shapes(manifest.component("encoder"), B["mel4096"], B["mel2048"], 1, 1, 4)["max"]
    assert 2 * (enc["tokens"][1] + enc["prompt_tokens"][1]) == 4096 < 5000   # within the positional table
    session = ort.InferenceSession(str(folder / "vocoder.onnx"), providers=["CPUExecutionProvider"])
    component = manifest.component("vocoder")
    shapes = validation_shapes(component, Bucket("mel8", 8), None, 1, 1, 2)
    for case in ("min", "max"):
        feeds = random_feeds(component, shapes[case], np.random.default_rng(0))
        assert feeds["mel_lengths"][0] == shapes[case]["mel"][2] and feeds["mel_lengths"].dtype == np.int64
        assert feeds["sine_phase"][:, 0].max() == 0.0
        wav, f0 = session.run(None, feeds)
        assert np.isfinite(wav).all() and wav.shape == (shapes[case]["mel"][0], 480 * shapes[case]["mel"][2])


def test_random_feeds_follow_the_inputs_meaning(standard):
    _, manifest = standard
    component = manifest.component("encoder")
    shapes = validation_shapes(component, B["mel256"], None, 1, 1, 3)["max"]
    feeds = random_feeds(component, shapes, np.random.default_rng(1))
    assert feeds["tokens"].max() < 6561 and feeds["tokens"].min() >= 0
    assert (feeds["token_lengths"] <= shapes["tokens"][1]).all() and (feeds["token_lengths"] >= 1).all()
    assert feeds["token_lengths"][0] == shapes["tokens"][1]
    for spec in component.inputs:
        assert feeds[spec.name].dtype == np.dtype(spec.dtype) and feeds[spec.name].shape == shapes[spec.name]
    est = manifest.component("estimator_cfg")
    feeds = random_feeds(est, validation_shapes(est, B["mel256"], None, 1, 1, 2)["max"], np.random.default_rng(2))
    assert set(np.unique(feeds["mask"])) <= {0.0, 1.0} and feeds["mask"][0].all()
    assert (feeds["cfg_rate"] == np.float32(0.7)).all() and (0 <= feeds["t"]).all() and (feeds["t"] <= 0.9).all()


def test_engine_file_name():
    assert engine_file_name("estimator_cfg", B["mel1024"], "fp16", "9.0") == "estimator_cfg.mel1024.fp16.sm90.engine"
    assert engine_file_name("vocoder", "mel256", "bf16", "sm_80") == "vocoder.mel256.bf16.sm80.engine"
    assert engine_file_name("encoder", "mel4096", "fp32", "12.0") == "encoder.mel4096.fp32.sm120.engine"
    with pytest.raises(InputError):
        engine_file_name("../x", "mel256", "fp16", "9.0")
    with pytest.raises(InputError):
        engine_file_name("vocoder", "mel256", "int8", "9.0")
    with pytest.raises(ArtifactError):
        engine_file_name("vocoder", "mel256", "fp16", "hopper")


def test_resolve_buckets_and_graphs(standard):
    _, manifest = standard
    pairs = resolve_buckets(manifest)
    assert [(b.name, p.name if p else None) for b, p in pairs][:2] == [("mel256", None), ("mel512", "mel256")]
    pairs = resolve_buckets(manifest, ["mel4096", 1024, "256"])   # names, sizes, size strings; sorted
    assert [(b.name, p.name if p else None) for b, p in pairs] == [
        ("mel256", None), ("mel1024", "mel256"), ("mel4096", "mel1024")]
    with pytest.raises(InputError, match="mel300.*not in these artifacts' table"):
        resolve_buckets(manifest, ["mel300"])
    assert buildable_graphs(manifest) == ["encoder", "estimator", "estimator_cfg", "vocoder"]
    data = manifest.to_dict()
    data["components"]["estimator_int8"] = dict(data["components"]["estimator"], precision="int8",
                                                file="estimator_int8.onnx")
    with_int8 = Manifest.from_dict(data)
    assert "estimator_int8" not in buildable_graphs(with_int8)   # int8 graphs are for ONNX Runtime
    with pytest.raises(InputError, match="estimator_int8"):
        buildable_graphs(with_int8, ["estimator_int8"])


# ================================================================ precision policy

def _paths(proto, names):
    by_name = {n.name: n for n in proto.graph.node}
    return [(module_path(by_name[n]) or "") for n in names]


def test_fp32_layers_of_the_guided_estimator(protos):
    proto = protos("standard", "estimator_cfg")
    names = fp32_layer_names(proto)
    nodes = {n.name: n for n in proto.graph.node}
    ops = [nodes[n].op_type for n in names]
    every = lambda op: {n.name for n in proto.graph.node if n.op_type == op}   # noqa: E731
    assert every("LayerNormalization") <= set(names) and every("Softmax") <= set(names)
    assert {"Sin", "Cos"} <= set(ops)
    paths = _paths(proto, names)
    assert any("time_embeddings" in p for p in paths) and any("time_mlp.linear_1" in p for p in paths)
    assert sum(p.endswith(".mlp.1") for p in paths) == 14   # every block's time projection (batch-only)
    assert "Conv" not in ops and "MatMul" not in ops        # the U-Net itself runs in fp16
    assert len(names) < 0.12 * len(proto.graph.node)
    assert names == [n.name for n in proto.graph.node if n.name in set(names)]   # graph order


def test_fp32_layers_of_the_meanflow_estimator(protos):
    proto = protos("meanflow", "estimator")
    paths = _paths(proto, fp32_layer_names(proto))
    assert any(p.endswith("time_embed_mixer") for p in paths)
    assert sum(p.endswith("time_mlp.linear_1") for p in paths) == 2   # t and r both embedded in fp32


def test_fp32_layers_of_the_vocoder(protos):
    proto = protos("standard", "vocoder")
    names = set(fp32_layer_names(proto))
    nodes = [n for n in proto.graph.node if n.name in names]
    ops = {n.op_type for n in nodes}
    paths = [module_path(n) or "" for n in nodes]
    assert "CumSum" in ops and any("m_source" in p for p in paths)            # the sine source
    assert any(p.endswith("conv_post") for p in paths) and "Exp" in ops       # spectral head
    istft = [n for n in proto.graph.node if n.op_type == "ConvTranspose" and module_path(n) == "hift"]
    assert len(istft) == 2 and all(n.name in names for n in istft)             # ISTFT and its envelope
    stft = [n for n in nodes if n.op_type == "Conv" and module_path(n) == "hift"]
    assert len(stft) == 1                                                      # STFT of the source
    learned = [n for n in proto.graph.node if any(k in (module_path(n) or "") for k in
                                                   ("resblocks", "ups.", "conv_pre", "source_downs", "f0_predictor"))]
    assert learned and not any(n.name in names for n in learned)


def test_fp32_layers_of_the_encoder(protos):
    proto = protos("standard", "encoder")
    names = fp32_layer_names(proto)
    ops = {proto.graph.node[i].op_type for i in range(len(proto.graph.node)) if proto.graph.node[i].name in names}
    assert {"LayerNormalization", "Softmax", "ReduceL2"} <= ops
    assert "MatMul" not in ops and "Conv" not in ops


def _scoped(node, *scopes):
    node.metadata_props.add(key=engines.NAME_SCOPES_KEY, value=str(["", *scopes, node.name]))
    return node


def _model(nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def _f(name, *dims):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))


def _w(name, *shape, seed=0):
    return onnx.numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.3, name)


def handmade_flow_graph():
    """x (B, T, 8), t (B,): a time embedding (scoped and unscoped parts), a LayerNorm op, a
    decomposed LayerNorm, attention-like softmax, and plain matmuls."""
    nodes = [
        _scoped(helper.make_node("Unsqueeze", ["t", "ax1"], ["t1"], name="te_unsq"), "decoder", "decoder.time_embeddings"),
        _scoped(helper.make_node("Mul", ["t1", "freq"], ["tf"], name="te_mul"), "decoder", "decoder.time_embeddings"),
        _scoped(helper.make_node("Sin", ["tf"], ["ts"], name="te_sin"), "decoder", "decoder.time_embeddings"),
        _scoped(helper.make_node("Cos", ["tf"], ["tc"], name="te_cos"), "decoder", "decoder.time_embeddings"),
        helper.make_node("Concat", ["ts", "tc"], ["temb"], name="te_cat", axis=1),     # unscoped, batch-only
        _scoped(helper.make_node("MatMul", ["temb", "wt"], ["tproj"], name="time_proj"), "decoder", "decoder.time_mlp.linear_1"),
        helper.make_node("MatMul", ["tproj", "wb"], ["tblock"], name="block_mlp"),   # unscoped, batch-only
        helper.make_node("Unsqueeze", ["tblock", "ax1"], ["tb3"], name="block_unsq"),
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="proj_in"),
        helper.make_node("Add", ["h1", "tb3"], ["h2"], name="add_time"),              # mixes frames: fp16
        helper.make_node("LayerNormalization", ["h2", "ln_s", "ln_b"], ["h3"], name="ln", axis=-1),
        helper.make_node("MatMul", ["h3", "w2"], ["logits"], name="scores"),
        helper.make_node("Softmax", ["logits"], ["attn"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["attn", "w3"], ["h4"], name="mix"),
        helper.make_node("ReduceMean", ["h4", "ax_last"], ["mean"], name="rm1", keepdims=1),
        helper.make_node("Sub", ["h4", "mean"], ["centered"], name="ln2_sub"),
        helper.make_node("Pow", ["centered", "two"], ["sq"], name="ln2_pow"),
        helper.make_node("ReduceMean", ["sq", "ax_last"], ["var"], name="rm2", keepdims=1),
        helper.make_node("Add", ["var", "eps"], ["var_eps"], name="ln2_eps"),
        helper.make_node("Sqrt", ["var_eps"], ["std"], name="ln2_sqrt"),
        helper.make_node("Div", ["centered", "std"], ["normed"], name="ln2_div"),
        helper.make_node("MatMul", ["normed", "w4"], ["y"], name="proj_out"),
        _scoped(helper.make_node("Shape", ["t"], ["tshape"], name="te_shape"), "decoder", "decoder.time_embeddings"),
    ]
    inits = [onnx.numpy_helper.from_array(np.array([1], np.int64), "ax1"),
             onnx.numpy_helper.from_array(np.array([-1], np.int64), "ax_last"),
             onnx.numpy_helper.from_array(np.linspace(0.5, 4, 4, dtype=np.float32)[None], "freq"),
             _w("wt", 8, 8, seed=1), _w("wb", 8, 8, seed=2), _w("w1", 8, 8, seed=3), _w("w2", 8, 8, seed=4),
             _w("w3", 8, 8, seed=5), _w("w4", 8, 8, seed=6),
             onnx.numpy_helper.from_array(np.ones(8, np.float32), "ln_s"),
             onnx.numpy_helper.from_array(np.zeros(8, np.float32), "ln_b"),
             onnx.numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             onnx.numpy_helper.from_array(np.array(1e-5, np.float32), "eps")]
    return _model(nodes, [_f("x", "B", "T", 8), _f("t", "B")],
                  [_f("y", "B", "T", 8), helper.make_tensor_value_info("tshape", TensorProto.INT64, [1])], inits)


def test_fp32_layer_names_on_a_handmade_graph():
    model = handmade_flow_graph()
    assert fp32_layer_names(model) == [
        "te_unsq", "te_mul", "te_sin", "te_cos", "te_cat", "time_proj", "block_mlp", "block_unsq",
        "ln", "softmax", "rm1", "ln2_sub", "ln2_pow", "rm2", "ln2_eps", "ln2_sqrt", "ln2_div"]
    # te_shape is scoped in the time embedding but has no floating-point output; proj_in, add_time,
    # scores, mix and proj_out (the model's own compute) run in reduced precision.


def handmade_vocoder_graph():
    """mel -> conv_pre -> (+ source branch) -> conv_post -> exp -> / envelope; source: m_source ->
    STFT conv (at the top module) -> mask -> source_downs."""
    top = ("hift",)
    nodes = [
        _scoped(helper.make_node("Mul", ["f0", "k"], ["phase"], name="sine_mul"), *top, "hift.m_source", "hift.m_source.l_sin_gen"),
        _scoped(helper.make_node("Sin", ["phase"], ["src"], name="sine_sin"), *top, "hift.m_source", "hift.m_source.l_sin_gen"),
        _scoped(helper.make_node("Conv", ["src", "stft_w"], ["spec"], name="stft_conv", pads=[1, 1]), *top),
        _scoped(helper.make_node("Mul", ["spec", "smask"], ["spec_m"], name="stft_mask"), *top),
        _scoped(helper.make_node("Conv", ["spec_m", "sd_w"], ["sd"], name="sd_conv", pads=[1, 1]), *top, "hift.source_downs.0"),
        _scoped(helper.make_node("Conv", ["mel", "pre_w"], ["h"], name="pre_conv", pads=[1, 1]), *top, "hift.conv_pre"),
        _scoped(helper.make_node("Add", ["h", "sd"], ["h2"], name="fuse"), *top),
        _scoped(helper.make_node("Conv", ["h2", "post_w"], ["post"], name="post_conv", pads=[1, 1]), *top, "hift.conv_post"),
        _scoped(helper.make_node("Exp", ["post"], ["mag"], name="mag_exp"), *top),
        _scoped(helper.make_node("ConvTranspose", ["smask", "env_w"], ["env"], name="envelope", pads=[1, 1]), *top),
        _scoped(helper.make_node("Div", ["mag", "env"], ["wav"], name="istft_div"), *top),
    ]
    inits = [_w("stft_w", 4, 1, 3, seed=1), _w("sd_w", 4, 4, 3, seed=2), _w("pre_w", 4, 4, 3, seed=3),
             _w("post_w", 4, 4, 3, seed=4), onnx.numpy_helper.from_array(np.full((1, 4, 3), 0.5, np.float32), "env_w"),
             onnx.numpy_helper.from_array(np.array(0.1, np.float32), "k")]
    return _model(nodes, [_f("mel", 1, 4, 16), _f("f0", 1, 1, 16), _f("smask", 1, 1, 16)], [_f("wav", 1, 4, 16)], inits)


def test_fp32_layer_names_keep_the_vocoders_spectral_path():
    assert fp32_layer_names(handmade_vocoder_graph()) == [
        "sine_mul", "sine_sin", "stft_conv", "stft_mask", "post_conv", "mag_exp", "envelope", "istft_div"]


def test_name_nodes_names_only_the_unnamed():
    model = handmade_flow_graph()
    model.graph.node[2].name = ""
    model.graph.node[5].name = ""
    assert name_nodes(model) == 2
    assert model.graph.node[2].name == "s3gen_node_2" and model.graph.node[0].name == "te_unsq"
    assert len({n.name for n in model.graph.node}) == len(model.graph.node)


def test_match_layer_to_nodes():
    names = {"node_add", "node_add_1", "node_layer_norm", "node_linear"}
    assert match_layer_to_nodes("whatever", "[ONNX Layer: node_layer_norm]", names) == ["node_layer_norm"]
    fused = "[ONNX Layer: node_linear]\x1f[ONNX Layer: node_add]\x1f[ONNX Layer: not_a_node]"
    assert match_layer_to_nodes("fused", fused, names) == ["node_linear", "node_add"]
    assert match_layer_to_nodes("node_add_1", "", names) == ["node_add_1"]     # a node of its own
    assert match_layer_to_nodes("node_add_7", "", names) == ["node_add"]       # helper layer of node_add
    assert match_layer_to_nodes("node_layer_norm/scale_const", None, names) == ["node_layer_norm"]
    assert match_layer_to_nodes("unrelated", None, names) == []


@pytest.mark.parametrize("layer_metadata", [True, False])
def test_apply_fp32_layers_pins_the_matching_tensorrt_layers(protos, layer_metadata):
    proto = protos("standard", "estimator_cfg")
    trt = fakes.make_fake_trt(fakes.FakeCuda(), layer_metadata=layer_metadata)
    network = fakes.FakeNetwork(trt, 0)
    assert fakes.FakeParser(network, None).parse(proto.SerializeToString())
    keep = fp32_layer_names(proto)
    pinned = apply_fp32_layers(network, keep, [n.name for n in proto.graph.node], trt)
    layers = [l for l in network.layers if l.precision is not None]
    assert all(l.precision == trt.float32 and set(l.output_types.values()) == {trt.float32} for l in layers)
    # with metadata one layer per node; by names, the parser's helper layers are matched too
    assert pinned == len(layers) == (len(keep) if layer_metadata else 2 * len(keep))


# ---------------------------------------------------------------- strongly typed conversion

def _run(model, feeds):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def test_to_mixed_precision_keeps_fp32_islands_and_io_types():
    model = handmade_flow_graph()
    keep = fp32_layer_names(model)
    low = to_mixed_precision(model, "fp16", keep)
    types = {v.name: v.type.tensor_type.elem_type for v in list(low.graph.value_info) + list(low.graph.output)}
    inits = {t.name: t.data_type for t in low.graph.initializer}
    assert [i.type.tensor_type.elem_type for i in low.graph.input] == [TensorProto.FLOAT] * 2
    assert [o.type.tensor_type.elem_type for o in low.graph.output] == [TensorProto.FLOAT, TensorProto.INT64]
    assert inits["w1__fp16"] == TensorProto.FLOAT16 and "w1" not in inits        # fp16 compute
    assert inits["wt"] == TensorProto.FLOAT and inits["ln_s"] == TensorProto.FLOAT  # fp32 islands
    nodes = {n.name: n for n in low.graph.node}
    assert types[nodes["proj_in"].output[0]] == TensorProto.FLOAT16
    assert types[nodes["ln"].output[0]] == TensorProto.FLOAT and types[nodes["softmax"].output[0]] == TensorProto.FLOAT
    assert types[nodes["time_proj"].output[0]] == TensorProto.FLOAT
    casts = [n for n in low.graph.node if n.op_type == "Cast"]
    assert 4 <= len(casts) <= 10
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 5, 8)).astype(np.float32), "t": np.array([0.1, 0.7], np.float32)}
    ref, got = _run(model, feeds), _run(low, feeds)
    assert got[0].dtype == np.float32 and snr_db(got[0], ref[0]) > 40
    np.testing.assert_array_equal(got[1], ref[1])


def test_to_mixed_precision_handles_shared_weights_casts_and_constants():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="low_mm"),
        helper.make_node("MatMul", ["x", "w"], ["b"], name="keep_mm"),                     # shares w
        helper.make_node("Cast", ["n"], ["nf"], name="to_float", to=TensorProto.FLOAT),
        helper.make_node("Shape", ["x"], ["shp"], name="shape"),
        helper.make_node("ConstantOfShape", ["shp"], ["ones"], name="ones",
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("Mul", ["a", "nf"], ["c"], name="scale"),
        helper.make_node("Add", ["c", "ones"], ["d"], name="plus"),
        helper.make_node("Add", ["d", "b"], ["y"], name="out"),                              # graph output
    ]
    model = _model(nodes, [_f("x", 2, 3, 4), helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
                   [_f("y", 2, 3, 4)], [_w("w", 4, 4, seed=9)])
    low = to_mixed_precision(model, "fp16", ["keep_mm"])
    inits = {t.name: t.data_type for t in low.graph.initializer}
    assert inits == {"w": TensorProto.FLOAT, "w__fp16": TensorProto.FLOAT16}
    nodes = {n.name: n for n in low.graph.node}
    assert [a.i for a in nodes["to_float"].attribute if a.name == "to"] == [TensorProto.FLOAT16]
    assert nodes["ones"].attribute[0].t.data_type == TensorProto.FLOAT16
    assert low.graph.node[-1].op_type == "Cast" and low.graph.node[-1].output[0] == "y"   # back to fp32 at the end
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32), "n": np.array([3])}
    np.testing.assert_allclose(_run(low, feeds)[0], _run(model, feeds)[0], rtol=5e-3, atol=5e-3)
    with pytest.raises(InputError):
        to_mixed_precision(model, "fp32", [])


def test_to_mixed_precision_on_the_real_vocoder(protos):
    proto = protos("standard", "vocoder")
    keep = fp32_layer_names(proto)
    low = to_mixed_precision(proto, "fp16", keep)
    assert [i.type.tensor_type.elem_type for i in low.graph.input] == [i.type.tensor_type.elem_type
                                                                       for i in proto.graph.input]
    shapes = {"mel": (1, 80, 24), "mel_lengths": (1,), "sine_phase": (1, 9, 1), "sine_noise": (1, 9, 480 * 24)}
    spec = specs_for_variant("standard")[3]
    feeds = random_feeds(spec, shapes, np.random.default_rng(0))
    ref, got = _run(proto, feeds), _run(low, feeds)
    assert snr_db(got[0], ref[0]) > 25 and snr_db(got[1], ref[1]) > 30
    bf16 = to_mixed_precision(proto, "bf16", keep)   # type-checked through its fp16 twin
    low_inits = [t for t in bf16.graph.initializer if t.data_type == TensorProto.BFLOAT16]
    assert low_inits and len(bf16.graph.node) == len(low.graph.node)


def test_bfloat16_rounding():
    values = np.array([1.0, -2.5, 1.00390625, 1.01171875, 3.0e38, np.inf, 0.0], np.float32)
    bits = mixed_precision._float32_to_bf16_bits(values)
    assert [hex(b) for b in bits[:2]] == ["0x3f80", "0xc020"]
    assert bits[2] == 0x3F80   # halfway, ties to even (down)
    assert bits[3] == 0x3F82   # halfway, ties to even (up)
    assert bits[5] == 0x7F80 and bits[6] == 0
    nan = int(mixed_precision._float32_to_bf16_bits(np.array([np.nan], np.float32))[0])
    assert nan & 0x7F80 == 0x7F80 and nan & 0x7F   # still a NaN


# ================================================================ validation

def test_engine_tolerances(standard):
    _, manifest = standard
    enc = manifest.component("encoder")
    fp32 = engine_tolerances(enc, "fp32")
    assert fp32["mu"] == enc.validation.tolerance["mu"] and fp32["mask"].atol == 0.0
    fp16 = engine_tolerances(enc, "fp16")
    assert fp16["mu"].min_snr_db == 30.0 and fp16["mask"] == Tolerance(0.0, 0.0)
    assert engine_tolerances(manifest.component("estimator"), "bf16")["velocity"].min_snr_db == 20.0
    assert engine_tolerances(manifest.component("vocoder"), "fp16", {"wav": Tolerance(0, 0, 12.0)})["wav"].min_snr_db == 12
    with pytest.raises(InputError, match="unknown output"):
        engine_tolerances(enc, "fp16", {"nope": Tolerance(0, 0)})


def test_validate_engine_records_errors_and_fails_on_a_miss(standard):
    folder, manifest = standard
    component = manifest.component("vocoder")
    cases = validation_shapes(component, Bucket("mel4", 4), None, 1, 1, 2)
    session = ort.InferenceSession(str(folder / "vocoder.onnx"), providers=["CPUExecutionProvider"])

    def reference(feeds):
        return dict(zip(["wav", "f0"], session.run(None, feeds)))

    good = validate_engine(reference, reference, component, cases, "fp16")
    assert good["passed"] and [c["name"] for c in good["cases"]] == ["min", "opt", "max"]
    assert good["cases"][2]["shapes"]["mel"] == [2, 80, 4] and good["tolerance"]["wav"]["min_snr_db"] == 25.0
    json.dumps(good, allow_nan=False)

    def noisy(feeds):
        out = reference(feeds)
        return {k: v + 0.3 * np.std(v) * np.random.default_rng(0).standard_normal(v.shape).astype(np.float32)
                for k, v in out.items()}

    bad = validate_engine(noisy, reference, component, cases, "fp16")
    assert not bad["passed"] and any("below the 25 dB floor" in p for c in bad["cases"] for p in c["problems"])
    assert engines.validation_summary(bad).startswith("FAIL")

    def broken(feeds):
        raise InputError("simulated engine failure")

    assert "engine failed" in validate_engine(broken, reference, component, cases, "fp32")["cases"][0]["problems"][0]


# ================================================================ the manifest

def test_engine_records_round_trip_in_a_copy_of_the_artifacts(standard, tmp_path):
    src, manifest = standard
    folder = tmp_path / "copy"
    folder.mkdir()
    for c in manifest.components.values():
        (folder / c.file).symlink_to(src / c.file)
    (folder / "manifest.json").write_text((src / "manifest.json").read_text())
    data = b"serialized engine bytes"
    rel = "engines/" + engine_file_name("estimator_cfg", "mel1024", "fp16", "9.0")
    (folder / "engines").mkdir()
    (folder / rel).write_bytes(data)
    import hashlib
    record = {"file": rel, "sha256": hashlib.sha256(data).hexdigest(), "graph": "estimator_cfg", "bucket": "mel1024",
              "precision": "fp16", "tensorrt": "10.3.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
              "min_batch": 1, "max_batch": 4,
              "build_options": {"profile": engines.profile_to_json(plan_profiles(
                  manifest.component("estimator_cfg"), B["mel1024"], B["mel512"])), "frames_range": [513, 1024],
                  "onnx_sha256": manifest.component("estimator_cfg").sha256, "fp32_layers": 237},
              "validation": {"passed": True, "cases": []}}
    updated = update_manifest(manifest, [record], "10.3.0")
    write_manifest(folder, updated)
    again = load_manifest(folder, verify=True)
    assert again.versions.tensorrt == "10.3.0" and len(again.engines) == 1
    assert again.engines[0].to_dict() == record
    assert len(update_manifest(again, [record], "10.3.0").engines) == 1   # same file: replaced, not doubled
    (folder / rel).write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="tampered"):
        load_manifest(folder, verify=True)


# ================================================================ building (simulated GPU)

@pytest.fixture
def fake_trt(monkeypatch):
    """make(version, weak_typing, devices) -> (cuda, trt): a simulated GPU and TensorRT."""
    def make(version="10.3.0", weak_typing=True, devices=1, layer_metadata=True):
        cuda = fakes.FakeCuda(devices=devices)
        trt = fakes.make_fake_trt(cuda, version, weak_typing, layer_metadata)
        gpu._reset_for_tests(cuda)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(trt_backend, "_LOGGER", None)
        monkeypatch.setattr(engine_build, "_TRT_LOGGER", None)
        return cuda, trt

    yield make
    gpu._reset_for_tests(None)


@pytest.fixture
def small_artifacts(standard, tmp_path):
    """A copy of the standard artifacts (graphs linked) with tiny buckets, so builds validate fast."""
    src, manifest = standard

    def make(graphs=("vocoder",), buckets=(("mel2", 2), ("mel4", 4))):
        data = manifest.to_dict()
        data["components"] = {g: data["components"][g] for g in graphs}
        data["buckets"] = [{"name": n, "mel_frames": f} for n, f in buckets]
        data["engines"] = []
        folder = tmp_path / "art"
        folder.mkdir()
        for g in graphs:
            (folder / data["components"][g]["file"]).symlink_to(src / data["components"][g]["file"])
        write_manifest(folder, Manifest.from_dict(data))
        return folder

    return make


def test_build_engines_without_tensorrt_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTUnavailableError, match=r"TensorRT is not installed: pip install 's3gen-aot\[tensorrt\]'"):
        build_engines(tmp_path, "fp16")
    with pytest.raises(S3GenError):
        build_engines(tmp_path, "fp16")


def test_build_engines_checks_its_arguments_first(tmp_path):
    with pytest.raises(InputError, match="precision must be one of fp32, fp16, bf16"):
        build_engines(tmp_path, "int8")
    with pytest.raises(InputError, match="min_batch <= opt_batch <= max_batch"):
        build_engines(tmp_path, "fp16", min_batch=4, max_batch=2)


def test_build_engines_without_a_gpu(fake_trt, tmp_path):
    fake_trt(devices=0)
    with pytest.raises(TensorRTUnavailableError, match="no CUDA GPU"):
        build_engines(tmp_path, "fp16")


def test_build_engines_end_to_end(fake_trt, small_artifacts, standard):
    cuda, trt = fake_trt()
    folder = small_artifacts()
    lines = []
    built = build_engines(folder, "fp32", max_batch=2, progress=lines.append)
    manifest = load_manifest(folder, verify=True)
    assert [e.bucket for e in manifest.engines] == ["mel2", "mel4"] and list(built) == list(manifest.engines)
    assert manifest.versions.tensorrt == "10.3.0"
    small, big = manifest.engines
    assert small.file == "engines/vocoder.mel2.fp32.sm90.engine" and (folder / small.file).is_file()
    assert (small.graph, small.precision, small.tensorrt, small.compute_capability, small.gpu) == (
        "vocoder", "fp32", "10.3.0", "9.0", "NVIDIA H100 80GB HBM3")
    assert (small.min_batch, small.max_batch) == (1, 2)
    assert small.build_options["profile"]["mel"] == {"min": [1, 80, 1], "opt": [1, 80, 2], "max": [2, 80, 2]}
    assert big.build_options["profile"]["sine_noise"]["min"] == [1, 9, 480 * 3]
    assert (small.build_options["frames_range"], big.build_options["frames_range"]) == ([1, 2], [3, 4])
    assert small.build_options["onnx_sha256"] == manifest.component("vocoder").sha256
    assert small.validation["passed"] and [c["name"] for c in small.validation["cases"]] == ["min", "opt", "max"]
    assert "onnxruntime fp32" in small.validation["reference"]
    assert "TF32" not in trt.builds[0]["flags"]   # fp32 engines compute in true fp32
    assert (folder / "engines" / "timing.sm90.trt10.3.0.cache").is_file()
    assert re.fullmatch(r"\[1/2\] vocoder mel2 fp32 \.\.\. \d+\.\d s \(min .* dB, opt .* dB, max .* dB\)", lines[1])
    assert lines[2].startswith("[2/2] vocoder mel4 fp32 ... ")

    # the runtime runs them: each call goes to the bucket that holds it
    runner = open_tensorrt(folder, manifest, "vocoder")
    component = manifest.component("vocoder")
    session = ort.InferenceSession(str(folder / "vocoder.onnx"), providers=["CPUExecutionProvider"])
    for frames in (1, 3):
        shapes = {"mel": (2, 80, frames), "mel_lengths": (2,), "sine_phase": (2, 9, 1), "sine_noise": (2, 9, 480 * frames)}
        feeds = random_feeds(component, shapes, np.random.default_rng(frames))
        np.testing.assert_allclose(runner.run(feeds)["wav"], session.run(["wav"], feeds)[0], atol=1e-6)
    runner.close()

    # a second build reuses the timing cache and replaces the records (no duplicates)
    lines.clear()
    build_engines(folder, "fp32", max_batch=2, buckets=["mel4"], progress=lines.append)
    assert any("reusing timing cache" in line for line in lines)
    again = load_manifest(folder)
    assert [e.bucket for e in again.engines] == ["mel2", "mel4"]
    assert again.engines[1].build_options["frames_range"] == [1, 4]   # built alone: covers 1..4


def test_build_engines_fp16_strongly_typed_on_tensorrt_11(fake_trt, small_artifacts):
    _, trt = fake_trt(version="11.4.0", weak_typing=False)
    folder = small_artifacts()
    with pytest.raises(EngineBuildError, match="--strongly-typed"):
        build_engines(folder, "fp16", strongly_typed=False, progress=lambda m: None)
    build_engines(folder, "fp16", buckets=["mel4"], max_batch=1, progress=lambda m: None)
    (engine,) = load_manifest(folder).engines
    assert engine.build_options["strongly_typed"] is True and engine.file.endswith("vocoder.mel4.fp16.sm90.engine")
    assert trt.builds[-1]["network_flags"] == 1 << 5 and trt.builds[-1]["pinned"] == []
    snr = [c["snr_db"]["wav"] for c in engine.validation["cases"]]
    assert engine.validation["passed"] and min(snr) >= 25.0 and max(snr) < 200   # really ran in fp16


def test_build_engines_fp16_weakly_typed_pins_fp32_layers(fake_trt, small_artifacts, protos):
    _, trt = fake_trt(version="10.3.0", weak_typing=True)
    folder = small_artifacts()
    build_engines(folder, "fp16", buckets=["mel4"], max_batch=1, progress=lambda m: None)
    (engine,) = load_manifest(folder).engines
    build = trt.builds[-1]
    assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= build["flags"] and build["network_flags"] == 0
    keep = fp32_layer_names(protos("standard", "vocoder"))
    assert set(build["pinned"]) == set(keep)
    assert engine.build_options["fp32_trt_layers_pinned"] == len(keep) == engine.build_options["fp32_layers"]
    assert engine.build_options["strongly_typed"] is False


def test_build_engines_fails_on_a_tolerance_miss(fake_trt, small_artifacts):
    _, trt = fake_trt()
    folder = small_artifacts()
    build_engines(folder, "fp32", buckets=["mel2"], progress=lambda m: None)
    (before,) = load_manifest(folder).engines
    trt.perturb = 0.5   # a rebuild whose engines are wrong
    lines = []
    with pytest.raises(EngineBuildError, match="2 of 2 engine\\(s\\) failed"):
        build_engines(folder, "fp32", progress=lines.append)
    assert sum("FAIL" in line for line in lines) == 2
    assert load_manifest(folder, verify=True).engines == (before,)   # the engine that passed before is intact
    assert sorted(p.name for p in (folder / "engines").iterdir() if "engine" in p.name) == [
        "vocoder.mel2.fp32.sm90.engine"]
    trt.perturb, trt.garbage = 0.0, True   # an engine TensorRT cannot even load
    with pytest.raises(EngineBuildError, match="could not deserialise"):
        build_engines(folder, "fp32", buckets=["mel4"], progress=lambda m: None)


def test_foreign_engine_built_elsewhere_is_refused_at_load(fake_trt, small_artifacts):
    fake_trt()
    folder = small_artifacts()
    build_engines(folder, "fp32", buckets=["mel4"], progress=lambda m: None)
    manifest = load_manifest(folder)
    fake_trt(version="10.5.0")   # the same artifacts on a machine with another TensorRT
    with pytest.raises(EngineMismatchError, match="rebuild for this GPU: s3gen-aot build-engines .* --precision fp32"):
        open_tensorrt(folder, manifest, "vocoder").run(random_feeds(
            manifest.component("vocoder"), {"mel": (1, 80, 4), "mel_lengths": (1,), "sine_phase": (1, 9, 1),
                                            "sine_noise": (1, 9, 1920)}, np.random.default_rng(0)))


@pytest.mark.slow
def test_pipeline_on_tensorrt_engines_matches_onnxruntime(fake_trt, small_artifacts, monkeypatch):
    """S3GenRuntime with backend='tensorrt' (simulated engines of every graph, two buckets) gives
    what the ONNX Runtime backend gives: each graph call lands in the engine of its own bucket."""
    from s3gen_runtime import backends
    from s3gen_runtime.pipeline import Request, S3GenRuntime
    from s3gen_runtime.voice import Voice
    fake_trt()
    monkeypatch.setitem(backends._BACKENDS, "tensorrt", ("s3gen_runtime.backends.tensorrt", "open_tensorrt"))
    folder = small_artifacts(graphs=("encoder", "estimator_cfg", "estimator", "vocoder"),
                             buckets=(("mel16", 16), ("mel32", 32)))
    build_engines(folder, "fp32", max_batch=2, progress=lambda m: None)
    rng = np.random.default_rng(0)

    def voice(p):
        return Voice.validated(rng.integers(0, 6561, p), (rng.standard_normal((2 * p, 80)) * 2 - 5).astype(np.float32),
                               rng.standard_normal(192).astype(np.float32))

    requests = [Request(rng.integers(0, 6561, 9), voice(5), seed=1), Request(rng.integers(0, 6561, 3), voice(2), seed=2)]
    on_trt = S3GenRuntime(folder, backend="tensorrt", engine_precision="fp32")
    on_ort = S3GenRuntime(folder)
    for solver_args in ({"steps": 2}, {"steps": 2, "cfg_rate": 0.0}):
        got = on_trt.synthesize_batch(requests, **solver_args)
        want = on_ort.synthesize_batch(requests, **solver_args)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.mel, w.mel, atol=1e-5)
            np.testing.assert_allclose(g.wav, w.wav, atol=1e-5)


# ================================================================ real GPU (skipped without one)

@pytest.mark.gpu
def test_gpu_build_small_engines_and_compare_with_onnxruntime(small_artifacts):
    fakes.real_gpu_or_skip()
    folder = small_artifacts()
    for precision in ("fp32", "fp16"):
        build_engines(folder, precision, max_batch=2, progress=print)
    manifest = load_manifest(folder)
    assert len(manifest.engines) == 4 and all(e.validation["passed"] for e in manifest.engines)

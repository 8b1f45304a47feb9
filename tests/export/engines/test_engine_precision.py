"""The fp32 layer policy of fp16/bf16 engines and the strongly typed (mixed-precision) rewrite;
pure, on handmade and exported graphs."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import fake_cuda
import fake_tensorrt
from s3gen_export.components import specs_for_variant
from s3gen_export.engines import mixed_precision
from s3gen_export.engines.errors import EngineBuildError
from s3gen_export.engines import (
    apply_fp32_layers,
    fp32_layer_names,
    match_layer_to_nodes,
    module_path,
    name_nodes,
    random_feeds,
    to_mixed_precision,
)
from s3gen_export.stages.onnx_scopes import NAME_SCOPES_KEY
from s3gen_export.stages.validate import snr_db
from s3gen_runtime.errors import InputError


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
    node.metadata_props.add(key=NAME_SCOPES_KEY, value=str(["", *scopes, node.name]))
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
    trt = fake_tensorrt.make_fake_trt(fake_cuda.FakeCuda(), layer_metadata=layer_metadata)
    network = fake_tensorrt.FakeNetwork(trt, 0)
    assert fake_tensorrt.FakeParser(network, None).parse(proto.SerializeToString())
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


# ---------------------------------------------------------------- tensors of unknown type

def test_a_failed_shape_inference_fails_the_build(monkeypatch):
    """Without types the policy cannot tell float nodes from integer ones: an error, not a shorter list."""
    model = handmade_flow_graph()
    del model.graph.value_info[:]
    typed = {o.name for o in model.graph.output}   # graph outputs and Constants keep their declared types
    untyped = sum(1 for n in model.graph.node if n.op_type != "Constant" and any(o not in typed for o in n.output))

    def broken(proto, *args, **kwargs):
        raise onnx.shape_inference.InferenceError("[ShapeInferenceError] simulated")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", broken)
    with pytest.raises(EngineBuildError, match=rf"shape inference failed .*simulated.*; {untyped} nodes have outputs "
                                              "of unknown type"):
        fp32_layer_names(model)
    with pytest.raises(EngineBuildError, match="shape inference failed"):
        to_mixed_precision(model, "fp16")


def test_a_kept_node_of_unknown_type_fails_the_build():
    """An op shape inference cannot type (here one from an unknown domain) among the fp32 nodes."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
             helper.make_node("LayerNormalization", ["h", "g"], ["n"], name="custom_ln", domain="com.example"),
             helper.make_node("Relu", ["n"], ["y"], name="act")]
    model = _model(nodes, [_f("x", 2, 8)], [_f("y", 2, 8)], [_w("w", 8, 8), _w("g", 8, seed=1)])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(EngineBuildError, match=r"1 nodes chosen to stay fp32 have outputs of unknown type .*custom_ln"):
        fp32_layer_names(model)

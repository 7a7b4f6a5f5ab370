"""The INT8 cpu flavour: uint8 activations with zero points, int8 weights (per channel for Conv, per tensor for
MatMul, 3-D ones included), Softmax and attention MatMuls left in float32, and the graph fusing on ONNX Runtime."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from precision_graphs import attention_model, const, cosine, exported, ranges, run, seeded_feeds, tensor, tiny_model
from segdeploy.export.passes.qdq_cpu import batchnorm_as_depthwise, quantize_cpu


def asymmetric(table):
    return lambda name: table.range(name, "minmax")


def test_cpu_layout_on_a_small_attention_graph():
    model = attention_model()
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)} for i in range(3)]
    table = ranges(model, feeds)
    quantized, report = quantize_cpu(model, asymmetric(table))
    inits = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    producers = {o: n for n in quantized.graph.node for o in n.output}
    stem = next(n for n in quantized.graph.node if n.name == "conv")
    assert stem.input[0] == "x" and stem.input[1] == "w"  # the image's 3 channels: the stem stays float
    proj = next(n for n in quantized.graph.node if n.name == "proj")
    proj_dq = producers[proj.input[1]]
    assert inits[proj_dq.input[0]].dtype == np.int8 and inits[proj_dq.input[1]].size == 1  # per tensor (3-D)
    assert inits[producers[proj.input[0]].input[2]].dtype == np.uint8  # asymmetric uint8 activations
    softmax = next(n for n in quantized.graph.node if n.name == "attn/Softmax")
    assert producers[softmax.input[0]].op_type == "MatMul"  # no Q/DQ around the Softmax: probabilities stay float
    assert all(n.op_type != "QuantizeLinear" for n in quantized.graph.node if softmax.output[0] in n.input)
    weighted = next(n for n in quantized.graph.node if n.name == "attn/MatMul_1")
    assert weighted.input[0] == softmax.output[0]
    assert report.details["quantized"] == ["proj"]
    kept = {d["node"]: d["reason"] for d in report.details["not_quantized"]}
    assert {"attn/MatMul", "attn/MatMul_1", "attn/Softmax"} <= set(kept) and "stem" in kept["conv"]
    for feed in feeds:
        assert cosine(run(model, feed), run(quantized, feed)) > 0.99


def test_conv_weights_per_output_channel_and_uint8_activations():
    model = mlp_with_prenorm()
    quantized, _ = quantize_cpu(model, asymmetric(ranges(model, [{"x": np.ones((1, 8, 16, 16), np.float32)}])))
    inits = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    producers = {o: n for n in quantized.graph.node for o in n.output}
    fc1 = next(n for n in quantized.graph.node if n.name == "fc1")
    weight_dq, activation_dq = producers[fc1.input[1]], producers[fc1.input[0]]
    assert weight_dq.op_type == "DequantizeLinear" and inits[weight_dq.input[0]].dtype == np.int8
    assert inits[weight_dq.input[1]].size == 32  # per output channel
    assert inits[activation_dq.input[2]].dtype == np.uint8


def test_keep_leaves_a_layer_in_float():
    model = attention_model()
    table = ranges(model, [{"x": np.ones((1, 3, 8, 8), np.float32)}])
    quantized, report = quantize_cpu(model, asymmetric(table), keep={"proj": "sensitive"})
    assert report.details["quantized"] == []
    assert {"node": "proj", "reason": "kept: sensitive"} in report.details["not_quantized"]


def mlp_with_prenorm():
    """x -> Conv -> Add(x) -> BatchNormalization -> Conv -> Gelu -> Conv: a pre-norm after a skip connection and a
    GELU between two quantized convolutions."""
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1], name="mixer"),
             helper.make_node("Add", ["x", "c0"], ["skip"], name="skip"),
             helper.make_node("BatchNormalization", ["skip", "gamma", "beta", "mean", "var"], ["normed"],
                              epsilon=1e-5, name="norm"),
             helper.make_node("Conv", ["normed", "w1"], ["hidden"], name="fc1"),
             helper.make_node("Gelu", ["hidden"], ["active"], name="act"),
             helper.make_node("Conv", ["active", "w2"], ["y"], name="fc2")]
    inits = [const("w0", rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2),
             const("gamma", rng.uniform(0.5, 2.0, 8).astype(np.float32)),
             const("beta", rng.standard_normal(8).astype(np.float32)),
             const("mean", rng.standard_normal(8).astype(np.float32)),
             const("var", rng.uniform(0.2, 3.0, 8).astype(np.float32)),
             const("w1", rng.standard_normal((32, 8, 1, 1)).astype(np.float32) * 0.3),
             const("w2", rng.standard_normal((8, 32, 1, 1)).astype(np.float32) * 0.2)]
    return tiny_model(nodes, [tensor("x", [1, 8, 16, 16])], [tensor("y", [1, 8, 16, 16])], inits)


def onnxruntime_ops(model, tmp_path) -> list[str]:
    """The operators ONNX Runtime runs for ``model`` after its own fusions."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]


def test_prenorm_batchnorm_becomes_the_same_map_as_a_depthwise_conv():
    model = mlp_with_prenorm()
    rewritten, count = batchnorm_as_depthwise(model, {})
    assert count == 1
    norm = next(n for n in rewritten.graph.node if n.name == "norm")
    assert norm.op_type == "Conv" and norm.output == ["normed"]  # same tensor: the calibrated range still applies
    assert next(a.i for a in norm.attribute if a.name == "group") == 8
    feed = {"x": np.random.default_rng(2).standard_normal((1, 8, 16, 16)).astype(np.float32)}
    np.testing.assert_allclose(run(rewritten, feed), run(model, feed), rtol=1e-5, atol=1e-5)
    kept, count = batchnorm_as_depthwise(model, {"norm": "sensitive"})
    assert count == 0 and [n.op_type for n in kept.graph.node].count("BatchNormalization") == 1


def test_gelu_and_prenorm_run_as_integer_kernels_on_onnxruntime(tmp_path):
    model = mlp_with_prenorm()
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 8, 16, 16)).astype(np.float32)} for i in range(4)]
    quantized, report = quantize_cpu(model, asymmetric(ranges(model, feeds)))
    ops = [n.op_type for n in quantized.graph.node]
    assert "Gelu" not in ops and "BatchNormalization" not in ops and ops.count("Sigmoid") == 1
    assert "1 GELUs as x * sigmoid(1.702 x) in integer kernels; 1 BatchNormalizations as 1x1 depthwise " \
           "convolutions" in report.notes
    fused = onnxruntime_ops(quantized, tmp_path)
    assert fused.count("QLinearConv") == 4  # mixer, norm, fc1, fc2
    assert {"QLinearSigmoid", "QLinearMul"} <= set(fused)
    assert not {"Gelu", "Sigmoid", "BatchNormalization", "Conv"} & set(fused)
    for feed in feeds:
        assert cosine(run(model, feed), run(quantized, feed)) > 0.995


def test_cgrseg_t_fuses_on_onnxruntime(tmp_path):
    import onnxruntime as ort

    model = exported("cgrseg_t")
    table = ranges(model, seeded_feeds(model, 1))
    quantized, report = quantize_cpu(model, asymmetric(table))
    assert len(report.details["quantized"]) > 100
    # what ONNX Runtime makes of it: integer convolutions, not DequantizeLinear -> float Conv
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(quantized.SerializeToString(), options, providers=["CPUExecutionProvider"])
    import onnx

    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    ops = [n.op_type for n in optimized.graph.node]
    assert ops.count("QLinearConv") > 100
    assert ops.count("Conv") + ops.count("FusedConv") < 30
    # every GELU but the float stem's runs as integer lookups; no BatchNormalization is left
    assert ops.count("Gelu") == 1 and "BatchNormalization" not in ops and ops.count("QLinearSigmoid") > 50
    types = {v.name: v.type.tensor_type.elem_type for v in quantized.graph.input}
    assert types["input"] == TensorProto.FLOAT
    feed = seeded_feeds(model, 1)[0]
    assert cosine(run(model, feed), run(quantized, feed)) > 0.98


def test_the_stem_stays_float_behind_in_graph_normalisation_and_depthwise_convs_do_not():
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Sub", ["x", "mean"], ["centred"], name="normalise/Sub"),
             helper.make_node("Conv", ["centred", "w0"], ["c0"], pads=[1, 1, 1, 1], name="stem"),
             helper.make_node("Conv", ["c0", "w1"], ["c1"], pads=[1, 1, 1, 1], group=8, name="depthwise"),
             helper.make_node("Conv", ["c1", "w2"], ["y"], name="pointwise")]
    inits = [const("mean", np.full((1, 3, 1, 1), 0.5, np.float32)),
             const("w0", rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3),
             const("w1", rng.standard_normal((8, 1, 3, 3)).astype(np.float32) * 0.3),  # 1 channel per group
             const("w2", rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3)]
    model = tiny_model(nodes, [tensor("x", [1, 3, 16, 16])], [tensor("y", [1, 8, 16, 16])], inits)
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)} for i in range(3)]
    _, report = quantize_cpu(model, asymmetric(ranges(model, feeds)))
    assert sorted(report.details["quantized"]) == ["depthwise", "pointwise"]
    assert any(d["node"] == "stem" and "stem" in d["reason"] for d in report.details["not_quantized"])

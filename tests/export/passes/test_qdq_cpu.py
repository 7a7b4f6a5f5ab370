"""The INT8 cpu flavour: uint8 activations with zero points, int8 weights (per channel for Conv, per tensor for
MatMul, 3-D ones included), Softmax and attention MatMuls left in float32, and the graph fusing on ONNX Runtime."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, numpy_helper

from precision_graphs import attention_model, cosine, exported, ranges, run, seeded_feeds
from segdeploy.export.passes.qdq_cpu import quantize_cpu


def asymmetric(table):
    return lambda name: table.range(name, "minmax")


def test_cpu_layout_on_a_small_attention_graph():
    model = attention_model()
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)} for i in range(3)]
    table = ranges(model, feeds)
    quantized, report = quantize_cpu(model, asymmetric(table))
    inits = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    producers = {o: n for n in quantized.graph.node for o in n.output}
    conv = next(n for n in quantized.graph.node if n.op_type == "Conv")
    weight_dq = producers[conv.input[1]]
    assert weight_dq.op_type == "DequantizeLinear" and inits[weight_dq.input[0]].dtype == np.int8
    assert inits[weight_dq.input[1]].size == 8  # per output channel
    activation_dq = producers[conv.input[0]]
    assert inits[activation_dq.input[2]].dtype == np.uint8  # asymmetric uint8 activations
    proj = next(n for n in quantized.graph.node if n.name == "proj")
    proj_dq = producers[proj.input[1]]
    assert inits[proj_dq.input[0]].dtype == np.int8 and inits[proj_dq.input[1]].size == 1  # per tensor (3-D)
    softmax = next(n for n in quantized.graph.node if n.name == "attn/Softmax")
    assert producers[softmax.input[0]].op_type == "MatMul"  # no Q/DQ around the Softmax: probabilities stay float
    assert all(n.op_type != "QuantizeLinear" for n in quantized.graph.node if softmax.output[0] in n.input)
    weighted = next(n for n in quantized.graph.node if n.name == "attn/MatMul_1")
    assert weighted.input[0] == softmax.output[0]
    assert sorted(report.details["quantized"]) == ["conv", "proj"]
    kept = {d["node"] for d in report.details["not_quantized"]}
    assert {"attn/MatMul", "attn/MatMul_1", "attn/Softmax"} <= kept
    for feed in feeds:
        assert cosine(run(model, feed), run(quantized, feed)) > 0.99


def test_keep_leaves_a_layer_in_float():
    model = attention_model()
    table = ranges(model, [{"x": np.ones((1, 3, 8, 8), np.float32)}])
    quantized, report = quantize_cpu(model, asymmetric(table), keep={"conv": "sensitive"})
    assert report.details["quantized"] == ["proj"]
    assert {"node": "conv", "reason": "kept: sensitive"} in report.details["not_quantized"]


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
    types = {v.name: v.type.tensor_type.elem_type for v in quantized.graph.input}
    assert types["input"] == TensorProto.FLOAT
    feed = seeded_feeds(model, 1)[0]
    assert cosine(run(model, feed), run(quantized, feed)) > 0.98

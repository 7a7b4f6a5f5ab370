"""The INT8 openvino flavour: symmetric int8 Q/DQ on the compute layers' inputs only (no QuantizeLinear after a layer),
float32 everywhere else (no float16 anywhere, any opset), the TensorRT flavour's placement rules, and OpenVINO running
the layers as integer convolutions."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from precision_graphs import attention_model, cosine, exported, ranges, run, seeded_feeds, types_of
from segdeploy.export.passes.qdq_openvino import quantize_openvino
from segdeploy.export.passes.qdq_tensorrt import placement_problems


def symmetric(table):
    return lambda name: table.range(name, "minmax", symmetric=True)


def test_openvino_layout_on_a_small_attention_graph():
    model = attention_model()
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)} for i in range(3)]
    quantized, report = quantize_openvino(model, symmetric(ranges(model, feeds)))
    inits = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    producers = {o: n for n in quantized.graph.node for o in n.output}
    conv = next(n for n in quantized.graph.node if n.op_type == "Conv")
    activation_dq, weight_dq = producers[conv.input[0]], producers[conv.input[1]]
    assert activation_dq.op_type == weight_dq.op_type == "DequantizeLinear"
    assert inits[activation_dq.input[2]].dtype == np.int8 and inits[activation_dq.input[2]] == 0  # symmetric
    assert inits[weight_dq.input[0]].dtype == np.int8 and inits[weight_dq.input[1]].size == 8  # per output channel
    proj_dq = producers[next(n for n in quantized.graph.node if n.name == "proj").input[1]]
    assert inits[proj_dq.input[1]].size == 1  # a 3-D MatMul weight: per tensor
    # the layer's output stays float: OpenVINO moves the dequantization past the layer itself
    assert all(user.op_type != "QuantizeLinear" for user in quantized.graph.node if conv.output[0] in user.input)
    assert sorted(report.details["quantized"]) == ["conv", "proj"]
    assert {"attn/MatMul", "attn/MatMul_1"} <= {d["node"] for d in report.details["not_quantized"]}
    assert TensorProto.FLOAT16 not in types_of(quantized).values()
    assert placement_problems(quantized) == []
    for feed in feeds:
        assert cosine(run(model, feed), run(quantized, feed)) > 0.99


def test_keep_leaves_a_layer_in_float32():
    model = attention_model()
    table = ranges(model, [{"x": np.ones((1, 3, 8, 8), np.float32)}])
    _, report = quantize_openvino(model, symmetric(table), keep={"conv": "sensitive"})
    assert report.details["quantized"] == ["proj"]
    assert ("conv", "kept: sensitive") in {(d["node"], d["reason"]) for d in report.details["not_quantized"]}


def test_opset_17_is_enough():
    model = exported("cgrseg_t", opset=17)
    quantized, report = quantize_openvino(model, symmetric(ranges(model, seeded_feeds(model, 1))))
    assert next(o.version for o in quantized.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert len(report.details["quantized"]) > 100 and report.details["residual_adds"]


def test_cgrseg_t_runs_int8_convolutions_on_openvino(tmp_path):
    ov = pytest.importorskip("openvino", reason="OpenVINO is an optional extra (segdeploy[openvino])")
    model = exported("cgrseg_t")
    quantized, report = quantize_openvino(model, symmetric(ranges(model, seeded_feeds(model, 1))))
    path = tmp_path / "int8.onnx"
    onnx.save(quantized, str(path))
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                          "INFERENCE_NUM_THREADS": 2})
    convolutions = collections.Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) == "Convolution":
            convolutions[info["runtimePrecision"].astype(str)] += 1
    integer = convolutions["u8"] + convolutions["i8"]
    assert integer >= 0.9 * sum(convolutions.values()), convolutions
    feed = seeded_feeds(model, 1)[0]
    request = compiled.create_infer_request()
    out = request.infer({0: feed[model.graph.input[0].name]})[compiled.outputs[0]]
    assert cosine(run(model, feed), out) > 0.98

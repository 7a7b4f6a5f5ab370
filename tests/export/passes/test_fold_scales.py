"""fold_scales: a constant per-channel Mul after a Conv becomes part of the Conv's weights, nothing else does."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from segdeploy.export.passes.fold_scales import fold_scales


def tensor(name, shape, seed=0):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def graph(scale_shape, *, bias=True, extra_consumer=False, scale_from_input=False):
    """x -> Conv(8 -> 4, 3x3) -> Mul(scale) -> Add(x0) -> y, optionally with the Conv output read elsewhere too."""
    nodes = [helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Mul", ["c", "s"], ["m"], name="scale"),
             helper.make_node("Add", ["m", "r"], ["y"], name="residual")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 5])]
    if extra_consumer:
        nodes.append(helper.make_node("Relu", ["c"], ["z"], name="other"))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 6, 5]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 5])]
    initializers = [tensor("w", [4, 8, 3, 3], 1), tensor("r", [1, 4, 6, 5], 3)] + ([tensor("b", [4], 2)] if bias
                                                                                    else [])
    if scale_from_input:
        inputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, list(scale_shape)))
    else:
        initializers.append(tensor("s", list(scale_shape), 4))
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializers),
                              opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
    onnx.checker.check_model(model)
    return model


def run(model, feed):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


@pytest.mark.parametrize("scale_shape", [(4, 1, 1), (1, 4, 1, 1), (), (1,)])
@pytest.mark.parametrize("bias", [True, False])
def test_a_channel_scale_after_a_conv_is_folded_and_computes_the_same(scale_shape, bias):
    model = graph(scale_shape, bias=bias)
    folded, report = fold_scales(model)
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Add"] and report.nodes_after == 2
    assert "1 per-channel scales folded" in report.notes[0]
    feed = {"x": np.random.default_rng(5).standard_normal((1, 8, 6, 5)).astype(np.float32)}
    np.testing.assert_allclose(run(folded, feed)[0], run(model, feed)[0], rtol=1e-5, atol=1e-5)
    assert {t.name for t in folded.graph.initializer} >= {"conv_scaled_weight", "r"}
    assert "s" not in {t.name for t in folded.graph.initializer}  # the folded scale is gone


@pytest.mark.parametrize("case", ["spatial", "shared_output", "not_constant"])
def test_anything_else_is_left_alone(case):
    model = {"spatial": lambda: graph((1, 1, 6, 5)), "shared_output": lambda: graph((4, 1, 1), extra_consumer=True),
             "not_constant": lambda: graph((4, 1, 1), scale_from_input=True)}[case]()
    folded, report = fold_scales(model)
    assert folded is model and "no per-channel scale" in report.notes[0]

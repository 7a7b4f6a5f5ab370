"""The INT8 TensorRT flavour: Q/DQ only where TensorRT fuses it (Conv/Gemm/MatMul inputs, residual skip inputs),
symmetric int8 with zero points 0, per-channel weights, per-tensor activations, float16 elsewhere; checked by the
placement rules and the TensorRT lint on every T variant, and numerically on ONNX Runtime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from precision_graphs import const, cosine, exported, ranges, run, seeded_feeds, tensor, tiny_model, types_of
from segdeploy import models
from segdeploy.errors import ArtifactError, InputError
from segdeploy.export.passes.qdq_openvino import quantize_openvino
from segdeploy.export.passes.qdq_tensorrt import placement_problems, quantize_tensorrt
from segdeploy.export.tensorrt.lint import errors, lint_model

T_VARIANTS = [name for name in models.list_models() if models.get_spec(name).variant == "T"]
# cgrseg_t in the default suite; the other T variants in the slow sweep (each export takes a while)
T_PARAMS = [name if name == "cgrseg_t" else pytest.param(name, marks=pytest.mark.slow) for name in T_VARIANTS]


def symmetric(table):
    return lambda name: table.range(name, "minmax", symmetric=True)


def residual_model():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["a"], ["skip"], name="relu"),
             helper.make_node("Conv", ["skip", "w2"], ["b"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Add", ["b", "skip"], ["sum"], name="residual"),
             helper.make_node("Reshape", ["sum", "shape"], ["tokens"], name="flat"),
             helper.make_node("Transpose", ["tokens"], ["t"], perm=[0, 2, 1], name="to_tokens"),
             helper.make_node("MatMul", ["t", "proj"], ["q"], name="proj"),
             helper.make_node("Transpose", ["q"], ["k"], perm=[0, 2, 1], name="keys"),
             helper.make_node("MatMul", ["q", "k"], ["scores"], name="attn/MatMul"),
             helper.make_node("Softmax", ["scores"], ["p"], axis=-1, name="attn/Softmax"),
             helper.make_node("MatMul", ["p", "q"], ["y"], name="attn/MatMul_1")]
    inits = [const("w1", rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3),
             const("w2", rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.1),
             const("shape", np.array([1, 8, 64], np.int64)),
             const("proj", rng.standard_normal((8, 16)).astype(np.float32) * 0.3)]
    return tiny_model(nodes, [tensor("x", [1, 3, 8, 8])], [tensor("y", [1, 64, 16])], inits)


def consumers_of_dq(model):
    producers = {o: n for n in model.graph.node for o in n.output}
    fed = {}
    for node in model.graph.node:
        for slot, name in enumerate(node.input):
            source = producers.get(name)
            if source is not None and source.op_type == "DequantizeLinear":
                fed.setdefault(node.name, []).append(slot)
    return fed


def test_placement_on_a_residual_block_with_attention():
    model = residual_model()
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)} for i in range(3)]
    table = ranges(model, feeds)
    quantized, report = quantize_tensorrt(model, symmetric(table), fp16_ranges=table.all_minmax())
    fed = consumers_of_dq(quantized)
    # both convs: activation and weight; the projection MatMul too; the residual Add on its skip input only
    assert sorted(fed["conv1"]) == [0, 1] and sorted(fed["conv2"]) == [0, 1] and sorted(fed["proj"]) == [0, 1]
    add_inputs = [n for n in quantized.graph.node if n.name == "residual"][0].input
    assert fed["residual"] == [list(add_inputs).index(next(i for i in add_inputs if "dequantized" in i))]
    assert add_inputs[0] == "b"  # the conv branch arrives unquantized (it fuses with the Add)
    # nothing in the attention core
    assert not {"attn/MatMul", "attn/MatMul_1", "attn/Softmax"} & set(fed)
    assert report.details["residual_adds"] == ["residual"]
    assert {d["node"] for d in report.details["not_quantized"]} == {"attn/MatMul", "attn/MatMul_1"}
    assert placement_problems(quantized) == []
    # symmetric int8, zero points 0, per-channel weights, per-tensor activations
    inits = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    for node in quantized.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = inits[node.input[2]]
            assert zero.dtype == np.int8 and not zero.any()
            if node.op_type == "DequantizeLinear" and inits.get(node.input[0]) is not None:
                assert inits[node.input[0]].dtype == np.int8
                axis = next((a.i for a in node.attribute if a.name == "axis"), None)
                assert inits[node.input[1]].size == inits[node.input[0]].shape[axis]
    types = types_of(quantized)
    assert types["x"] == TensorProto.FLOAT and types["y"] == TensorProto.FLOAT
    assert types["sum"] == TensorProto.FLOAT16  # everything else in float16 ...
    assert types[[n for n in quantized.graph.node if n.name == "attn/Softmax"][0].input[0]] == TensorProto.FLOAT
    assert all(types[n.input[1]] == TensorProto.FLOAT16 for n in quantized.graph.node
               if n.op_type in ("QuantizeLinear", "DequantizeLinear"))  # ... and the scales too (opset 19+)
    assert errors(lint_model(quantized, "10.3")) == [] and errors(lint_model(quantized, "11")) == []
    for feed in feeds:
        assert cosine(run(model, feed), run(quantized, feed)) > 0.995


def test_placement_problems_are_found():
    model = residual_model()
    table = ranges(model, [{"x": np.ones((1, 3, 8, 8), np.float32)}])
    quantized, _ = quantize_tensorrt(model, symmetric(table))
    for init in quantized.graph.initializer:  # a non-zero zero point, and Q/DQ feeding a Softmax
        if init.name.endswith("zero_point") and init.dims == []:
            init.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), init.name))
            break
    problems = placement_problems(quantized)
    assert any("zero point must be a constant int8 0" in p for p in problems)


@pytest.mark.parametrize("quantize", [quantize_tensorrt, quantize_openvino], ids=["tensorrt", "openvino"])
def test_the_pass_refuses_its_own_placement_when_it_breaks_the_rules(quantize, monkeypatch):
    """A fault in the Q/DQ insertion (here: a zero point of 3) is caught by the pass, not written."""
    from segdeploy.export.passes import qdq_openvino, qdq_tensorrt

    original = qdq_tensorrt.insert_qdq

    def faulty(plan):
        model = original(plan)
        zero = next(i for i in model.graph.initializer if i.name.endswith("zero_point") and i.dims == [])
        zero.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), zero.name))
        return model

    monkeypatch.setattr(qdq_tensorrt, "insert_qdq", faulty)
    monkeypatch.setattr(qdq_openvino, "insert_qdq", faulty)
    model = residual_model()
    table = ranges(model, [{"x": np.ones((1, 3, 8, 8), np.float32)}])
    with pytest.raises(ArtifactError, match="placed Q/DQ where TensorRT's rules do not allow it .* zero point must"):
        quantize(model, symmetric(table))


def test_keep_and_opset_and_missing_ranges():
    model = residual_model()
    table = ranges(model, [{"x": np.ones((1, 3, 8, 8), np.float32)}])
    quantized, report = quantize_tensorrt(model, symmetric(table), keep={"conv2": "sensitive"})
    assert "conv2" not in consumers_of_dq(quantized)
    assert {"node": "conv2", "reason": "kept: sensitive"} in report.details["not_quantized"]
    quantized, report = quantize_tensorrt(model, lambda name: None)
    assert report.details["quantized"] == [] and placement_problems(quantized) == []
    with pytest.raises(InputError, match="opset 19 or newer"):
        quantize_tensorrt(tiny_model(list(residual_model().graph.node), list(residual_model().graph.input),
                                     list(residual_model().graph.output), list(residual_model().graph.initializer),
                                     opset=17), symmetric(table))


@pytest.mark.parametrize("name", T_PARAMS)
def test_every_t_variant_follows_the_tensorrt_rules(name):
    model = exported(name)
    table = ranges(model, seeded_feeds(model, 1))
    quantized, report = quantize_tensorrt(model, symmetric(table), fp16_ranges=table.all_minmax())
    assert len(report.details["quantized"]) > 20
    assert placement_problems(quantized) == []
    for version in ("10.3", "11"):
        assert [f.line() for f in errors(lint_model(quantized, version))] == []
    feed = seeded_feeds(model, 1)[0]
    # recipe weights: near-tied logits, so only the direction of the logits is checked here (accuracy is judged on
    # the trained fixtures)
    assert cosine(run(model, feed), run(quantized, feed)) > 0.98


def test_conv_transpose_weights_are_scaled_per_output_channel():
    """ConvTranspose's weight is (C_in, C_out/g, kH, kW): per-channel scales go along axis 1 (C_out), as TensorRT
    and the lint expect, and dequantize back to the weight."""
    rng = np.random.default_rng(3)
    spread = np.arange(1, 7, dtype=np.float32)[None, :, None, None]  # each output channel its own range
    weight = rng.standard_normal((4, 6, 2, 2)).astype(np.float32) * spread
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], name="up")]
    model = tiny_model(nodes, [tensor("x", [1, 4, 8, 8])], [tensor("y", [1, 6, 16, 16])], [const("w", weight)])
    feeds = [{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(2)]
    table = ranges(model, feeds)
    quantized, _ = quantize_tensorrt(model, symmetric(table), fp16_ranges=table.all_minmax())
    inits = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    producers = {o: n for n in quantized.graph.node for o in n.output}
    (layer,) = [n for n in quantized.graph.node if n.op_type == "ConvTranspose"]
    dq = producers[layer.input[1]]
    axis = next(a.i for a in dq.attribute if a.name == "axis")
    scales, q = inits[dq.input[1]], inits[producers[dq.input[0]].input[0]] if dq.input[0] not in inits else \
        inits[dq.input[0]]
    assert axis == 1 and scales.shape == (6,)
    np.testing.assert_allclose(q.astype(np.float32) * scales.reshape(1, 6, 1, 1), weight, atol=scales.max() / 2)
    assert not errors(lint_model(quantized, "10.3"))

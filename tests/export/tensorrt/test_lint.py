"""The TensorRT lint on small crafted graphs: each rule fires on the graph it describes, names the node, and stays
quiet on the forms TensorRT accepts."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from segdeploy.errors import SegdeployError
from segdeploy.export.tensorrt.lint import ERROR, WARNING, errors, lint_model, parse_target

F, H, U8, I64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8, TensorProto.INT64


def model(nodes, inputs, outputs, initializers=(), opset=17, value_info=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers), value_info=list(value_info))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def rules(findings):
    return sorted({f.rule for f in findings})


def relu_model(opset=17):
    return model([helper.make_node("Relu", ["x"], ["y"], name="act")], [vi("x", F, [1, 3, 8, 8])],
                 [vi("y", F, [1, 3, 8, 8])], opset=opset)


def test_clean_graph_has_no_findings():
    assert lint_model(relu_model(), "10.3") == []


@pytest.mark.parametrize("opset, version, bad", [(20, "10.3", False), (21, "10.3", True), (8, "10.3", True),
                                                 (21, "10.8", True), (22, "10.9", False), (22, "10.16.1.11", False),
                                                 (23, "10.16", True), (24, "11", False), (25, "11.4", True),
                                                 (25, "11.5", False)])
def test_opset_range_per_release(opset, version, bad):
    findings = lint_model(relu_model(opset), version)
    assert ("opset-range" in rules(findings)) == bad
    if bad:
        assert "outside TensorRT" in findings[0].message and findings[0].node == "(model)"


def test_an_input_nothing_produces_is_an_error():
    """A weight lost in editing: the parser stops at the first node that reads a tensor no one defines."""
    m = model([helper.make_node("Add", ["x", "bias"], ["y"], name="add"), helper.make_node("Relu", ["y"], ["z"])],
              [vi("x", F, [1, 3])], [vi("z", F, [1, 3])])
    (finding,) = lint_model(m, "10.3")
    assert (finding.rule, finding.severity, finding.node) == ("dangling-input", ERROR, "add")
    assert "'bias'" in finding.message
    m.graph.initializer.append(const("bias", np.zeros((1, 3), np.float32)))
    assert lint_model(m, "10.3") == []


def test_unsupported_and_unknown_ops_name_the_node():
    m = model([helper.make_node("Unique", ["x"], ["y"], name="uniq"),
               helper.make_node("Relu", ["y"], ["z"], name="r")],
              [vi("x", F, [4])], [vi("z", F, None)])
    (finding,) = [f for f in lint_model(m, "10.3") if f.rule == "unsupported-op"]
    assert (finding.node, finding.op, finding.severity) == ("uniq", "Unique", ERROR)


def test_op_added_in_a_later_release():
    m = model([helper.make_node("DFT", ["x"], ["y"], name="fft")], [vi("x", F, [1, 8, 1])], [vi("y", F, None)],
              opset=20)
    assert "unsupported-op" in rules(lint_model(m, "10.3"))
    assert "unsupported-op" not in rules(lint_model(m, "11.2"))


def test_custom_domain_op():
    m = model([helper.make_node("FusedConv", ["x"], ["y"], name="fused", domain="com.microsoft")],
              [vi("x", F, [1])], [vi("y", F, [1])])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert [f.node for f in lint_model(m) if f.rule == "custom-op"] == ["fused"]


def resize_model(mode, scales, **attrs):
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode=mode, **attrs)]
    return model(nodes, [vi("x", F, [1, 3, 8, 8])], [vi("y", F, None)], [const("scales", np.float32(scales))])


def test_cubic_resize_only_on_two_innermost_axes():
    assert lint_model(resize_model("cubic", [1, 1, 2, 2])) == []
    (finding,) = lint_model(resize_model("cubic", [1, 2, 2, 2]))
    assert (finding.rule, finding.node, finding.severity) == ("resize-cubic-axes", "up", ERROR)
    assert "axis [1]" in finding.message


def test_linear_resize_three_innermost_axes():
    assert lint_model(resize_model("linear", [1, 2, 2, 2])) == []
    assert rules(lint_model(resize_model("linear", [2, 1, 2, 2]))) == ["resize-linear-axes"]


def test_cubic_resize_from_sizes_over_a_static_input():
    nodes = [helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="up", mode="cubic")]
    m = model(nodes, [vi("x", F, [1, 3, 8, 8])], [vi("y", F, None)], [const("sizes", np.int64([1, 6, 16, 16]))])
    assert rules(lint_model(m)) == ["resize-cubic-axes"]


def test_cubic_resize_with_runtime_sizes_is_a_warning():
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Resize", ["x", "", "", "s"], ["y"], name="up", mode="cubic")]
    m = model(nodes, [vi("x", F, ["n", 3, "h", "w"])], [vi("y", F, None)])
    (finding,) = lint_model(m)
    assert (finding.rule, finding.severity) == ("resize-cubic-axes", WARNING)


def test_resize_attributes_the_importer_refuses():
    m = resize_model("linear", [1, 1, 2, 2], antialias=1, coordinate_transformation_mode="tf_crop_and_resize")
    m.opset_import[0].version = 18
    assert rules(lint_model(m)) == ["resize-antialias", "resize-coordinates"]


def test_scatternd_reduction():
    def scatter(**attrs):
        node = helper.make_node("ScatterND", ["x", "idx", "upd"], ["y"], name="sc", **attrs)
        return model([node], [vi("x", F, [4]), vi("idx", I64, [1, 1]), vi("upd", F, [1])], [vi("y", F, [4])],
                     opset=18)

    assert lint_model(scatter()) == []
    (finding,) = lint_model(scatter(reduction="add"))
    assert (finding.rule, finding.node) == ("scatternd-reduction", "sc")


def test_uint8_at_the_boundary_is_fine_inside_is_not():
    boundary = model([helper.make_node("Cast", ["img"], ["f"], name="to_float", to=F),
                      helper.make_node("Relu", ["f"], ["y"], name="r")],
                     [vi("img", U8, [1, 8, 8, 3])], [vi("y", F, [1, 8, 8, 3])])
    assert lint_model(boundary) == []
    inside = model([helper.make_node("Cast", ["x"], ["q"], name="to_u8", to=U8),
                    helper.make_node("Cast", ["q"], ["y"], name="back", to=F)],
                   [vi("x", F, [4])], [vi("y", F, [4])])
    assert [(f.rule, f.node) for f in lint_model(inside)] == [("uint8-inside", "to_u8")]


def test_uint8_cast_from_int64_and_transpose_of_uint8():
    m = model([helper.make_node("ArgMax", ["x"], ["a"], name="argmax", axis=1, keepdims=0),
               helper.make_node("Cast", ["a"], ["mask"], name="to_mask", to=U8)],
              [vi("x", F, [1, 4, 8, 8])], [vi("mask", U8, [1, 8, 8])])
    assert [(f.rule, f.node) for f in lint_model(m)] == [("uint8-cast", "to_mask")]
    t = model([helper.make_node("Transpose", ["img"], ["chw"], name="hwc_to_chw", perm=[0, 3, 1, 2]),
               helper.make_node("Cast", ["chw"], ["y"], name="to_float", to=F)],
              [vi("img", U8, [1, 8, 8, 3])], [vi("y", F, [1, 3, 8, 8])])
    assert rules(lint_model(t)) == ["transpose-uint8", "uint8-inside"]
    assert {f.node for f in lint_model(t)} == {"hwc_to_chw"}


def qdq_model(*, act_scale=0.1, act_zero=None, weight_scale=(0.1, 0.2), opset=17, scale_dtype=np.float32,
              dynamic_scale=False):
    """x -Q/DQ-> Conv <- DQ(weights int8): the placement ModelOpt uses."""
    inits = [const("w_q", np.ones((2, 3, 1, 1), np.int8)), const("w_s", scale_dtype(weight_scale)),
             const("w", np.ones((2, 3, 1, 1), np.float32))]
    q_inputs = ["x", "a_s"] + (["a_z"] if act_zero is not None else [])
    nodes = [helper.make_node("QuantizeLinear", q_inputs, ["xq"], name="q_act"),
             helper.make_node("DequantizeLinear", ["xq", "a_s"] + q_inputs[2:], ["xd"], name="dq_act"),
             helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["wd"], name="dq_w", axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv")]
    if dynamic_scale:
        nodes.insert(0, helper.make_node("ReduceMax", ["x"], ["a_s"], name="amax", keepdims=0))
    else:
        inits.append(const("a_s", scale_dtype(act_scale)))
    if act_zero is not None:
        inits.append(const("a_z", np.asarray(act_zero)))
    elem = H if scale_dtype is np.float16 else F
    return model(nodes, [vi("x", elem, [1, 3, 4, 4])], [vi("y", elem, None)], inits, opset=opset)


def test_symmetric_qdq_with_per_channel_weights_is_clean():
    assert lint_model(qdq_model()) == []


@pytest.mark.parametrize("op, axis, bad", [("Conv", 0, False), ("Conv", 1, True), ("ConvTranspose", 1, False),
                                           ("ConvTranspose", 0, True)])
def test_per_channel_weight_scales_follow_the_output_channels(op, axis, bad):
    """ConvTranspose's weight is (C_in, C_out/g, kH, kW): its output channels are axis 1."""
    shape = (3, 2, 1, 1) if op == "ConvTranspose" else (2, 3, 1, 1)
    inits = [const("w_q", np.ones(shape, np.int8)), const("w_s", np.full(shape[axis], 0.1, np.float32))]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["wd"], name="dq_w", axis=axis),
             helper.make_node(op, ["x", "wd"], ["y"], name="layer")]
    findings = lint_model(model(nodes, [vi("x", F, [1, 3, 4, 4])], [vi("y", F, None)], inits))
    assert ("qdq-weight-axis" in rules(findings)) == bad


def test_qdq_rules():
    assert rules(lint_model(qdq_model(act_zero=np.int8(3)))) == ["qdq-zero-point"]
    uint8 = lint_model(qdq_model(act_zero=np.uint8(0)))  # TensorRT refuses UINT8 zero points: an error
    assert {(f.rule, f.severity) for f in uint8} == {("qdq-uint8", ERROR)} and len(uint8) == 2
    assert {f.node for f in lint_model(qdq_model(act_zero=np.uint8(128)))} == {"q_act", "dq_act"}
    assert rules(lint_model(qdq_model(act_scale=0.0))) == ["qdq-scale-positive"]
    assert rules(lint_model(qdq_model(act_scale=[0.1, 0.2, 0.3]))) == ["qdq-per-axis-activation"]
    assert rules(lint_model(qdq_model(dynamic_scale=True))) == ["qdq-scale-constant"]


def test_float16_qdq_needs_opset_19():
    assert rules(lint_model(qdq_model(scale_dtype=np.float16, opset=17))) == ["qdq-float16-opset"]
    assert lint_model(qdq_model(scale_dtype=np.float16, opset=19)) == []


def test_errors_come_first_and_target_versions_are_checked():
    m = model([helper.make_node("Cast", ["x"], ["d"], name="to_double", to=TensorProto.DOUBLE),
               helper.make_node("Unique", ["d"], ["y"], name="uniq")], [vi("x", F, [4])], [vi("y", F, None)])
    findings = lint_model(m)
    assert [f.severity for f in findings] == [ERROR, WARNING] and errors(findings)[0].node == "uniq"
    assert parse_target("10.3") == (10, 3) and parse_target("11") == (11,)
    with pytest.raises(SegdeployError, match="TensorRT 10 or 11"):
        parse_target("8.6")


def test_lint_cli(tmp_path, capsys):
    from segdeploy.cli import main

    path = tmp_path / "m.onnx"
    onnx.save(resize_model("cubic", [1, 2, 2, 2]), path)
    assert main(["lint-trt", str(path), "--trt-version", "10.3"]) == 1
    assert "1 error, 0 warnings" in capsys.readouterr().out
    assert main(["lint-trt", str(path), "--json", "-"]) == 1
    (finding,) = json.loads(capsys.readouterr().out)
    assert (finding["node"], finding["op"], finding["rule"]) == ("up", "Resize", "resize-cubic-axes")
    onnx.save(relu_model(), path)
    assert main(["lint-trt", str(path)]) == 0
    assert main(["lint-trt", str(tmp_path / "missing.onnx")]) == 2
    assert "error:" in capsys.readouterr().err

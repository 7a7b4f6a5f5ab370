"""The float16 pass: float16 weights and activations, float32 islands by operator, guarded division, coordinate
arithmetic and range, float32 I/O unless asked, and the numbers of the result on ONNX Runtime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from precision_graphs import (
    const,
    conv_softmax_model,
    cosine,
    exported,
    node_by_name,
    ranges,
    run,
    seeded_feeds,
    tensor,
    tiny_model,
    types_of,
)
from segdeploy.errors import ArtifactError
from segdeploy.export.passes.fp16 import float16

F16, F32 = TensorProto.FLOAT16, TensorProto.FLOAT


def input_types(model, node):
    types = types_of(model)
    return [types.get(name) for name in node.input if name]


def test_softmax_island_keeps_io_float32_and_inserts_casts():
    model = conv_softmax_model()
    converted, report = float16(model)
    types = types_of(converted)
    assert types["x"] == F32 and types["y"] == F32  # the I/O contract does not change
    assert types["c"] == F16  # the Conv runs in float16 ...
    assert input_types(converted, node_by_name(converted, "softmax")) == [F32]  # ... the Softmax in float32
    assert input_types(converted, node_by_name(converted, "reshape"))[0] == F32  # movement follows its input
    assert [t.data_type for t in converted.graph.initializer if t.name == "w"] == [F16]
    island = report.details["islands"]
    assert island == [{"reason": "op: Softmax input (float16 logits flatten small probabilities)",
                       "nodes": ["softmax"]}]
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run(converted, {"x": x}), run(model, {"x": x}), rtol=0, atol=5e-3)


def test_float16_io_on_request():
    converted, _ = float16(conv_softmax_model(), io_dtype="float16")
    types = types_of(converted)
    assert types["x"] == F16 and types["y"] == F16
    out = run(converted, {"x": np.ones((1, 3, 8, 8), np.float16)})
    assert out.dtype == np.float16


def test_overflowing_tensor_keeps_its_producer_and_consumers_in_float32():
    nodes = [helper.make_node("Mul", ["x", "big"], ["m"], name="blow_up"),
             helper.make_node("Add", ["m", "one"], ["a"], name="use"),
             helper.make_node("Mul", ["a", "tiny"], ["y"], name="shrink"),
             helper.make_node("Relu", ["x"], ["z"], name="other")]
    inits = [const("big", np.float32(1e5)), const("one", np.float32(1.0)), const("tiny", np.float32(1e-5))]
    model = tiny_model(nodes, [tensor("x", [4])], [tensor("y", [4]), tensor("z", [4])], inits)
    table = {"x": (-1.0, 1.0), "m": (-1e5, 1e5), "a": (-1e5, 1e5), "y": (-1.0, 1.0), "z": (0.0, 1.0)}
    converted, report = float16(model, ranges=table)
    reasons = {n: isl["reason"] for isl in report.details["islands"] for n in isl["nodes"]}
    assert set(reasons) == {"blow_up", "use", "shrink"}
    assert "reaches 1e+05" in reasons["use"]
    x = np.array([-1, -0.5, 0.5, 1], np.float32)
    expected = (x * 1e5 + 1) * 1e-5
    np.testing.assert_allclose(run(converted, {"x": x}), expected, rtol=1e-6)
    # without the ranges the same graph is wrong: 1e5 does not fit float16 (clipped to 65504, and said so)
    unsafe, unsafe_report = float16(model)
    assert any("clipped" in note for note in unsafe_report.notes)
    assert not np.allclose(run(unsafe, {"x": x}), expected, rtol=0.05)


def test_coordinate_arithmetic_stays_float32():
    nodes = [helper.make_node("Mul", ["x", "scale"], ["pos"], name="to_pixels"),
             helper.make_node("Floor", ["pos"], ["floor"], name="floor"),
             helper.make_node("Sub", ["pos", "floor"], ["frac"], name="weight"),
             helper.make_node("Cast", ["floor"], ["index"], to=TensorProto.INT64, name="index"),
             helper.make_node("Gather", ["table", "index"], ["g"], axis=0, name="gather"),
             helper.make_node("Mul", ["g", "frac"], ["y"], name="blend")]
    table = np.linspace(0, 1, 512, dtype=np.float32)
    model = tiny_model(nodes, [tensor("x", [16])], [tensor("y", [16])],
                       [const("scale", np.float32(500.0)), const("table", table)])
    converted, report = float16(model)
    kept = {n for isl in report.details["islands"] for n in isl["nodes"]}
    assert {"to_pixels", "floor", "weight", "index"} <= kept
    x = np.random.default_rng(0).uniform(0, 1, 16).astype(np.float32)
    reference = run(model, {"x": x})
    np.testing.assert_allclose(run(converted, {"x": x}), reference, atol=2e-3)


def test_guarded_division_keeps_its_module_scope():
    nodes = [helper.make_node("MatMul", ["x", "b"], ["num"], name="/head/nmf/MatMul"),
             helper.make_node("Add", ["num", "eps"], ["den"], name="/head/nmf/Add"),
             helper.make_node("Mul", ["x", "x"], ["sq"], name="/head/nmf/Mul"),
             helper.make_node("Div", ["sq", "den"], ["y"], name="/head/nmf/Div"),
             helper.make_node("Relu", ["y"], ["z"], name="/head/out/Relu")]
    model = tiny_model(nodes, [tensor("x", [4, 4])], [tensor("z", [4, 4])],
                       [const("b", np.eye(4, dtype=np.float32)), const("eps", np.float32(1e-6))])
    _, report = float16(model)
    [island] = report.details["islands"]
    assert island["reason"].startswith("guarded division by (y + 1e-06) in /head/nmf/")
    assert sorted(island["nodes"]) == ["/head/nmf/Add", "/head/nmf/Div", "/head/nmf/MatMul", "/head/nmf/Mul"]


def test_bad_options_are_refused():
    with pytest.raises(ArtifactError, match="io_dtype"):
        float16(conv_softmax_model(), io_dtype="bfloat16")
    with pytest.raises(ArtifactError, match="overflow limit"):
        float16(conv_softmax_model(), overflow=1e6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cgrseg_t", "segnext_t"])
def test_registered_models_convert_and_agree(name):
    model = exported(name)
    table = ranges(model)
    converted, report = float16(model, ranges=table.all_minmax())
    types = types_of(converted)
    ops = {n.op_type for n in converted.graph.node}
    assert "Cast" in ops
    # every normalisation and Softmax computes in float32, every Conv in float16
    for node in converted.graph.node:
        if node.op_type in ("Softmax", "LayerNormalization", "InstanceNormalization", "ReduceMean"):
            assert types[node.input[0]] == F32, node.name
        if node.op_type == "Conv":
            assert types[node.input[1]] == F16, node.name
    if name == "segnext_t":  # SegNeXt's NMF iterations are one float32 island
        nmf = [n for n in converted.graph.node if "/hamburger/ham/" in n.name and n.op_type in ("MatMul", "Div")]
        assert nmf and all(types[n.output[0]] == F32 for n in nmf)
        assert any("guarded division" in isl["reason"] for isl in report.details["islands"])
    size16 = sum(t.ByteSize() for t in converted.graph.initializer)
    size32 = sum(t.ByteSize() for t in model.graph.initializer)
    assert size16 < 0.6 * size32
    for feed in seeded_feeds(model, 2):
        reference, result = run(model, feed), run(converted, feed)
        assert result.dtype == np.float32
        assert cosine(reference, result) > 0.9999
        assert (reference.argmax(1) == result.argmax(1)).mean() > 0.995


def test_a_written_out_group_norm_stays_float32_as_one_island():
    """The families' export form of GroupNorm is elementwise operators around two mean reductions; the squared
    deviations overflow float16 and its sums lose the small terms, so its whole scope stays float32, and only it."""
    import io

    import onnx
    import torch

    from segdeploy.models.layers import GroupNorm

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(8, 16, 3, padding=1)
            self.gn = GroupNorm(4, 16)
            self.gn.written_out = True

        def forward(self, x):
            return self.gn(self.conv(x)).relu()

    buffer = io.BytesIO()
    torch.onnx.export(Block().eval(), (torch.randn(1, 8, 10, 12),), buffer, opset_version=17, dynamo=False)
    model = onnx.load_from_string(buffer.getvalue())
    assert not any(n.op_type in ("InstanceNormalization", "Reshape") for n in model.graph.node)
    converted, report = float16(model)
    islands = [i for i in report.details["islands"] if i["reason"].startswith("normalisation written out in gn")]
    assert len(islands) == 1
    scope_nodes = {n.name for n in model.graph.node if n.name.startswith("/gn/")}
    ruled = {name for i in report.details["islands"] for name in i["nodes"]}
    assert scope_nodes <= ruled and not any(name.startswith("/conv/") for name in ruled)
    types = types_of(converted)
    for node in converted.graph.node:
        if node.name.startswith("/gn/") and node.op_type in ("Sub", "Mul", "Div"):
            assert types[node.output[0]] == F32, node.name
        if node.op_type == "Conv" and node.name.startswith("/conv/"):
            assert types[node.input[1]] == F16, node.name

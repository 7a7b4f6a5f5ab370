"""The attention core that no INT8 flavour quantizes: the score MatMul, the Softmax and the MatMul applying the
weights, but not the projections around them."""
from __future__ import annotations

import numpy as np
from onnx import helper

from precision_graphs import const, exported, tensor, tiny_model
from segdeploy.export.passes.graph_index import GraphIndex
from segdeploy.export.passes.qdq_tensorrt import quantizable_layers
from segdeploy.export.passes.quant_rules import attention_core
from segdeploy.export.precision import family_float_nodes
from segdeploy.models import get_spec


def core_names(model) -> set[str]:
    index = GraphIndex(model)
    core = attention_core(index)
    return {node.name for node in index.nodes if id(node) in core}


def tokens(prefix: str = "") -> list:
    return [helper.make_node("Reshape", ["x", "shape"], ["flat"], name=f"{prefix}flat"),
            helper.make_node("Transpose", ["flat"], ["feats"], perm=[0, 2, 1], name=f"{prefix}to_tokens")]


def weights(rng, **shapes) -> list:
    return [const("shape", np.array([1, 8, 16], np.int64))] + [
        const(name, rng.standard_normal(shape).astype(np.float32)) for name, shape in shapes.items()]


def test_self_attention_core_is_the_two_activation_matmuls_and_the_softmax():
    rng = np.random.default_rng(0)
    nodes = tokens() + [
        helper.make_node("MatMul", ["feats", "wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["feats", "wk"], ["k"], name="k_proj"),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="keys"),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="attn/MatMul"),
        helper.make_node("Softmax", ["scores"], ["p"], axis=-1, name="attn/Softmax"),
        helper.make_node("MatMul", ["p", "q"], ["applied"], name="attn/MatMul_1"),
        helper.make_node("MatMul", ["applied", "wo"], ["y"], name="out_proj")]
    model = tiny_model(nodes, [tensor("x", [1, 8, 4, 4])], [tensor("y", [1, 16, 8])],
                       weights(rng, wq=(8, 8), wk=(8, 8), wo=(8, 8)))
    assert core_names(model) == {"attn/MatMul", "attn/Softmax", "attn/MatMul_1"}


def test_weights_applied_to_constant_tokens_end_the_core_before_the_projection():
    """OffSeg's pixel branch: scores against the class tokens, Softmax, the weights applied to the same constant
    tokens, then a projection. The projection and the score MatMul are layers with constant weights."""
    rng = np.random.default_rng(1)
    nodes = tokens() + [
        helper.make_node("MatMul", ["feats", "classes_t"], ["scores"], name="scores"),
        helper.make_node("Softmax", ["scores"], ["p"], axis=-1, name="Softmax"),
        helper.make_node("MatMul", ["p", "classes"], ["applied"], name="apply"),
        helper.make_node("MatMul", ["applied", "w"], ["offset"], name="feat_offset_proj"),
        helper.make_node("Add", ["feats", "offset"], ["y"], name="shift")]
    model = tiny_model(nodes, [tensor("x", [1, 8, 4, 4])], [tensor("y", [1, 16, 8])],
                       weights(rng, classes_t=(8, 4), classes=(4, 8), w=(8, 8)))
    assert core_names(model) == {"Softmax", "apply"}


def test_offseg_quantizes_the_weight_products_of_its_offset_learning():
    """The export form (channels-first): the scores against the class tokens and the pixel branch's shift (the
    projection folded into the tokens) are 1x1 convolutions, the class branch's projection a weight MatMul; the
    products of two activations are not quantized."""
    model = exported("offseg_t", 64)
    keep = family_float_nodes(model, get_spec("offseg_t").int8_float_modules, "tensorrt")
    layers, skipped = quantizable_layers(GraphIndex(model), keep)
    head = "/model/decode_head/offset_learning/"
    quantized = {node.name for node, *_ in layers if node.name.startswith(head)}
    assert quantized == {head + "Conv", head + "Conv_1", head + "cls_offset_proj/MatMul"}
    # the channel sums of the written-out softmax and LayerNorm are 1x1 convolutions the family keeps float
    assert {name for name, why in skipped if "/class_" in name and why.startswith("kept")} >= {
        head + "class_softmax/Conv", head + "class_norm/Conv", head + "class_norm/Conv_1"}
    core = {name: why for name, why in skipped if name.startswith(head) and "/class_" not in name}
    assert core == {head + "MatMul": f"attention core around {head}Softmax",
                    head + "MatMul_2": "MatMul of two activations (attention-like)"}

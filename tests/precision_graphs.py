"""Graphs for the precision tests: small hand-made ONNX models that isolate one rule, FP32 exports of registered
models (traced and simplified, not verified: the precision tests compare against the FP32 graph), ranges from a
reference run, and ONNX Runtime helpers."""
from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from segdeploy.export.precision.calibrate import collect
from segdeploy.export.trace import build_onnx
from segdeploy.models.deploy import build_deploy_graph

SIZE = 256


def tensor(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def tiny_model(nodes, inputs, outputs, initializers=(), opset: int = 20) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def conv_softmax_model():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Softmax", ["c"], ["s"], axis=1, name="softmax"),
             helper.make_node("Reshape", ["s", "shape"], ["r"], name="reshape"),
             helper.make_node("Mul", ["r", "k"], ["y"], name="scale")]
    inits = [const("w", np.random.default_rng(0).standard_normal((4, 3, 1, 1)).astype(np.float32)),
             const("shape", np.array([1, 4, 64], np.int64)), const("k", np.float32(2.0))]
    return tiny_model(nodes, [tensor("x", [1, 3, 8, 8])], [tensor("y", [1, 4, 64])], inits)


@functools.lru_cache(maxsize=4)
def attention_model():
    """Conv -> tokens -> a 3-D constant projection -> single-head self-attention (score MatMul, Softmax, MatMul)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "shape"], ["tokens"], name="flat"),
             helper.make_node("Transpose", ["tokens"], ["t"], perm=[0, 2, 1], name="to_tokens"),
             helper.make_node("MatMul", ["t", "proj"], ["q"], name="proj"),  # 3-D constant weight
             helper.make_node("Transpose", ["q"], ["k"], perm=[0, 2, 1], name="keys"),
             helper.make_node("MatMul", ["q", "k"], ["scores"], name="attn/MatMul"),
             helper.make_node("Softmax", ["scores"], ["p"], axis=-1, name="attn/Softmax"),
             helper.make_node("MatMul", ["p", "q"], ["y"], name="attn/MatMul_1")]
    inits = [const("w", rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3),
             const("shape", np.array([1, 8, 64], np.int64)),
             const("proj", rng.standard_normal((1, 8, 16)).astype(np.float32) * 0.3)]
    return tiny_model(nodes, [tensor("x", [1, 3, 8, 8])], [tensor("y", [1, 64, 16])], inits)


def _exported(name: str, size: int, opset: int) -> bytes:
    graph, _ = build_deploy_graph(name)
    model, _ = build_onnx(graph, 1, size, size, opset=opset)
    return model.SerializeToString()


def exported(name: str, size: int = SIZE, opset: int = 20) -> onnx.ModelProto:
    """``name``'s FP32 graph (recipe weights) at size x size, traced and simplified once per session."""
    return onnx.load_from_string(_exported(name, size, opset))


def seeded_feeds(model: onnx.ModelProto, count: int = 2) -> list[dict]:
    from segdeploy import recipe

    info = model.graph.input[0]
    shape = [d.dim_value for d in info.type.tensor_type.shape.dim]
    return [{info.name: recipe.seeded_input(tuple(shape), seed).astype(np.float32)} for seed in range(count)]


def ranges(model: onnx.ModelProto, feeds=None):
    feeds = feeds or seeded_feeds(model)
    return collect(model, iter(feeds), total=len(feeds), threads=2)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    return session(model).run(None, feed)[0]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def types_of(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.input,
                                                           *inferred.graph.output)}
    out.update({t.name: t.data_type for t in inferred.graph.initializer})
    return out


def node_by_name(model: onnx.ModelProto, name: str):
    return next(n for n in model.graph.node if n.name == name)

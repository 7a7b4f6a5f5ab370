"""Small ONNX graphs whose node names carry module scopes as the exporter writes them, for the profiler's tests."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tensor(name, shape, seed):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def scoped_graph(path) -> str:
    """conv (8->16, 3x3) -> Gelu -> conv (16->16, 1x1, 4 groups) -> GAP -> Gemm, named as the exporter names nodes."""
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1],
                         name="/model/backbone/stage.0/stage.0.0/conv/Conv"),
        helper.make_node("Gelu", ["c1"], ["g1"], name="/model/backbone/stage.0/stage.0.0/act/Gelu"),
        helper.make_node("Conv", ["g1", "w2"], ["c2"], group=4, name="/model/backbone/stage.1/proj/Conv"),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="/model/decode_head/GlobalAveragePool"),
        helper.make_node("Flatten", ["p"], ["f"], name="/model/decode_head/Flatten"),
        helper.make_node("Gemm", ["f", "w3"], ["logits"], transB=1, name="/model/decode_head/cls/Gemm"),
    ]
    graph = helper.make_graph(nodes, "scoped", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                             [1, 8, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
                              [tensor("w1", [16, 8, 3, 3], 1), tensor("b1", [16], 2), tensor("w2", [16, 4, 1, 1], 3),
                               tensor("w3", [10, 16], 4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


SCOPED_FLOPS = {"/model/backbone/stage.0/stage.0.0/conv/Conv": 2 * 16 * 32 * 32 * 8 * 9,
                "/model/backbone/stage.1/proj/Conv": 2 * 16 * 32 * 32 * 4, "/model/decode_head/cls/Gemm": 2 * 10 * 16}

"""FLOPs per node of an ONNX graph, counted as segdeploy.models.complexity counts a model's: 2 FLOPs per
multiply-accumulate of convolutions, matrix products and fully connected layers (their quantized forms included);
element-wise work, normalisations, pooling, resizes and softmax are not counted. Shapes come from ONNX shape
inference at the size profiled, so an artifact with dynamic axes is counted at that size."""
from __future__ import annotations

import math

import onnx

from segdeploy.evaluation.bench.papers import FLOPS_PER_MAC

# op -> (index of the activation input, of the weight input) for the ops that multiply-accumulate
CONVOLUTIONS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3), "ConvTranspose": (0, 1)}
PRODUCTS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "Gemm": (0, 1),
            "FusedMatMul": (0, 1)}


def _shape(value_info) -> tuple | None:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
    return dims if all(isinstance(d, int) and d > 0 for d in dims) else None


def _with_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for value in copy.graph.input:
        if value.name in shapes:
            for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name]):
                dim.Clear()
                dim.dim_value = int(size)
    return copy


def node_flops(model: onnx.ModelProto, input_shapes: dict[str, tuple] | None = None) -> dict[str, int | None]:
    """node name -> FLOPs of one forward at ``input_shapes`` (the graph's own static shapes when None), for the
    nodes that multiply-accumulate; None where shape inference could not resolve a shape."""
    counted = [n for n in model.graph.node if n.op_type in CONVOLUTIONS or n.op_type in PRODUCTS]
    if not counted:
        return {}
    proto = _with_input_shapes(model, input_shapes or {})
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # a graph the checker dislikes still runs; count what the stored shapes give
        inferred = proto
    shapes = {}
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        shape = _shape(value)
        if shape is not None:
            shapes[value.name] = shape
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return {node.name: _flops(node, shapes) for node in counted}


def _flops(node, shapes) -> int | None:
    if node.op_type in CONVOLUTIONS:
        _, w = CONVOLUTIONS[node.op_type]
        weight = shapes.get(node.input[w]) if len(node.input) > w else None
        out = shapes.get(node.output[0])
        if weight is None or out is None or len(weight) < 3:
            return None
        if node.op_type == "ConvTranspose":  # each input element scatters a (Cout/g x kernel) patch; W (Cin, Cout/g, k)
            source = shapes.get(node.input[0])
            if source is None:
                return None
            return FLOPS_PER_MAC * math.prod(source) * weight[1] * math.prod(weight[2:])
        # each output element sums Cin/g x kernel products; the weight holds (Cout, Cin/g, k...)
        return FLOPS_PER_MAC * math.prod(out) * math.prod(weight[1:])
    a = shapes.get(node.input[PRODUCTS[node.op_type][0]])
    out = shapes.get(node.output[0])
    if a is None or out is None:
        return None
    if node.op_type == "Gemm":
        trans_a = next((x.i for x in node.attribute if x.name == "transA"), 0)
        k = a[0] if trans_a else a[-1]
        return FLOPS_PER_MAC * math.prod(out) * k
    # a matrix product: every output element sums K products, K being A's last dimension
    return FLOPS_PER_MAC * math.prod(out) * a[-1]

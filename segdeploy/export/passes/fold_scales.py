"""``fold_scales``: a constant per-channel scale right after a convolution becomes part of its weights.

The layer scales of the families' residual blocks (``x + gamma * block(x)``, gamma per channel) export as
Conv -> Mul(gamma) when the block ends in a convolution. ONNX Runtime and OpenVINO fold that Mul themselves in FP32,
but the INT8 passes see a Mul between two quantized tensors and quantize it on its own: an extra integer
multiply, an extra requantization (and its rounding) per block. Folded here, once, it is gone for every precision:
``gamma * (W x + b) = (gamma W) x + gamma b``, exact up to float rounding of the products.

Only a Mul whose other operand is a constant that broadcasts along the output channels alone ((C, 1, 1) or
(1, C, 1, 1) for a 2-D convolution, or a scalar) and only when the Conv's output feeds nothing else.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from segdeploy.export.passes import PassReport, op_counts


def _channel_scale(value: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """The (channels,) scale a constant multiplies a (N, C, spatial...) tensor by, or None if it is not one."""
    if value.dtype != np.float32:
        return None
    if value.size == 1:
        return np.full(channels, value.ravel()[0], np.float32)
    shape = list(value.shape)
    if len(shape) > rank:
        return None
    shape = [1] * (rank - len(shape)) + shape  # numpy broadcasting aligns from the right
    if shape[1] != channels or any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    return value.reshape(channels)


def fold_scales(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    rewritten: dict[int, onnx.NodeProto] = {}
    removed: set[int] = set()
    new_tensors: dict[str, onnx.TensorProto] = {}
    for conv in graph.node:
        if conv.op_type != "Conv" or len(conv.input) < 2 or conv.input[1] not in initializers:
            continue
        if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in initializers:
            continue
        after = consumers.get(conv.output[0], [])
        if len(after) != 1 or after[0].op_type != "Mul" or conv.output[0] in outputs:
            continue
        mul = after[0]
        other = [name for name in mul.input if name != conv.output[0]]
        if len(other) != 1 or other[0] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[conv.input[1]])
        if weight.dtype != np.float32 or id(mul) in removed:
            continue
        scale = _channel_scale(numpy_helper.to_array(initializers[other[0]]), weight.shape[0], weight.ndim)
        if scale is None:
            continue
        base = conv.name or conv.output[0]
        w_name, b_name = f"{base}_scaled_weight", f"{base}_scaled_bias"
        new_tensors[w_name] = numpy_helper.from_array(
            (weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))).astype(np.float32), w_name)
        bias = numpy_helper.to_array(initializers[conv.input[2]]) if len(conv.input) > 2 and conv.input[2] else None
        inputs = [conv.input[0], w_name]
        if bias is not None:
            new_tensors[b_name] = numpy_helper.from_array((bias * scale).astype(np.float32), b_name)
            inputs.append(b_name)
        folded = onnx.NodeProto()
        folded.CopyFrom(conv)
        del folded.input[:]
        folded.input.extend(inputs)
        folded.output[0] = mul.output[0]  # the Conv now yields what the Mul did, under the Mul's name
        rewritten[id(conv)] = folded
        removed.add(id(mul))
    if not rewritten:
        return model, PassReport("fold_scales", len(graph.node), len(graph.node), "segdeploy",
                                 ["no per-channel scale after a convolution"], op_counts(model))
    result = onnx.ModelProto()
    result.CopyFrom(model)
    nodes = [rewritten.get(id(n), n) for n in graph.node if id(n) not in removed]
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    used = {name for n in nodes for name in n.input} | {i.name for i in graph.input}
    kept = [t for t in graph.initializer if t.name in used] + list(new_tensors.values())
    del result.graph.initializer[:]
    result.graph.initializer.extend(kept)
    produced = {name for n in nodes for name in n.output}
    infos = [v for v in graph.value_info if v.name in produced]
    del result.graph.value_info[:]
    result.graph.value_info.extend(infos)
    onnx.checker.check_model(result)
    return result, PassReport("fold_scales", len(graph.node), len(nodes), "segdeploy",
                              [f"{len(rewritten)} per-channel scales folded into the convolutions before them"],
                              op_counts(result))

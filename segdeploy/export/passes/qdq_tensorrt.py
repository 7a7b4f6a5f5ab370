"""``qdq_tensorrt``: explicit INT8 quantization the way TensorRT fuses it, everything else float16.

TensorRT 11 has no INT8 builder flag and no calibrator: INT8 is QuantizeLinear/DequantizeLinear pairs in the graph,
which its optimizer fuses into the neighbouring layers. This pass places them where that fusion happens (NVIDIA's
rules, as Model Optimizer applies them):

- on the activation input and the weight of Conv, ConvTranspose, Gemm and MatMul with a constant weight: the
  activation per tensor, the weight per output channel (int8 weights stored with a DequantizeLinear);
- on the skip input of a residual Add whose other input comes from a quantized layer (the layer's output and the
  Add fuse, the skip input must arrive quantized); never on the layer's own branch;
- none in the attention core (the score MatMul, the Softmax, the MatMul applying its weights and what lies
  between; the projections around them are layers like any other), none in the FP16 pass's float32 islands
  (LayerNorm and other normalisations, SegNeXt's NMF, coordinate arithmetic), none on matrix-vector products;
- symmetric int8, zero points 0, constant positive scales (weights' scales at least float16's smallest normal, so
  they stay exact in float16).

Then the float16 pass converts the rest (Q/DQ take float16 scales: opset 19 or newer). ``keep`` names nodes to leave
unquantized (mixed precision), with the reason. The finished graph is checked against these rules
(``placement_problems``) before it is returned: a placement TensorRT would not fuse is an error, not an artifact.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from segdeploy.errors import ArtifactError, InputError
from segdeploy.export.passes import PassReport, default_opset, op_counts
from segdeploy.export.passes.float32_islands import FLOAT16_MIN_NORMAL, decide_float32
from segdeploy.export.passes.fp16 import float16
from segdeploy.export.passes.graph_index import GraphIndex, node_label, rebuild, toposort
from segdeploy.export.passes.quant_rules import (
    WEIGHTED_OPS,
    attention_core,
    is_matrix_vector,
    quantize_weight,
    weight_input,
    weight_scales,
)

QDQ_FLOAT16_OPSET = 19
QMAX = 127


def quantize_tensorrt(model: onnx.ModelProto, ranges, *, keep: dict[str, str] | None = None,
                      fp16_ranges: dict | None = None, overflow: float | None = None,
                      io_dtype: str = "float32") -> tuple[onnx.ModelProto, PassReport]:
    """``ranges(tensor) -> (low, high) | None``: the calibrated range of an activation (symmetric use: max |.|)."""
    opset = default_opset(model)
    if opset < QDQ_FLOAT16_OPSET:
        raise InputError(f"the INT8 TensorRT flavour needs opset {QDQ_FLOAT16_OPSET} or newer (float16 Q/DQ); this "
                         f"graph is opset {opset}: export with --opset {QDQ_FLOAT16_OPSET} or 20")
    keep = dict(keep or {})
    plan = plan_symmetric(model, ranges, keep)
    quantized = insert_qdq(plan)
    options = {"overflow": overflow} if overflow else {}
    result, fp16_report = float16(quantized, ranges=fp16_ranges, io_dtype=io_dtype, **options)
    check_placement(result, "qdq_tensorrt")
    layers = len(plan["layers"])
    notes = [f"{layers} layers quantized (int8 weights per output channel, activations per tensor), "
             f"{len(plan['residuals'])} residual Add skip inputs; {len(plan['skipped'])} weighted layers left in "
             "float: " + summarize_skipped(plan["skipped"]), *fp16_report.notes]
    report = PassReport("qdq_tensorrt", len(model.graph.node), len(result.graph.node), "segdeploy", notes,
                        op_counts(result))
    report.details = {**plan_details(plan), "float16": fp16_report.details}
    return result, report


def plan_details(plan: dict) -> dict:
    """The manifest's account of a symmetric plan: the quantized layers, the residual Adds, what was left and why."""
    return {"quantized": [name for name, _ in plan["layers"]],
            "residual_adds": [name for name, _ in plan["residuals"]],
            "not_quantized": [{"node": n, "reason": why} for n, why in plan["skipped"]]}


def summarize_skipped(skipped: list[tuple[str, str]]) -> str:
    counts: dict[str, int] = {}
    for _, why in skipped:
        key = why.split(":")[0] if why.startswith(("kept", "float32")) else why
        counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"{n} {why}" for why, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


def quantizable_layers(index: GraphIndex, keep: dict[str, str]) -> tuple[list, list[tuple[str, str]]]:
    """The weighted layers to quantize (node, weight, axis) and the skipped ones with the reason."""
    islands = decide_float32(index, {}, {}, overflow=float("inf"))
    position = {id(n): i for i, n in enumerate(index.nodes)}
    core = attention_core(index)
    layers, skipped = [], []
    for i, node in enumerate(index.nodes):
        if node.op_type not in WEIGHTED_OPS:
            continue
        label = node_label(node, i)
        found = weight_input(index, node)
        if found is None:
            if id(node) not in core:
                skipped.append((label, "no constant weight"))
            else:
                skipped.append((label, core[id(node)]))
            continue
        if node.name in keep:
            skipped.append((label, f"kept: {keep[node.name]}"))
        elif id(node) in core:
            skipped.append((label, core[id(node)]))
        elif position[id(node)] in islands:
            skipped.append((label, f"float32 island: {islands[position[id(node)]]}"))
        elif is_matrix_vector(index, node):
            skipped.append((label, "matrix-vector product"))
        else:
            layers.append((node, *found))
    return layers, skipped


def plan_symmetric(model: onnx.ModelProto, ranges, keep: dict[str, str]) -> dict:
    """Where symmetric Q/DQ goes (this module's rules): the layers, the residual skip inputs and each quantized
    activation's amax. The openvino flavour (qdq_openvino.py) places Q/DQ by the same plan."""
    index = GraphIndex(model)
    layers, skipped = quantizable_layers(index, keep)
    activations: dict[str, float] = {}  # tensor -> amax
    planned = []
    for node, weight, axis in layers:
        amax = _amax(ranges, node.input[0])
        if amax is None:
            skipped.append((node.name, f"no calibrated range for its input {node.input[0]}"))
            continue
        activations[node.input[0]] = amax
        planned.append((node, weight, axis))
    quantized_outputs = {node.output[0] for node, _, _ in planned}
    residuals = []
    for node in index.nodes:
        if node.op_type != "Add" or len(node.input) != 2 or node.name in keep:
            continue
        a, b = node.input
        if index.is_constant(a) or index.is_constant(b) or index.shapes.get(a) != index.shapes.get(b):
            continue
        from_layer = [t in quantized_outputs and len(index.consumers.get(t, [])) == 1 for t in (a, b)]
        if not any(from_layer):
            continue
        skip = b if from_layer[0] else a
        if from_layer[0] and from_layer[1]:
            skip = b  # both branches are layers: the second one arrives quantized, the first fuses with the Add
        amax = _amax(ranges, skip)
        if amax is None:
            continue
        activations[skip] = amax
        residuals.append((node, skip))
    return {"index": index, "layers": [(n.name, (n, w, a)) for n, w, a in planned],
            "residuals": [(n.name, (n, s)) for n, s in residuals], "activations": activations,
            "skipped": skipped}


def _amax(ranges, name: str) -> float | None:
    found = ranges(name)
    if found is None:
        return None
    amax = max(abs(float(found[0])), abs(float(found[1])))
    return amax if np.isfinite(amax) and amax > 0 else None


def insert_qdq(plan: dict) -> onnx.ModelProto:
    index: GraphIndex = plan["index"]
    model = index.model
    new_initializers = []
    qdq_nodes = []
    dequantized: dict[str, str] = {}
    for tensor, amax in plan["activations"].items():
        scale = np.array(max(amax / QMAX, FLOAT16_MIN_NORMAL), np.float32)
        scale_name, zero_name = index.fresh(f"{tensor}_scale"), index.fresh(f"{tensor}_zero_point")
        quantized, restored = index.fresh(f"{tensor}_quantized"), index.fresh(f"{tensor}_dequantized")
        new_initializers += [numpy_helper.from_array(scale, scale_name),
                             numpy_helper.from_array(np.array(0, np.int8), zero_name)]
        qdq_nodes += [helper.make_node("QuantizeLinear", [tensor, scale_name, zero_name], [quantized],
                                       name=index.fresh(f"{tensor}/QuantizeLinear")),
                      helper.make_node("DequantizeLinear", [quantized, scale_name, zero_name], [restored],
                                       name=index.fresh(f"{tensor}/DequantizeLinear"))]
        dequantized[tensor] = restored
    weights_done: dict[str, str] = {}
    replaced_weights = set()
    rewired: dict[int, dict[int, str]] = {}
    for _, (node, weight, axis) in plan["layers"]:
        rewired.setdefault(id(node), {})[0] = dequantized[node.input[0]]
        if weight not in weights_done:
            values = index.constant(weight)
            if values is None or values.dtype != np.float32:
                raise ArtifactError(f"{node.name}: weight {weight} is not a float32 constant")
            scales = np.maximum(weight_scales(values, axis, QMAX), FLOAT16_MIN_NORMAL).astype(np.float32)
            q = quantize_weight(values, scales, axis, QMAX)
            q_name, s_name = index.fresh(f"{weight}_int8"), index.fresh(f"{weight}_scale")
            z_name, out = index.fresh(f"{weight}_zero_point"), index.fresh(f"{weight}_dequantized")
            zeros = np.zeros(scales.shape if axis is not None else (), np.int8)
            new_initializers += [numpy_helper.from_array(q, q_name),
                                 numpy_helper.from_array(scales if axis is not None else scales.reshape(()), s_name),
                                 numpy_helper.from_array(zeros, z_name)]
            attrs = {"axis": axis} if axis is not None else {}
            qdq_nodes.append(helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [out],
                                              name=index.fresh(f"{weight}/DequantizeLinear"), **attrs))
            weights_done[weight] = out
            replaced_weights.add(weight)
        rewired[id(node)][1] = weights_done[weight]
    for _, (node, skip) in plan["residuals"]:
        position = list(node.input).index(skip)
        rewired.setdefault(id(node), {})[position] = dequantized[skip]
    nodes = []
    for node in index.nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for k, name in rewired.get(id(node), {}).items():
            copy.input[k] = name
        nodes.append(copy)
    still_used = {n for node in nodes for n in node.input}
    initializers = [t for t in model.graph.initializer if t.name not in replaced_weights or t.name in still_used]
    initializers += new_initializers
    ordered = toposort(nodes + qdq_nodes, index.graph_inputs, [t.name for t in initializers])
    graph_inputs = [i for i in model.graph.input if i.name not in index.initializers]
    return rebuild(model, ordered, initializers, inputs=graph_inputs)


# ---------------------------------------------------------------------------------------------------------------
# The placement TensorRT fuses, checked on a finished graph


def check_placement(model: onnx.ModelProto, pass_name: str) -> None:
    problems = placement_problems(model)
    if problems:
        raise ArtifactError(f"{pass_name} placed Q/DQ where TensorRT's rules do not allow it ({len(problems)} "
                            f"problems), first: {problems[0]}")


def placement_problems(model: onnx.ModelProto) -> list[str]:
    """Where ``model``'s Q/DQ breaks the TensorRT flavour's rules (see the module docstring); empty when none."""
    index = GraphIndex(model)
    problems = []
    int8 = TensorProto.INT8
    core = attention_core(index)
    for node in index.nodes:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        label = node.name or node.output[0]
        zero = index.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero is None or index.types.get(node.input[2]) != int8 or np.any(zero != 0):
            problems.append(f"{label}: zero point must be a constant int8 0")
        scale = index.constant(node.input[1])
        if scale is None or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            problems.append(f"{label}: scale must be constant and positive")
        if node.op_type == "QuantizeLinear":
            if scale is not None and scale.size != 1:
                problems.append(f"{label}: activations are quantized per tensor")
            users = index.consumers.get(node.output[0], [])
            if not users or any(u.op_type != "DequantizeLinear" for u in users):
                problems.append(f"{label}: a QuantizeLinear feeds its DequantizeLinear only")
            continue
        weight = index.is_constant(node.input[0])
        for user in index.consumers.get(node.output[0], []):
            if user.op_type in WEIGHTED_OPS:
                slot = list(user.input).index(node.output[0])
                if weight and slot != 1:
                    problems.append(f"{label}: a weight DequantizeLinear feeds {user.name}'s weight input")
                if id(user) in core:
                    problems.append(f"{label}: Q/DQ inside the attention core ({user.name})")
                if user.op_type in ("MatMul", "Gemm") and is_matrix_vector(index, user):
                    problems.append(f"{label}: Q/DQ on a matrix-vector product ({user.name})")
                if weight:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                    found = weight_input(index, _unquantized(index, user))
                    if scale is not None and scale.size > 1 and found and found[1] is not None and axis != found[1]:
                        problems.append(f"{label}: per-channel axis {axis} is not {user.name}'s output channels")
            elif user.op_type == "Add":
                other = next(i for i in user.input if i != node.output[0])
                source = index.producer.get(other)
                if source is None or source.op_type not in WEIGHTED_OPS:
                    problems.append(f"{label}: a residual Add's quantized input must sit beside a layer's output "
                                    f"({user.name})")
                elif source.op_type in WEIGHTED_OPS and not _has_qdq_input(index, source):
                    problems.append(f"{label}: {user.name}'s other branch is not a quantized layer")
            else:
                problems.append(f"{label}: feeds {user.op_type} {user.name} (TensorRT fuses Q/DQ into Conv, "
                                "ConvTranspose, Gemm, MatMul and residual Adds)")
    return problems


def _has_qdq_input(index: GraphIndex, node) -> bool:
    producer = index.producer.get(node.input[0])
    return producer is not None and producer.op_type == "DequantizeLinear"


def _unquantized(index: GraphIndex, node):
    """A stand-in for ``node`` whose weight is the float tensor behind its DequantizeLinear, for weight_input."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    producer = index.producer.get(node.input[1]) if len(node.input) > 1 else None
    if producer is not None and producer.op_type == "DequantizeLinear":
        copy.input[1] = producer.input[0]
    return copy

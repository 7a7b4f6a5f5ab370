"""``float16``: float16 weights and activations, with float32 islands where float16 is unsafe (the rules live in
:mod:`segdeploy.export.passes.float32_islands`).

Under TensorRT 11 a network is strongly typed: the ONNX graph's own tensor types are the precision, so FP16 is
float16 tensors and Casts in the graph, made here and verified on the CPU. Each node runs in float16 unless a rule
keeps it in float32, and every decision is reported with its reason (the manifest lists the islands):

- by operator: normalisation reductions (LayerNormalization, InstanceNormalization, ReduceMean/ReduceSum...),
  Softmax and exponentials (their inputs decide which small probabilities survive), powers, square roots, CumSum;
- guarded divisions ``x / (y + eps)`` whose epsilon lies below float16's normal range (SegNeXt's NMF iterations):
  the whole module scope of such a division stays float32, since the multiplicative updates compound rounding;
- normalisations written out in elementwise operators (a Sqrt that a mean reduction reaches, as in the export form
  of ``models.layers.GroupNorm``): every node of that module scope, since squared deviations overflow float16;
- coordinate arithmetic: float tensors that become indices (Floor, Ceil, Round, Cast to an integer) and what they
  are computed from, plus their direct elementwise uses (bilinear weights ``x - floor(x)``): float16 has a step of
  0.125 at 256 pixels;
- by range, from a reference run: tensors whose magnitude exceeds ``overflow`` (float16 ends at 65504; the default
  leaves three bits of headroom for inputs the reference run did not see) or whose values all sit below float16's
  normal range; their producers and consumers stay float32;
- nodes the caller names (mixed precision: the sensitivity pass's choices), with the caller's reason.

Data-movement operators (Reshape, Transpose, Slice, Concat, Resize ...) follow their input's precision, so an
island does not pay two Casts around every reshape. Graph inputs and outputs keep float32 unless ``io_dtype`` is
"float16". Q/DQ pairs (the INT8 TensorRT flavour) take the precision of the node they feed, so no Cast separates a
DequantizeLinear from its Conv (that would break TensorRT's fusion).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from segdeploy.errors import ArtifactError
from segdeploy.export.passes import PassReport, op_counts
from segdeploy.export.passes.float32_islands import (
    ANY_INPUT_OPS,
    FLOAT16_MAX,
    QDQ_OPS,
    cast_target,
    decide_float32,
    group_islands,
    touches_float,
)
from segdeploy.export.passes.graph_index import FLOAT, FLOAT16, GraphIndex, rebuild, toposort

DEFAULT_OVERFLOW = 8192.0

# Operators that only move or select values: they follow their input's precision.
MOVEMENT_OPS = frozenset({
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Slice", "Gather", "GatherElements",
    "GatherND", "Concat", "Split", "Expand", "Tile", "Pad", "DepthToSpace", "SpaceToDepth", "Resize", "Upsample",
    "Cast", "ArgMax", "ArgMin", "MaxPool", "ReduceMax", "ReduceMin", "Relu", "Max", "Min", "Where", "TopK",
})
# Inputs whose type is fixed by the operator, whatever the node computes in (Resize's roi and scales).
FIXED_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}


def float16(model: onnx.ModelProto, *, ranges: dict | None = None, keep: dict[str, str] | None = None,
            io_dtype: str = "float32", overflow: float = DEFAULT_OVERFLOW) -> tuple[onnx.ModelProto, PassReport]:
    """Convert ``model`` (float32) to float16 with float32 islands; see the module docstring.

    ``ranges``: tensor name -> (min, max) from a reference run; ``keep``: node name -> why it stays float32.
    """
    if io_dtype not in ("float32", "float16"):
        raise ArtifactError(f"io_dtype must be float32 or float16, not {io_dtype!r}")
    if not 0 < overflow <= FLOAT16_MAX:
        raise ArtifactError(f"the float16 overflow limit must be in (0, {FLOAT16_MAX:g}], not {overflow}")
    index = GraphIndex(model)
    reasons = decide_float32(index, ranges or {}, keep or {}, overflow)
    precision = assign_precision(index, reasons)
    result, counts = _rewrite(index, precision, FLOAT16 if io_dtype == "float16" else FLOAT)
    try:
        result = onnx.shape_inference.infer_shapes(result, strict_mode=True)
        onnx.checker.check_model(result)
    except Exception as exc:  # noqa: BLE001 - a broken rewrite is a bug to report in one line
        raise ArtifactError(f"the float16 graph does not check ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    islands = group_islands(index, reasons)
    kept32 = sum(1 for p in precision.values() if p == FLOAT)
    kept16 = sum(1 for p in precision.values() if p == FLOAT16)
    notes = [f"{kept16} nodes in float16, {kept32} in float32 ({len(reasons)} by rule, the rest follow their "
             f"inputs); {counts['casts']} Casts inserted; I/O {io_dtype}"]
    if counts["clipped"]:
        notes.append(f"{counts['clipped']} weight values beyond float16's range clipped to +-{FLOAT16_MAX:g}")
    report = PassReport("float16", len(model.graph.node), len(result.graph.node), "segdeploy", notes,
                        op_counts(result))
    report.details = {"float16_nodes": kept16, "float32_nodes": kept32, "casts": counts["casts"],
                      "clipped_weights": counts["clipped"], "overflow_limit": overflow, "islands": islands}
    return result, report


# ---------------------------------------------------------------------------------------------------------------
# Which precision each node computes in


def assign_precision(index: GraphIndex, reasons: dict[int, str]) -> dict[int, int | None]:
    """node position -> FLOAT, FLOAT16, or None (the node touches no float tensor)."""
    precision: dict[int, int | None] = {}
    home: dict[str, int] = {}  # the precision a float tensor is produced in
    for i, node in enumerate(index.nodes):
        if node.op_type in QDQ_OPS:
            continue  # decided from what they feed, below
        if not touches_float(index, node):
            precision[i] = None
        elif i in reasons:
            precision[i] = FLOAT
        elif node.op_type in MOVEMENT_OPS:
            first = next((n for n in node.input if index.is_float(n)), None)
            precision[i] = home.get(first, FLOAT16) if first is not None else FLOAT
        elif node.op_type in ("Constant", "ConstantOfShape") or not any(index.is_float(n) for n in node.input):
            precision[i] = FLOAT  # sources (integer -> float): cast where float16 consumers need it
        else:
            precision[i] = FLOAT16
        for name in node.output:
            if index.is_float(name) and precision[i] is not None:
                home[name] = precision[i]
    position = {id(node): i for i, node in enumerate(index.nodes)}
    for i in reversed(range(len(index.nodes))):
        node = index.nodes[i]
        if node.op_type not in QDQ_OPS:
            continue
        users = [position[id(c)] for c in index.consumers.get(node.output[0], [])]
        wanted = {precision.get(u) for u in users if precision.get(u) is not None}
        precision[i] = FLOAT if FLOAT in wanted else FLOAT16
    return precision



# ---------------------------------------------------------------------------------------------------------------
# The rewrite


def _rewrite(index: GraphIndex, precision: dict[int, int | None], io_type: int):
    graph = index.model.graph
    counts = {"casts": 0, "clipped": 0}

    def retyped_inputs(i: int, node):
        """(input position, tensor) pairs this node reads in its own precision."""
        if precision.get(i) is None or node.op_type in ANY_INPUT_OPS:
            return []
        fixed = FIXED_INPUTS.get(node.op_type, set())
        return [(k, name) for k, name in enumerate(node.input) if k not in fixed and index.is_float(name)]

    # the types each float constant is read in: converted in place when only float16 readers remain
    constant_wants: dict[str, set[int]] = defaultdict(set)
    for i, node in enumerate(index.nodes):
        for _, name in retyped_inputs(i, node):
            if name in index.initializers or name in index.constant_nodes:
                constant_wants[name].add(precision[i])
    fp16_names = {name: (name if wants == {FLOAT16} else index.fresh(f"{name}_fp16"))
                  for name, wants in constant_wants.items() if FLOAT16 in wants and index.types[name] == FLOAT}

    inputs, home = [], {}
    for info in graph.input:
        if info.name in index.initializers:
            continue
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(info)
        if index.types.get(info.name) == FLOAT:
            copy.type.tensor_type.elem_type = io_type
            home[info.name] = io_type
        inputs.append(copy)

    # a graph output produced in another type than the I/O's: its producer writes a renamed tensor, Cast to the name
    renamed: dict[str, str] = {}
    position = {id(node): i for i, node in enumerate(index.nodes)}
    for name in index.graph_outputs:
        producer = index.producer.get(name)
        if producer is not None and index.types.get(name) == FLOAT and \
                precision.get(position[id(producer)]) not in (None, io_type):
            renamed[name] = index.fresh(f"{name}_{'fp16' if io_type == FLOAT else 'fp32'}")

    new_nodes: list = []
    casts: dict[tuple[str, int], str] = {}

    def typed(name: str, want: int) -> str:
        """``name`` as a tensor of type ``want``: itself, its float16 constant, or a (shared) Cast of it."""
        if name in constant_wants and index.types[name] == FLOAT:
            return fp16_names[name] if want == FLOAT16 else name
        source = renamed.get(name, name)
        if home.get(name, index.types.get(name)) == want:
            return source
        if (name, want) not in casts:
            out = index.fresh(f"{name}_{'fp16' if want == FLOAT16 else 'fp32'}")
            new_nodes.append(helper.make_node("Cast", [source], [out], to=want, name=index.fresh(f"{out}/Cast")))
            counts["casts"] += 1
            casts[(name, want)] = out
        return casts[(name, want)]

    for i, node in enumerate(index.nodes):
        if node.op_type == "Constant" and node.output[0] in constant_wants:
            continue  # emitted below, in the types its readers need
        p = precision.get(i)
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for k, name in enumerate(node.input):
            if name in renamed:
                copy.input[k] = renamed[name]
        for k, name in retyped_inputs(i, node):
            copy.input[k] = typed(name, p)
        if p is not None and node.op_type == "Cast" and cast_target(node) in (FLOAT, FLOAT16):
            _set_attr(copy, "to", p)
        if p == FLOAT16 and node.op_type == "ConstantOfShape":
            _constant_of_shape_to_fp16(copy)
        for k, name in enumerate(node.output):
            if index.is_float(name):
                home[name] = p if p is not None else index.types[name]
            if name in renamed:
                copy.output[k] = renamed[name]
        new_nodes.append(copy)
    for name, inner in renamed.items():
        new_nodes.append(helper.make_node("Cast", [inner], [name], to=io_type, name=index.fresh(f"{name}/Cast")))
        counts["casts"] += 1

    referenced = {n for node in new_nodes for n in node.input} | set(index.graph_outputs)
    initializers, constants = [], []
    for name, tensor in index.initializers.items():
        if name in referenced and fp16_names.get(name) != name:
            initializers.append(tensor)
        if name in fp16_names:
            converted, clipped = _to_fp16(tensor, fp16_names[name])
            counts["clipped"] += clipped
            initializers.append(converted)
    for name, node in index.constant_nodes.items():
        if name not in constant_wants:
            continue  # kept in the node walk
        if name in referenced and fp16_names.get(name) != name:
            constants.append(node)
        if name in fp16_names:
            value = next(a.t for a in node.attribute if a.name == "value")
            converted, clipped = _to_fp16(value, fp16_names[name])
            counts["clipped"] += clipped
            constants.append(helper.make_node("Constant", [], [fp16_names[name]], value=converted,
                                              name=index.fresh(f"{fp16_names[name]}/Constant")))

    outputs = []
    for info in graph.output:
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(info)
        if index.types.get(info.name) == FLOAT:
            copy.type.tensor_type.elem_type = io_type if info.name in renamed else home.get(info.name, FLOAT)
        outputs.append(copy)
    nodes = toposort(constants + new_nodes, [i.name for i in inputs], [t.name for t in initializers])
    return rebuild(index.model, nodes, initializers, inputs, outputs), counts


def _to_fp16(tensor: onnx.TensorProto, name: str) -> tuple[onnx.TensorProto, int]:
    values = numpy_helper.to_array(tensor)
    clipped = int(np.count_nonzero(np.abs(values) > FLOAT16_MAX))
    converted = np.clip(values, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)
    return numpy_helper.from_array(converted, name), clipped


def _set_attr(node, name: str, value: int) -> None:
    for a in node.attribute:
        if a.name == name:
            a.i = value
            return
    node.attribute.append(helper.make_attribute(name, value))


def _constant_of_shape_to_fp16(node) -> None:
    for a in node.attribute:
        if a.name == "value" and a.t.data_type == FLOAT:
            a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))

"""Which nodes of a float graph must stay float32 when the rest goes to float16, and why: the float16 pass's islands,
which the INT8 passes leave unquantized too (see :mod:`segdeploy.export.passes.fp16` for the rules in words).

Every rule names its reason; ``decide_float32`` returns only the nodes a rule names, and the passes decide the
nodes that follow them.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
from onnx import TensorProto

from segdeploy.export.passes.graph_index import GraphIndex, node_label, scope_of

FLOAT16_MAX = 65504.0
FLOAT16_MIN_NORMAL = 2.0 ** -14

FLOAT32_OPS = {
    "LayerNormalization": "normalisation (mean and variance reductions)",
    "InstanceNormalization": "normalisation (mean and variance reductions)",
    "GroupNormalization": "normalisation (mean and variance reductions)",
    "ReduceMean": "reduction (float16 sums lose the small terms)",
    "ReduceSum": "reduction (float16 sums lose the small terms)",
    "ReduceSumSquare": "reduction (float16 sums lose the small terms)",
    "ReduceL1": "reduction (float16 sums lose the small terms)",
    "ReduceL2": "reduction (float16 sums lose the small terms)",
    "ReduceLogSumExp": "reduction (float16 sums lose the small terms)",
    "ReduceProd": "reduction (products overflow float16)",
    "CumSum": "running sum (float16 sums lose the small terms)",
    "Softmax": "Softmax input (float16 logits flatten small probabilities)",
    "LogSoftmax": "Softmax input (float16 logits flatten small probabilities)",
    "Exp": "exponential (overflows float16 above 11)",
    "Pow": "power (overflows or underflows float16)",
    "Sqrt": "square root (of a variance or a reduction)",
    "Reciprocal": "reciprocal (overflows float16 below 1.5e-5)",
}
ELEMENTWISE_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Min", "Max", "Clip", "Neg", "Abs", "Floor", "Ceil", "Round",
                             "Relu", "Identity", "Cast"})
INDEX_OPS = frozenset({"Floor", "Ceil", "Round"})
# Operators that take any input type: their input is never cast.
ANY_INPUT_OPS = frozenset({"Shape", "Size", "Cast"})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
INTEGER_TYPES = {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32,
                 TensorProto.UINT32, TensorProto.INT64, TensorProto.UINT64, TensorProto.BOOL}


def decide_float32(index: GraphIndex, ranges: dict, keep: dict[str, str], overflow: float) -> dict[int, str]:
    """node position -> the reason it stays float32 (only nodes a rule names; followers are decided later)."""
    reasons: dict[int, str] = {}
    position = {id(node): i for i, node in enumerate(index.nodes)}

    def mark(node, reason: str) -> None:
        if node.op_type not in QDQ_OPS:  # a Q/DQ pair computes in the precision of the node it feeds
            reasons.setdefault(position[id(node)], reason)

    names = {node.name: node for node in index.nodes if node.name}
    for name, why in keep.items():
        if name in names:
            mark(names[name], why)
    for node in index.nodes:
        if node.op_type in FLOAT32_OPS and touches_float(index, node):
            mark(node, f"op: {FLOAT32_OPS[node.op_type]}")
    for node, eps in _guarded_divisions(index):
        scope = scope_of(node.name)
        why = f"guarded division by (y + {eps:.0e}) in {scope or node.name}: iterative updates compound float16 " \
              "rounding"
        members = [n for n in index.nodes if scope and n.name.startswith(scope)] or \
            [node, *(p for p in (index.producer.get(i) for i in node.input) if p is not None)]
        for member in members:
            if touches_float(index, member):
                mark(member, why)
    for node in _coordinate_arithmetic(index):
        mark(node, "coordinate arithmetic (values that become indices need float32's step)")
    for node, scope in _written_out_normalisations(index):
        mark(node, f"normalisation written out in {scope} (squared deviations overflow float16, its mean and variance "
                   "lose the small terms)")
    for node, why in _out_of_range(index, ranges, overflow):
        mark(node, why)
    return reasons


def touches_float(index: GraphIndex, node) -> bool:
    return any(index.is_float(n) for n in (*node.input, *node.output))


def _guarded_divisions(index: GraphIndex):
    for node in index.nodes:
        if node.op_type != "Div" or len(node.input) < 2:
            continue
        add = index.producer.get(node.input[1])
        if add is None or add.op_type != "Add":
            continue
        for operand in add.input:
            value = index.constant(operand)
            if value is not None and value.size == 1 and np.issubdtype(value.dtype, np.floating):
                eps = float(abs(value.reshape(-1)[0]))
                if 0 < eps < FLOAT16_MIN_NORMAL:
                    yield node, eps
                    break


def _written_out_normalisations(index: GraphIndex):
    """(node, scope) for every float node in the scope of a Sqrt that a mean reduction reaches through Add, Div and
    constant-weight Conv (the group average): a normalisation written out in elementwise operators, such as
    ``models.layers.GroupNorm``'s export form. Only nodes of that exact scope: its children are not part of it."""
    for sqrt in (n for n in index.nodes if n.op_type == "Sqrt"):
        scope = scope_of(sqrt.name)
        frontier, found = [sqrt], False
        for _ in range(4):
            producers = [index.producer.get(i) for n in frontier for i in n.input[:1]]
            if any(p is not None and p.op_type == "ReduceMean" for p in producers):
                found = True
                break
            frontier = [p for p in producers if p is not None and (p.op_type in ("Add", "Div") or (
                p.op_type == "Conv" and len(p.input) > 1 and index.is_constant(p.input[1])))]
        if not found or not scope:
            continue
        for node in index.nodes:
            if scope_of(node.name) == scope and touches_float(index, node):
                yield node, scope.strip("/")


def _coordinate_arithmetic(index: GraphIndex) -> list:
    """Nodes computing float values that become indices, back through elementwise arithmetic to where the values
    come from, plus the direct elementwise users of those values."""
    seeds = [node for node in index.nodes
             if (node.op_type in INDEX_OPS and index.is_float(node.input[0])) or
             (node.op_type == "Cast" and index.is_float(node.input[0]) and cast_target(node) in INTEGER_TYPES)]
    island: dict[int, object] = {}
    stack = list(seeds)
    while stack:
        node = stack.pop()
        if id(node) in island:
            continue
        island[id(node)] = node
        for name in node.input:
            producer = index.producer.get(name)
            if producer is not None and producer.op_type in ELEMENTWISE_OPS and index.is_float(name):
                stack.append(producer)
    users: dict[int, object] = {}
    for node in island.values():
        for name in node.output:
            if index.is_float(name):
                users.update((id(c), c) for c in index.consumers.get(name, []) if c.op_type in ELEMENTWISE_OPS)
    return [*island.values(), *(n for key, n in users.items() if key not in island)]


def cast_target(node) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _out_of_range(index: GraphIndex, ranges: dict, overflow: float):
    for name, (low, high) in ranges.items():
        if not index.is_float(name):
            continue
        peak = max(abs(float(low)), abs(float(high)))
        if peak > overflow:
            why = f"range: |{name}| reaches {peak:.3g} (> {overflow:g}; float16 ends at {FLOAT16_MAX:g})"
        elif 0 < peak < FLOAT16_MIN_NORMAL:
            why = f"range: |{name}| stays below {peak:.3g} (float16's normal range starts at {FLOAT16_MIN_NORMAL:.3g})"
        else:
            continue
        producer = index.producer.get(name)
        if producer is not None and producer.op_type not in ("Constant",):
            yield producer, why
        for consumer in index.consumers.get(name, []):
            if consumer.op_type not in ANY_INPUT_OPS:
                yield consumer, why


def group_islands(index: GraphIndex, reasons: dict[int, str]) -> list[dict]:
    """The float32 decisions grouped by reason, for the report and the manifest."""
    grouped = defaultdict(list)
    for i, why in sorted(reasons.items()):
        grouped[why].append(node_label(index.nodes[i], i))
    return [{"reason": why, "nodes": nodes} for why, nodes in grouped.items()]

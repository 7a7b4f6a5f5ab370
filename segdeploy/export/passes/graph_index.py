"""What the precision passes ask about a graph: who produces and who consumes each tensor, element types and static
shapes (from ONNX shape inference), constants (initializers and Constant nodes), and fresh names. Read-only: the
passes build their edits from it and write a new graph."""
from __future__ import annotations

import heapq
from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from segdeploy.errors import ArtifactError

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
FLOAT_TYPES = (FLOAT, FLOAT16)


def declared_types_and_shapes(graph, constants: dict) -> tuple[dict[str, int], dict[str, list[int | None]]]:
    """Element types and shapes (None for a symbolic dimension) the graph declares for its inputs, outputs and
    value_info, and those of the constant tensors in ``constants`` (name -> TensorProto)."""
    types: dict[str, int] = {}
    shapes: dict[str, list[int | None]] = {}
    for info in (*graph.input, *graph.output, *graph.value_info):
        tensor_type = info.type.tensor_type
        if tensor_type.elem_type:
            types[info.name] = tensor_type.elem_type
        if tensor_type.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    for name, tensor in constants.items():
        types[name] = tensor.data_type
        shapes[name] = list(tensor.dims)
    return types, shapes


class GraphIndex:
    def __init__(self, model: onnx.ModelProto, infer: bool = True):
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for node in model.graph.node for a in node.attribute):
            raise ArtifactError("the precision passes work on flat graphs; this one has control flow (If/Loop/Scan)")
        if infer:
            try:
                model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
            except Exception as exc:  # noqa: BLE001 - inference problems are reported as one line
                raise ArtifactError(f"ONNX shape inference failed on the graph ({type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
        self.model = model
        graph = model.graph
        self.nodes = list(graph.node)
        self.initializers = {t.name: t for t in graph.initializer}
        self.graph_inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.graph_outputs = [o.name for o in graph.output]
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self.constant_nodes: dict[str, onnx.NodeProto] = {}
        for node in self.nodes:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
            if node.op_type == "Constant" and node.output:
                self.constant_nodes[node.output[0]] = node
        self.types, self.shapes = declared_types_and_shapes(graph, self.initializers)
        for name, node in self.constant_nodes.items():
            value = _constant_value(node)
            if value is not None:
                self.types[name] = value.data_type
                self.shapes[name] = list(value.dims)
        self._names = {n for node in self.nodes for n in (*node.input, *node.output)} | set(self.initializers) | \
            {node.name for node in self.nodes}

    def is_float(self, name: str) -> bool:
        return bool(name) and self.types.get(name) in FLOAT_TYPES

    def is_constant(self, name: str) -> bool:
        """An initializer, a Constant's output, or either through Identity or DequantizeLinear (a quantized
        weight is still a weight)."""
        if name in self.initializers or name in self.constant_nodes:
            return True
        producer = self.producer.get(name)
        return producer is not None and producer.op_type in ("Identity", "DequantizeLinear") and \
            self.is_constant(producer.input[0])

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        if name in self.constant_nodes:
            value = _constant_value(self.constant_nodes[name])
            return None if value is None else numpy_helper.to_array(value)
        producer = self.producer.get(name)
        if producer is not None and producer.op_type == "Identity":
            return self.constant(producer.input[0])
        return None

    def fresh(self, base: str) -> str:
        """A tensor or node name not used in the graph yet (and reserved from now on)."""
        name, i = base, 0
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)


def _constant_value(node) -> onnx.TensorProto | None:
    for a in node.attribute:
        if a.name == "value" and a.HasField("t"):
            return a.t
    return None


def node_label(node, index: int) -> str:
    """A node's name, or a stable stand-in for unnamed nodes."""
    return node.name or f"#{index} {node.op_type}"


def scope_of(name: str) -> str:
    """The module scope the TorchScript exporter encodes in node names: '/model/decode_head/ham/Div_3' ->
    '/model/decode_head/ham/'; '' for names without one."""
    return name.rsplit("/", 1)[0] + "/" if "/" in name.strip("/") else ""


def rebuild(model: onnx.ModelProto, nodes: list, initializers: list, inputs=None, outputs=None,
            opset: int | None = None) -> onnx.ModelProto:
    """A copy of ``model`` with a new node list and initializers (value_info dropped: types may have changed, shape
    inference fills it again), optionally new graph inputs/outputs and default-domain opset."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.value_info[:]
    if inputs is not None:
        del graph.input[:]
        graph.input.extend(inputs)
    if outputs is not None:
        del graph.output[:]
        graph.output.extend(outputs)
    if opset is not None:
        for entry in result.opset_import:
            if entry.domain in ("", "ai.onnx"):
                entry.version = max(entry.version, opset)
    return result


def toposort(nodes: list, graph_inputs, initializers) -> list:
    """Nodes in an order where every input is produced before it is used (passes append nodes out of order)."""
    available = set(graph_inputs) | set(initializers) | {""}
    produced_by = {}
    for i, node in enumerate(nodes):
        for name in node.output:
            produced_by[name] = i
    waiting = defaultdict(list)
    missing = []
    ready = []
    for i, node in enumerate(nodes):
        need = {n for n in node.input if n not in available and n in produced_by}
        missing.append(len(need))
        for n in need:
            waiting[n].append(i)
        if not need:
            ready.append(i)
    order = []
    heapq.heapify(ready)
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for name in nodes[i].output:
            for j in waiting.pop(name, []):
                missing[j] -= 1
                if missing[j] == 0:
                    heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise ArtifactError("the rewritten graph has a cycle")
    return order

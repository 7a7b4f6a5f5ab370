"""The graph as the lint rules read it: nodes, producers and consumers, constants, tensor types and the opset, built
once from an ONNX model.
"""
from __future__ import annotations

from collections.abc import Iterator

from segdeploy.export.passes.graph_index import declared_types_and_shapes


class Graph:
    """The top-level graph of an ONNX model with what the rules ask about: producers, constants, element types
    (from ONNX shape inference) and static shapes. Subgraphs (If/Loop bodies) are not linted."""

    def __init__(self, model):
        import onnx

        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        except Exception:  # an uninferable graph is still linted, with the types the file itself declares
            inferred = model
        graph = inferred.graph
        self.model = inferred
        self.nodes = list(graph.node)
        self.opset = next((o.version for o in inferred.opset_import if o.domain in ("", "ai.onnx")), None)
        self.inputs = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
        self.outputs = [o.name for o in graph.output]
        self.constants = {t.name: t for t in graph.initializer}
        self.producer = {}
        for node in self.nodes:
            for name in node.output:
                self.producer[name] = node
            if node.op_type == "Constant" and node.output:
                value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
                if value is not None:
                    self.constants[node.output[0]] = value
        self.types, self.shapes = declared_types_and_shapes(graph, self.constants)

    def name(self, node, index: int | None = None) -> str:
        if node.name:
            return node.name
        index = self.nodes.index(node) if index is None else index
        return f"#{index} {node.op_type} -> {node.output[0] if node.output else '?'}"

    def constant(self, tensor_name: str):
        """The value of a constant tensor (an initializer, a Constant's output, or either through Identity)."""
        import onnx.numpy_helper

        producer = self.producer.get(tensor_name)
        if tensor_name not in self.constants and producer is not None and producer.op_type == "Identity":
            return self.constant(producer.input[0])
        tensor = self.constants.get(tensor_name)
        return None if tensor is None else onnx.numpy_helper.to_array(tensor)

    def is_constant(self, tensor_name: str) -> bool:
        producer = self.producer.get(tensor_name)
        if tensor_name in self.constants:
            return True
        return producer is not None and producer.op_type == "Identity" and self.is_constant(producer.input[0])

    def attr(self, node, name: str, default=None):
        import onnx.helper

        for a in node.attribute:
            if a.name == name:
                value = onnx.helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def each(self, *op_types: str) -> Iterator[tuple[int, object]]:
        for index, node in enumerate(self.nodes):
            if not op_types or node.op_type in op_types:
                yield index, node


def type_name(elem_type: int | None) -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(elem_type) if elem_type else "unknown"


def onnx_type(name: str) -> int:
    import onnx

    return onnx.TensorProto.DataType.Value(name)

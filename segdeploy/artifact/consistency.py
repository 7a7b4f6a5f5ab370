"""Does a manifest tell the truth? Checked when it is read, against what can be checked without running anything.

A schema-valid manifest can still lie: copied from another export, edited by hand, or written for another model. The
reader checks it against the graph it came with: names, dtypes, ranks and static dimensions of every input and
output, the profile against the graph's fixed sizes, the precision it claims against the tensors and operators the
graph holds. A lie is one ArtifactError line naming the field, so no command feeds a graph by a description that
does not fit it or validates an fp32 graph with the fp16 tolerance. (What a manifest says about a registered model
is checked against the registry by segdeploy.models.facts, one layer up.)
"""
from __future__ import annotations

from segdeploy.errors import ArtifactError

# ONNX TensorProto data types -> numpy names (the manifest's dtype vocabulary)
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64",
                16: "bfloat16"}
_INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                       "MatMulInteger", "DynamicQuantizeLinear"})
_FLOAT16 = 10


def _graph_tensors(values, initializers=frozenset()) -> list[tuple[str, str | None, list]]:
    out = []
    for v in values:
        if v.name in initializers:
            continue
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        out.append((v.name, _ONNX_DTYPES.get(t.elem_type), dims))
    return out


def _check_tensors(kind: str, described, found, source: str) -> None:
    if [t.name for t in described] != [name for name, _, _ in found]:
        raise ArtifactError(f"{source}: its manifest describes {kind} {[t.name for t in described]}, the graph has "
                            f"{[name for name, _, _ in found]}")
    for spec, (name, dtype, dims) in zip(described, found):
        if dtype is not None and spec.dtype != dtype:
            raise ArtifactError(f"{source}: its manifest describes {kind[:-1]} {name!r} as {spec.dtype}, the graph "
                                f"has {dtype}")
        if dims and len(dims) != len(spec.shape):
            raise ArtifactError(f"{source}: its manifest gives {kind[:-1]} {name!r} rank {len(spec.shape)}, the "
                                f"graph rank {len(dims)}")
        for i, (want, got) in enumerate(zip(spec.shape, dims)):
            if isinstance(got, int) and got > 0 and (not isinstance(want, int) or want != got) and \
                    spec.axis(i) is None:
                raise ArtifactError(f"{source}: its manifest gives {kind[:-1]} {name!r} dimension {i} as {want!r}, "
                                    f"the graph as {got}")


def _check_profile(manifest, found_inputs, source: str) -> None:
    """A dimension the graph fixes cannot have a range in the profile."""
    spec = manifest.input
    _, _, dims = found_inputs[0]
    if len(dims) != 4:
        return
    if spec.layout == "NHWC":
        axes = {"batch": dims[0], "height": dims[1], "width": dims[2]}
    else:
        axes = {"batch": dims[0], "height": dims[2], "width": dims[3]}
    for what, fixed in axes.items():
        r = getattr(manifest.profile, what)
        if isinstance(fixed, int) and fixed > 0 and not (r.min == r.opt == r.max == fixed):
            raise ArtifactError(f"{source}: its manifest's profile gives {what} {r.min}-{r.max} (opt {r.opt}), the "
                                f"graph fixes it at {fixed}")


def _check_precision(manifest, graph, source: str) -> None:
    mode = manifest.precision.mode
    ops = {node.op_type for node in graph.node}
    halves = any(init.data_type == _FLOAT16 for init in graph.initializer) or any(
        attr.name == "to" and attr.i == _FLOAT16 for node in graph.node if node.op_type == "Cast"
        for attr in node.attribute)
    if mode == "int8" and not ops & _INT8_OPS:
        raise ArtifactError(f"{source}: its manifest says int8, but the graph has no quantization operators")
    if mode == "fp16" and not halves:
        raise ArtifactError(f"{source}: its manifest says fp16, but the graph holds no float16 tensors")
    if mode == "fp32" and (halves or ops & _INT8_OPS):
        found = "float16 tensors" if halves else "quantization operators"
        raise ArtifactError(f"{source}: its manifest says fp32, but the graph holds {found}")


def check_against_graph(manifest, model_proto, source: str) -> None:
    """Raise ArtifactError when the manifest does not describe the ONNX graph it came with."""
    graph = model_proto.graph
    initializers = {init.name for init in graph.initializer}
    inputs = _graph_tensors(graph.input, initializers)
    outputs = _graph_tensors(graph.output)
    if not inputs or not outputs:
        raise ArtifactError(f"{source}: the graph has no {'inputs' if not inputs else 'outputs'}")
    _check_tensors("inputs", manifest.inputs, inputs, source)
    _check_tensors("outputs", manifest.outputs, outputs, source)
    _check_profile(manifest, inputs, source)
    _check_precision(manifest, graph, source)

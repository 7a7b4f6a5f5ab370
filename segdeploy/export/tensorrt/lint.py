"""A TensorRT lint for ONNX graphs that runs on the CPU, for a chosen TensorRT release.

TensorRT's own parser only runs where TensorRT and a GPU are (creating a builder needs CUDA), so an export on a
workstation or in CI would learn about an unsupported node only on the Jetson. This lint checks the graph against
the parser's documented limits instead: the opset range, operators the parser lacks, attributes it refuses
(Resize, ScatterND), UINT8 tensors inside the network, and the Q/DQ forms TensorRT can quantize. Each rule is data
(id, severity, summary) plus one function; each finding names the node, its operator and the rule.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from segdeploy.artifact.onnx_file import load_onnx
from segdeploy.errors import SegdeployError
from segdeploy.export.tensorrt import onnx_support as support
from segdeploy.export.tensorrt.lint_graph import Graph, onnx_type, type_name
from segdeploy.tensorrt_host import version_tuple

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    node: str
    op: str
    message: str

    def line(self) -> str:
        return f"{self.severity}: {self.node} ({self.op}): {self.message} [{self.rule}]"


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    summary: str
    check: Callable[[Graph, tuple[int, ...]], Iterable[Finding]] = field(repr=False)


def parse_target(text: str | None) -> tuple[int, ...]:
    """A TensorRT release as given on the command line ("10.3", "11", "11.4.1")."""
    version = version_tuple(text)
    if not version or version[0] not in (10, 11):
        raise SegdeployError(f"--trt-version must name a TensorRT 10 or 11 release (e.g. 10.3 or 11), not {text!r}")
    return version


def _finding(rule: str, severity: str, g: Graph, index: int, node, message: str) -> Finding:
    return Finding(rule, severity, g.name(node, index), node.op_type, message)


def check_opset(g: Graph, version) -> Iterator[Finding]:
    low, high = support.opset_range(version)
    if g.opset is None:
        yield Finding("opset-range", ERROR, "(model)", "opset", "the model imports no default-domain opset")
    elif not low <= g.opset <= high:
        yield Finding("opset-range", ERROR, "(model)", "opset",
                      f"opset {g.opset} is outside TensorRT {_release(version)}'s range {low}-{high}: export with "
                      f"--opset {min(max(g.opset, low), high)}")


def check_dangling_input(g: Graph, version) -> Iterator[Finding]:
    known = set(g.inputs) | set(g.constants) | set(g.producer)
    for index, node in g.each():
        missing = [name for name in node.input if name and name not in known]
        if missing:
            yield _finding("dangling-input", ERROR, g, index, node,
                           f"input {missing[0]!r} is no graph input, initializer or node output: the parser stops "
                           "here (a weight lost in editing the graph?)")


def check_custom_domain(g: Graph, version) -> Iterator[Finding]:
    for index, node in g.each():
        if node.domain not in ("", "ai.onnx"):
            yield _finding("custom-op", ERROR, g, index, node,
                           f"operator of domain {node.domain!r}: TensorRT parses it only through a plugin of that "
                           "name (ONNX Runtime's contrib ops have none); export without runtime-specific fusions")


def check_unsupported_op(g: Graph, version) -> Iterator[Finding]:
    for index, node in g.each():
        if node.domain not in ("", "ai.onnx"):
            continue
        status = support.op_status(node.op_type, version)
        if status == "unsupported":
            yield _finding("unsupported-op", ERROR, g, index, node,
                           f"TensorRT {_release(version)}'s ONNX parser has no importer for {node.op_type}")
        elif status == "unknown":
            yield _finding("unknown-op", WARNING, g, index, node,
                           f"{node.op_type} is not in TensorRT's ONNX operator table; the parser may reject it")


def _resize_scales(g: Graph, node) -> tuple[list[float] | None, str]:
    """Per-axis scale factors of a Resize (from constant scales, or constant sizes over a known input shape)."""
    inputs = list(node.input) + [""] * 4
    if node.op_type == "Upsample" or (g.opset or 11) < 11:  # (X, scales) before opset 11
        inputs = [inputs[0], "", inputs[1], ""]
    rank = len(g.shapes.get(inputs[0]) or [])
    axes = g.attr(node, "axes")
    scales = g.constant(inputs[2]) if inputs[2] else None
    if scales is not None and scales.size:
        values = [float(v) for v in scales.reshape(-1)]
    elif inputs[3] and g.constant(inputs[3]) is not None:
        sizes = [int(v) for v in g.constant(inputs[3]).reshape(-1)]
        in_shape = g.shapes.get(inputs[0])
        dims = [in_shape[a] for a in axes] if axes and in_shape else in_shape
        if not dims or len(dims) != len(sizes) or any(d is None or d == 0 for d in dims):
            return None, "its input shape is not static"
        values = [s / d for s, d in zip(sizes, dims)]
    else:
        return None, "its scales/sizes are computed at run time"
    if axes:
        full = [1.0] * (rank or max(axes) + 1)
        for a, v in zip(axes, values):
            full[a] = v
        values = full
    return values, ""


def check_resize(g: Graph, version) -> Iterator[Finding]:
    for index, node in g.each("Resize", "Upsample"):
        mode = g.attr(node, "mode", "nearest")
        in_type = g.types.get(node.input[0])
        if in_type in (onnx_type("UINT8"), onnx_type("BOOL")):
            yield _finding("resize-type", ERROR, g, index, node,
                           f"Resize of a {type_name(in_type)} tensor: TensorRT resizes float and int tensors only")
        if g.attr(node, "antialias", 0):
            yield _finding("resize-antialias", ERROR, g, index, node, "antialiased Resize is not supported")
        coord = g.attr(node, "coordinate_transformation_mode", "half_pixel")
        if node.op_type == "Resize" and coord not in support.RESIZE_COORDINATE_MODES:
            yield _finding("resize-coordinates", ERROR, g, index, node,
                           f"coordinate_transformation_mode {coord!r} is not supported (TensorRT takes "
                           f"{', '.join(sorted(support.RESIZE_COORDINATE_MODES))})")
        policy = g.attr(node, "keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            yield _finding("resize-aspect-policy", ERROR, g, index, node,
                           f"keep_aspect_ratio_policy {policy!r} is not supported (only 'stretch')")
        innermost = support.RESIZE_INNERMOST_AXES.get(mode)
        if innermost is None:
            continue
        scales, why = _resize_scales(g, node)
        if scales is None:
            if mode == "cubic":
                yield _finding("resize-cubic-axes", WARNING, g, index, node,
                               f"cubic Resize: cannot verify it only resizes the {innermost} innermost axes ({why})")
            continue
        outer = [axis for axis, s in enumerate(scales[:-innermost]) if s != 1.0]
        if outer:
            yield _finding(f"resize-{mode}-axes", ERROR, g, index, node,
                           f"{mode} Resize changes axis {outer} (scales {scales}); TensorRT resizes {mode} only "
                           f"along the {innermost} innermost axes")


def check_scatternd(g: Graph, version) -> Iterator[Finding]:
    for index, node in g.each("ScatterND"):
        reduction = g.attr(node, "reduction", "none")
        if reduction != "none":
            yield _finding("scatternd-reduction", ERROR, g, index, node,
                           f"ScatterND with reduction={reduction!r}: TensorRT supports plain ScatterND only")


def _qdq_tensors(g: Graph) -> set[str]:
    """Tensors that belong to Q/DQ pairs (quantized values and zero points), which the Q/DQ rules judge."""
    names = set()
    for _, node in g.each("QuantizeLinear", "DequantizeLinear"):
        names.update(node.input[2:3])
        if node.op_type == "QuantizeLinear":
            names.update(node.output)
        else:
            names.add(node.input[0])
    return names


def check_uint8_inside(g: Graph, version) -> Iterator[Finding]:
    uint8 = onnx_type("UINT8")
    io = set(g.inputs) | set(g.outputs)
    skip = _qdq_tensors(g)
    for index, node in g.each():
        for name in node.output:
            if g.types.get(name) == uint8 and name not in io and name not in skip:
                yield _finding("uint8-inside", ERROR, g, index, node,
                               f"produces UINT8 tensor {name!r} inside the network; TensorRT takes UINT8 only as a "
                               "network input or output (compute in float or int32 and cast at the boundary)")


def check_uint8_cast(g: Graph, version) -> Iterator[Finding]:
    uint8 = onnx_type("UINT8")
    floats = {onnx_type("FLOAT"), onnx_type("FLOAT16")}
    for index, node in g.each("Cast"):
        source, target = g.types.get(node.input[0]), g.attr(node, "to")
        if target == uint8 and source not in floats | {uint8}:
            yield _finding("uint8-cast", ERROR, g, index, node,
                           f"Cast {type_name(source)} -> UINT8: TensorRT casts to UINT8 from FLOAT or FLOAT16 only")
        if source == uint8 and target not in floats | {uint8}:
            yield _finding("uint8-cast", ERROR, g, index, node,
                           f"Cast UINT8 -> {type_name(target)}: TensorRT casts UINT8 to FLOAT or FLOAT16 only")


def check_transpose_uint8(g: Graph, version) -> Iterator[Finding]:
    uint8 = onnx_type("UINT8")
    for index, node in g.each("Transpose"):
        if g.types.get(node.input[0]) == uint8:
            yield _finding("transpose-uint8", ERROR, g, index, node,
                           "Transpose of a UINT8 tensor is not supported: cast to float first (e.g. the HWC image "
                           "input before the NCHW transpose)")


def _is_weight(g: Graph, node) -> bool:
    source = node.input[0]
    if g.is_constant(source):
        return True
    producer = g.producer.get(source)
    return node.op_type == "DequantizeLinear" and producer is not None and producer.op_type == "QuantizeLinear" \
        and g.is_constant(producer.input[0])


def check_qdq(g: Graph, version) -> Iterator[Finding]:
    float16 = {onnx_type("FLOAT16"), onnx_type("BFLOAT16")}
    for index, node in g.each("QuantizeLinear", "DequantizeLinear"):
        scale_name = node.input[1] if len(node.input) > 1 else ""
        scale = g.constant(scale_name) if scale_name else None
        if scale is None:
            yield _finding("qdq-scale-constant", ERROR, g, index, node,
                           f"scale {scale_name!r} is computed at run time; TensorRT needs constant scales")
        else:
            if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                yield _finding("qdq-scale-positive", ERROR, g, index, node,
                               f"scale {scale_name!r} has zero, negative or non-finite values (min "
                               f"{float(np.min(scale)):.3g}); TensorRT needs positive scales")
            if scale.size > 1 and not _is_weight(g, node) and g.attr(node, "block_size") is None:
                yield _finding("qdq-per-axis-activation", ERROR, g, index, node,
                               f"per-axis scale ({scale.size} values) on an activation; TensorRT quantizes "
                               "activations per tensor and weights per channel")
        if len(node.input) > 2 and node.input[2]:
            zero = g.constant(node.input[2])
            if zero is None:
                yield _finding("qdq-zero-point", ERROR, g, index, node,
                               f"zero point {node.input[2]!r} is computed at run time; TensorRT needs all-zero "
                               "constant zero points (symmetric quantization)")
            elif np.any(zero.astype(np.float64) != 0):
                yield _finding("qdq-zero-point", ERROR, g, index, node,
                               f"non-zero zero point {node.input[2]!r}: TensorRT quantizes symmetrically (zero "
                               "points all 0, int8)")
            elif g.types.get(node.input[2]) == onnx_type("UINT8"):
                yield _finding("qdq-uint8", ERROR, g, index, node,
                               f"UINT8 zero point {node.input[2]!r}: TensorRT quantizes to INT8 only and refuses it; "
                               "export the tensorrt INT8 flavour (int8 zero points, all 0)")
        scale_type = g.types.get(scale_name)
        data_type = g.types.get(node.input[0]) if node.op_type == "QuantizeLinear" else None
        if (scale_type in float16 or data_type in float16) and (g.opset or 0) < support.QDQ_FLOAT16_OPSET:
            yield _finding("qdq-float16-opset", ERROR, g, index, node,
                           f"float16 Q/DQ needs opset {support.QDQ_FLOAT16_OPSET} or newer (this model is opset "
                           f"{g.opset}); export the int8 graph with --opset {support.QDQ_FLOAT16_OPSET}")


# The output-channel axis of each weighted operator's weight, where TensorRT takes per-channel weight scales:
# Conv's weight is (C_out, C_in/g, kH, kW), ConvTranspose's (C_in, C_out/g, kH, kW), so its axis is 1.
WEIGHT_CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1}


def check_weight_axis(g: Graph, version) -> Iterator[Finding]:
    consumers = {}
    for _, node in g.each():
        for position, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, position))
    for index, node in g.each("DequantizeLinear"):
        scale = g.constant(node.input[1]) if len(node.input) > 1 else None
        if scale is None or scale.size <= 1:
            continue
        axis = g.attr(node, "axis", 1)
        for user, position in consumers.get(node.output[0], []):
            expected = WEIGHT_CHANNEL_AXIS.get(user.op_type)
            if position != 1 or expected is None or axis == expected:
                continue
            yield _finding("qdq-weight-axis", ERROR, g, index, node,
                           f"per-channel weight scales of {user.op_type} {g.name(user)!r} on axis {axis}; TensorRT "
                           f"takes them along the output channels, axis {expected} of its weight")


def check_float64(g: Graph, version) -> Iterator[Finding]:
    double = onnx_type("DOUBLE")
    for index, node in g.each():
        for name in node.output:
            if g.types.get(name) == double:
                yield _finding("float64", WARNING, g, index, node,
                               f"FLOAT64 tensor {name!r}: TensorRT casts doubles to float32 (clamping to +-FLT_MAX)")
                break


RULES: tuple[Rule, ...] = (
    Rule("opset-range", ERROR, "the model's opset is inside the release's parser range", check_opset),
    Rule("dangling-input", ERROR, "every node input is a graph input, an initializer or a node's output",
         check_dangling_input),
    Rule("custom-op", ERROR, "no operators from other domains (they need a TensorRT plugin)", check_custom_domain),
    Rule("unsupported-op", ERROR, "every operator has a parser importer (unknown-op warns about operators the "
         "table does not list)", check_unsupported_op),
    Rule("resize", ERROR, "Resize/Upsample attributes the importer accepts; cubic only along the two innermost "
         "axes, linear the three innermost", check_resize),
    Rule("scatternd-reduction", ERROR, "ScatterND without reduction", check_scatternd),
    Rule("uint8-inside", ERROR, "UINT8 only as network input or output", check_uint8_inside),
    Rule("uint8-cast", ERROR, "UINT8 casts only to and from FLOAT/FLOAT16", check_uint8_cast),
    Rule("transpose-uint8", ERROR, "no Transpose of UINT8 tensors", check_transpose_uint8),
    Rule("qdq", ERROR, "Q/DQ TensorRT can quantize: constant positive scales, all-zero INT8 zero points, "
         "per-axis scales on weights only, float16 scales from opset 19", check_qdq),
    Rule("qdq-weight-axis", ERROR, "per-channel weight scales along the output channels (Conv axis 0, "
         "ConvTranspose axis 1)", check_weight_axis),
    Rule("float64", WARNING, "no float64 tensors (TensorRT casts them down)", check_float64),
)


def lint_model(model, tensorrt_version: str = "10.3") -> list[Finding]:
    """Every finding for ``model`` (an onnx.ModelProto) under TensorRT ``tensorrt_version``, errors first."""
    version = parse_target(tensorrt_version)
    g = Graph(model)
    findings = [f for rule in RULES for f in rule.check(g, version)]
    return sorted(findings, key=lambda f: f.severity != ERROR)


def lint_file(path, tensorrt_version: str = "10.3") -> list[Finding]:
    return lint_model(load_onnx(path, check=False), tensorrt_version)  # flaws are the lint's to report


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == ERROR]


def findings_json(findings: list[Finding]) -> str:
    return json.dumps([asdict(f) for f in findings], indent=2)


def _release(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))

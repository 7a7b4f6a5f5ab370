"""``qdq_cpu``: INT8 in the QDQ form ONNX Runtime and OpenVINO fuse into integer kernels on CPUs.

The layout those runtimes fuse (and what was measured on these models): uint8 activations with zero points
(asymmetric, from the calibrated min/max), int8 symmetric weights, per output channel for Conv and per tensor for
MatMul weights (per-channel 3-D MatMul weights crashed ONNX Runtime's QLinearMatMul on OffSeg), Q/DQ around each
quantized operator's inputs and output so DequantizeLinear -> Conv -> QuantizeLinear becomes one QLinearConv (symmetric
int8 activations were left unfused by ONNX Runtime and ran slower than FP32). Softmax, the attention MatMuls of two
activations and the FP16 pass's float32 islands (normalisations, SegNeXt's NMF, coordinate arithmetic) are not
quantized: the probabilities stay float32 (an attention MatMul whose inputs both arrive quantized from quantized
neighbours multiplies those same values either way).

Two rewrites turn float round trips into integer kernels (each measured on trained cgrseg_t and segnext_t, 2 threads,
an AVX-512 VNNI EPYC; the graph's accuracy is checked like every INT8 export's):
- GELU: ONNX Runtime has no integer GELU, so DequantizeLinear -> Gelu -> QuantizeLinear ran three float passes
  over the networks' widest tensors (nearly a third of cgrseg_t's INT8 time). It becomes x * sigmoid(1.702 x) in the QDQ
  pairs ONNX Runtime fuses: QLinearSigmoid (a 256-entry table; the 1.702 goes into its input scale) and QLinearMul.
  This is GELU's sigmoid approximation (at most 0.02 from GELU, about one quantization step of these tensors): it
  moved the two fixtures' INT8 mIoU by +0.06 and +0.11 points, and the activation takes 1.6x less time. (A
  256-entry table in standard ops, Cast + Gather, is exact, but ONNX Runtime's Gather ran 4x slower than the float
  chain.)
- BatchNormalization that no convolution absorbs (SegNeXt's pre-norms after skip connections, CGRSeg's after its
  gating products) becomes the same per-channel affine map as a 1x1 depthwise Conv: one QLinearConv.
The stem convolution over the image's 3 channels stays float: ONNX Runtime's integer kernel ran it at half the float
one's speed.

ONNX Runtime's QDQ quantizer does the placement (it is the reference for what ONNX Runtime fuses); segdeploy gives
it the ranges from its own calibration (so every flavour shares one calibration run), the nodes to leave in float
and the per-tensor MatMul weights.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx

from segdeploy.errors import ArtifactError
from segdeploy.export.passes import PassReport, op_counts
from segdeploy.export.passes.float32_islands import decide_float32
from segdeploy.export.passes.graph_index import GraphIndex, node_label, rebuild, toposort
from segdeploy.export.passes.quant_rules import attention_core, weight_input

# What gets Q/DQ: the integer kernels (Conv, MatMul, Gemm) and the operators that keep a tensor in uint8 between
# them, so the runtime does not dequantize and requantize around every reshape, pool, resize or skip connection.
# Not Slice: OpenVINO 2026.4 moves the dequantization of a quantized Slice into a shape that no longer broadcasts
# (OffSeg's CARAFE, "Argument shapes are inconsistent") and refuses the graph; slicing float values costs nothing.
CPU_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Concat", "MaxPool", "AveragePool",
                "GlobalAveragePool", "Resize", "Relu", "Clip", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
                "Flatten", "Split", "Pad")


def quantize_cpu(model: onnx.ModelProto, ranges, *, keep: dict[str, str] | None = None,
                 op_types: tuple[str, ...] = CPU_OP_TYPES) -> tuple[onnx.ModelProto, PassReport]:
    """``ranges(tensor) -> (low, high) | None``: the calibrated range of a float tensor (asymmetric)."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    keep = dict(keep or {})
    model, depthwise = batchnorm_as_depthwise(model, keep)
    index = GraphIndex(model)
    excluded = excluded_nodes(index, keep)
    table = {}
    for name in _float_tensors(index):
        found = ranges(name)
        if found is not None and np.isfinite(found).all():
            low, high = min(float(found[0]), 0.0), max(float(found[1]), 0.0)
            table[name] = TensorData(lowest=np.float32(low), highest=np.float32(high))
    per_tensor = {n.input[1]: [{"symmetric": True}] for n in index.nodes
                  if n.op_type == "MatMul" and weight_input(index, n) is not None}
    extra = {"ActivationSymmetric": False, "WeightSymmetric": True, "MatMulConstBOnly": True,
             "TensorQuantOverrides": per_tensor, "ForceQuantizeNoInputCheck": False}
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # the quantizer warns per tensor it finds no range for
    try:
        quantizer = QDQQuantizer(index.model, True, False, QuantType.QInt8, QuantType.QUInt8,
                                 TensorsData(CalibrationMethod.MinMax, table), [],
                                 [name for name in excluded if name], list(op_types), extra)
        result = quantizer.quantize_model()
    except Exception as exc:  # noqa: BLE001 - the quantizer's failures are reported in one line
        raise ArtifactError(f"ONNX Runtime's QDQ quantizer failed ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    finally:
        logger.setLevel(level)
    del result.graph.value_info[:]
    ordered = toposort(list(result.graph.node), [i.name for i in result.graph.input],
                       [t.name for t in result.graph.initializer])
    del result.graph.node[:]
    result.graph.node.extend(ordered)  # the quantizer appends its Q/DQ nodes at the end
    result, lookups = gelu_as_lookups(result)
    onnx.checker.check_model(result)
    quantized = [name for name in quantized_layers(result) if name not in excluded]
    notes = [f"{len(quantized)} layers run in int8 (uint8 activations, int8 weights: per channel for Conv, per tensor "
             f"for MatMul); {len(excluded)} nodes kept in float32",
             f"{lookups} GELUs as x * sigmoid(1.702 x) in integer kernels; {depthwise} BatchNormalizations as 1x1 "
             f"depthwise convolutions"]
    report = PassReport("qdq_cpu", len(model.graph.node), len(result.graph.node), "onnxruntime.quantization "
                        "(QDQQuantizer) with segdeploy's ranges", notes, op_counts(result))
    report.details = {"quantized": quantized,
                      "not_quantized": [{"node": n, "reason": why} for n, why in excluded.items()]}
    return result, report


def _float_tensors(index: GraphIndex) -> list[str]:
    names = [n for n in index.graph_inputs if index.is_float(n)]
    names += [o for node in index.nodes for o in node.output if index.is_float(o)]
    return names


def batchnorm_as_depthwise(model: onnx.ModelProto, keep: dict[str, str]) -> tuple[onnx.ModelProto, int]:
    """Inference BatchNormalization on an NCHW tensor (one not folded into a convolution: after a skip connection)
    as the same per-channel affine map in a 1x1 depthwise Conv, which quantizes into one integer kernel instead of
    a float round trip (DequantizeLinear, BatchNormalization, QuantizeLinear). Same output tensor, so the calibrated
    ranges still apply."""
    index = GraphIndex(model)
    nodes, added, count = [], [], 0
    for node in index.nodes:
        values = [index.constant(name) for name in node.input[1:5]] if node.op_type == "BatchNormalization" else []
        training = any(a.name == "training_mode" and a.i for a in node.attribute)
        if (len(values) != 4 or any(v is None for v in values) or training or index.rank(node.input[0]) != 4
                or node.name in keep or len(node.output) != 1):
            nodes.append(node)
            continue
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        scale, shift, mean, var = (np.asarray(v, np.float64) for v in values)
        gain = scale / np.sqrt(var + epsilon)
        weight, bias = index.fresh(f"{node.name}_depthwise_weight"), index.fresh(f"{node.name}_depthwise_bias")
        added += [onnx.numpy_helper.from_array(gain.astype(np.float32).reshape(-1, 1, 1, 1), weight),
                  onnx.numpy_helper.from_array((shift - mean * gain).astype(np.float32), bias)]
        nodes.append(onnx.helper.make_node("Conv", [node.input[0], weight, bias], list(node.output), name=node.name,
                                           group=len(gain), kernel_shape=[1, 1]))
        count += 1
    if not count:
        return model, 0
    return rebuild(model, nodes, [*model.graph.initializer, *added]), count


def gelu_as_lookups(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """DequantizeLinear -> Gelu -> QuantizeLinear as x * sigmoid(1.702 x) in the QDQ pairs ONNX Runtime runs as
    integer kernels: QLinearSigmoid (a 256-entry table) and QLinearMul."""
    index = GraphIndex(model, infer=False)
    sigmoid_scale, sigmoid_zero = index.fresh("gelu_sigmoid_scale"), index.fresh("gelu_sigmoid_zero_point")
    added = [onnx.numpy_helper.from_array(np.array(1 / 255, np.float32), sigmoid_scale),
             onnx.numpy_helper.from_array(np.array(0, np.uint8), sigmoid_zero)]
    nodes, count = [], 0
    for node in index.nodes:
        source = index.producer.get(node.input[0]) if node.op_type == "Gelu" else None
        sinks = index.consumers.get(node.output[0], []) if source is not None else []
        scale = index.constant(source.input[1]) if source is not None and source.op_type == "DequantizeLinear" \
            else None
        if scale is None or scale.size != 1 or len(sinks) != 1 or sinks[0].op_type != "QuantizeLinear" \
                or node.output[0] in index.graph_outputs:
            nodes.append(node)
            continue
        base = node.name or node.output[0]
        steep = index.fresh(f"{base}_sigmoid_input_scale")
        added.append(onnx.numpy_helper.from_array((scale * 1.702).astype(np.float32).reshape(()), steep))
        t = {k: index.fresh(f"{base}_{k}") for k in ("steep", "gate", "gate_q", "gate_dq")}
        nodes += [
            onnx.helper.make_node("DequantizeLinear", [source.input[0], steep, *source.input[2:3]], [t["steep"]],
                                  name=index.fresh(f"{base}_steep_DequantizeLinear")),
            onnx.helper.make_node("Sigmoid", [t["steep"]], [t["gate"]], name=index.fresh(f"{base}_Sigmoid")),
            onnx.helper.make_node("QuantizeLinear", [t["gate"], sigmoid_scale, sigmoid_zero], [t["gate_q"]],
                                  name=index.fresh(f"{base}_gate_QuantizeLinear")),
            onnx.helper.make_node("DequantizeLinear", [t["gate_q"], sigmoid_scale, sigmoid_zero], [t["gate_dq"]],
                                  name=index.fresh(f"{base}_gate_DequantizeLinear")),
            onnx.helper.make_node("Mul", [node.input[0], t["gate_dq"]], list(node.output), name=base)]
        count += 1
    if not count:
        return model, 0
    return rebuild(model, nodes, [*model.graph.initializer, *added]), count


def excluded_nodes(index: GraphIndex, keep: dict[str, str]) -> dict[str, str]:
    """node name -> why it stays float32: the caller's choices, Softmax, the attention core, the float32 islands."""
    islands = decide_float32(index, {}, {}, overflow=float("inf"))
    core = attention_core(index)
    out = {}
    for i, node in enumerate(index.nodes):
        label = node_label(node, i)
        if node.name in keep:
            out[label] = f"kept: {keep[node.name]}"
        elif id(node) in core:
            out[label] = core[id(node)]
        elif i in islands:
            out[label] = f"float32 island: {islands[i]}"
        elif _image_stem(index, node):
            out[label] = "the stem convolution over the image's channels (slower in int8 on ONNX Runtime)"
    return out


def _image_stem(index: GraphIndex, node) -> bool:
    """A dense Conv over at most 4 input channels: the stem over the image's colours, whether it reads the graph's
    input or the in-graph normalisation's output (leaving it float also spares quantizing the image)."""
    if node.op_type != "Conv" or len(node.input) < 2 or any(a.name == "group" and a.i != 1 for a in node.attribute):
        return False
    shape = index.shapes.get(node.input[1])
    return bool(shape) and len(shape) == 4 and shape[1] is not None and shape[1] <= 4


def quantized_layers(model: onnx.ModelProto) -> list[str]:
    """The Conv/ConvTranspose/Gemm/MatMul nodes whose inputs arrive through DequantizeLinear."""
    producers = {o: n for n in model.graph.node for o in n.output}
    names = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            sources = [producers.get(i) for i in node.input[:2]]
            if all(s is not None and s.op_type == "DequantizeLinear" for s in sources):
                names.append(node.name)
    return names

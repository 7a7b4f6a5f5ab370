"""``qdq_cpu``: INT8 in the QDQ form ONNX Runtime and OpenVINO fuse into integer kernels on CPUs.

The layout those runtimes fuse (and what was measured on these models): uint8 activations with zero points
(asymmetric, from the calibrated min/max), int8 symmetric weights, per output channel for Conv and per tensor for
MatMul weights (per-channel 3-D MatMul weights crashed ONNX Runtime's QLinearMatMul on OffSeg), Q/DQ around each
quantized operator's inputs and output so DequantizeLinear -> Conv -> QuantizeLinear becomes one QLinearConv (symmetric
int8 activations were left unfused by ONNX Runtime and ran slower than FP32). Softmax, the attention MatMuls of two
activations and the FP16 pass's float32 islands (normalisations, SegNeXt's NMF, coordinate arithmetic) are not
quantized: the probabilities stay float32 (an attention MatMul whose inputs both arrive quantized from quantized
neighbours multiplies those same values either way).

GELU stays in float between a DequantizeLinear and a QuantizeLinear: ONNX Runtime has no integer GELU and fuses
neither into a QLinearConv, so that chain (and its two conversions) is what bounds this flavour's gain on GELU
networks. The alternatives were measured and lose: a 256-entry lookup table in standard ops (Cast + Gather) is
exact, but ONNX Runtime's Gather copies element by element and ran far slower than the float chain (GatherElements
only matched it); GELU as QLinearSigmoid + QLinearMul (x * sigmoid(1.702 x)) ran slower too, and is not GELU.

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
from segdeploy.export.passes.fp16 import decide_float32
from segdeploy.export.passes.graph_index import GraphIndex, node_label, toposort
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
    onnx.checker.check_model(result)
    quantized = [name for name in quantized_layers(result) if name not in excluded]
    notes = [f"{len(quantized)} layers run in int8 (uint8 activations, int8 weights: per channel for Conv, per tensor "
             f"for MatMul); {len(excluded)} nodes kept in float32"]
    report = PassReport("qdq_cpu", len(model.graph.node), len(result.graph.node), "onnxruntime.quantization "
                        "(QDQQuantizer) with segdeploy's ranges", notes, op_counts(result))
    report.details = {"quantized": quantized,
                      "not_quantized": [{"node": n, "reason": why} for n, why in excluded.items()]}
    return result, report


def _float_tensors(index: GraphIndex) -> list[str]:
    names = [n for n in index.graph_inputs if index.is_float(n)]
    names += [o for node in index.nodes for o in node.output if index.is_float(o)]
    return names


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
    return out


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

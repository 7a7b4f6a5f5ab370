"""``qdq_openvino``: INT8 in the form OpenVINO's CPU plugin runs fastest: symmetric int8 Q/DQ on the inputs of the
compute layers (and the skip inputs of residual Adds), float32 everywhere else.

OpenVINO turns each DequantizeLinear -> Conv/MatMul pair into an int8 kernel by itself (its low-precision
transformations move the dequantization past the layer), so it needs Q/DQ only where integer arithmetic pays. The
cpu flavour's full QDQ form (uint8 activations, Q/DQ around every reshape, pool, resize and concat, which ONNX
Runtime needs to fuse QLinearConv chains) leaves OpenVINO requantizing between those operators: on the five trained
fixtures it ran on OpenVINO at 0.96-1.57x the best FP32 CPU path, against 1.32-1.70x for this layout
(benchmarks/results/precision-2026-12-01-rerun.md). ONNX Runtime does not fuse this layout (a Conv without a
QuantizeLinear after it stays a float Conv): run it on OpenVINO.

The placement is qdq_tensorrt.py's plan (per-output-channel int8 weights, per-tensor activation scales, zero points
0, nothing in the attention core, the float32 islands or matrix-vector products), checked on the finished graph as
there; unlike the tensorrt flavour the rest of the graph stays float32, which is what OpenVINO computes in on a CPU,
and no opset 19 is needed.
"""
from __future__ import annotations

import onnx

from segdeploy.export.passes import PassReport, op_counts
from segdeploy.export.passes.qdq_tensorrt import (
    check_placement,
    insert_qdq,
    plan_details,
    plan_symmetric,
    summarize_skipped,
)


def quantize_openvino(model: onnx.ModelProto, ranges, *, keep: dict[str, str] | None = None
                      ) -> tuple[onnx.ModelProto, PassReport]:
    """``ranges(tensor) -> (low, high) | None``: the calibrated range of an activation (symmetric use: max |.|)."""
    plan = plan_symmetric(model, ranges, dict(keep or {}))
    result = insert_qdq(plan)
    onnx.checker.check_model(result)
    check_placement(result, "qdq_openvino")
    notes = [f"{len(plan['layers'])} layers run in int8 (symmetric: int8 weights per output channel, int8 "
             f"activations per tensor), {len(plan['residuals'])} residual Add skip inputs; "
             f"{len(plan['skipped'])} weighted layers left in float32: " + summarize_skipped(plan["skipped"])]
    report = PassReport("qdq_openvino", len(model.graph.node), len(result.graph.node), "segdeploy", notes,
                        op_counts(result))
    report.details = plan_details(plan)
    return result, report

"""PyTorch -> ONNX graph: trace, check the ops, simplify.

The TorchScript exporter (``torch.onnx.export(dynamo=False)``) is used on purpose: the families' export switches
are written for it (shape arithmetic traced into Shape/Gather ops), it takes ``dynamic_axes`` directly, and it is
fast (seconds, where the torch.export-based exporter took minutes on LRFormer and unrolled its pools into thousands
of Gathers, see spec/lrformer.md).

Opset: ``DEFAULT_OPSET`` = 20 for every artifact. It is the newest opset TensorRT 10.x parses (9-20, JetPack 6
ships 10.3); it has float16 QuantizeLinear/DequantizeLinear (opset >= 19), which the TensorRT INT8 flavour needs;
and it exports nn.GELU as one Gelu node, which ONNX Runtime fuses: at opset 17 GELU is Div-Erf-Add-Mul-Mul, the
simplifier folds the trailing Mul into the next Conv, ORT's fusion no longer matches and Erf alone took 14 % of
CGRSeg-T's CPU time (benchmarks/README.md). Opset 17 (LayerNormalization) is the oldest accepted.
"""
from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

from segdeploy.errors import InputError, SegdeployError
from segdeploy.export.passes import PassReport
from segdeploy.export.passes.check_ops import MIN_OPSET, check_standard_ops
from segdeploy.export.passes.simplify import SIMPLIFIERS
from segdeploy.export.passes.simplify import simplify as simplify_pass

if TYPE_CHECKING:  # onnx (and torch) load when a graph is made, not when the exporter's names are read
    import onnx

DEFAULT_OPSET = 20
# Bumped whenever build_onnx or its passes change the graphs they make for the same request (the export-time gathers and
# the folded scales made it 2, the cpu flavour's integer GELU and depthwise pre-norms 3, the families' INT8 float
# modules 4, OffSeg's channels-first offset learning 5, its sums over the classes as convolutions 6 and FreqFusion's
# masks in CARAFE's sub-pixel layout 7, GroupNorm written out over the map's axes 8): the export caches key on it, so an
# entry made by older code is made again.
GRAPH_REVISION = 8
MAX_OPSET = 20  # the TorchScript exporter's last opset, and TensorRT 10.x's


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise InputError(f"--opset must be between {MIN_OPSET} (LayerNormalization) and {MAX_OPSET} (the newest the "
                         f"exporter writes and TensorRT 10 reads), not {opset}")


def dynamic_axes(graph) -> dict:
    spatial = {0: "batch", 1: "height", 2: "width"} if graph.normalize is not None else \
        {0: "batch", 2: "height", 3: "width"}
    out_axes = {0: "batch", 1: "height", 2: "width"} if graph.to_mask is not None else \
        {0: "batch", 2: "out_height", 3: "out_width"}
    return {graph.input_name: spatial, graph.output_name: out_axes}


def trace(graph, batch: int, height: int, width: int, dynamic: bool = False,
          opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Trace ``graph`` (a DeployGraph) at (batch, height, width) into an ONNX model (static, or with dynamic
    batch/H/W axes)."""
    import onnx
    import torch

    check_opset(opset)
    example = graph.example_input(batch, height, width)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # TracerWarnings flag Python-side shape arithmetic, which the families route through tensors where it matters
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(graph, (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=[graph.input_name], output_names=[graph.output_name],
                              dynamic_axes=dynamic_axes(graph) if dynamic else None, do_constant_folding=True,
                              verbose=False)
        except SegdeployError:
            raise
        except Exception as exc:  # the exporter's messages can hold pages of IR: keep the first line only
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise SegdeployError(f"the ONNX exporter failed on {graph.spec.name}: {type(exc).__name__}: "
                                 f"{first}") from None
    model = onnx.load_from_string(buffer.getvalue())
    model.producer_name = "segdeploy (torch.onnx TorchScript exporter)"
    return model


def build_onnx(graph, batch: int, height: int, width: int, *, dynamic: bool = False, opset: int = DEFAULT_OPSET,
               simplify: bool = True, simplifiers=SIMPLIFIERS) -> tuple[onnx.ModelProto, list[PassReport]]:
    """trace -> check_standard_ops -> simplify (-> check again): the graph an artifact holds, minus its manifest."""
    import onnx
    import torch

    model = trace(graph, batch, height, width, dynamic, opset)
    reports = [PassReport("trace", 0, len(model.graph.node), f"torch {torch.__version__}")]
    model, report = check_standard_ops(model)
    reports.append(report)
    if simplify:
        model, report = simplify_pass(model, tuple(simplifiers))
        reports.append(report)
        model, report = check_standard_ops(model)  # a simplifier must not introduce contrib ops either
        reports.append(report)
        from segdeploy.export.passes.fold_scales import fold_scales  # ONNX: loaded where it runs

        model, report = fold_scales(model)
        reports.append(report)
    onnx.checker.check_model(model)
    return model, reports

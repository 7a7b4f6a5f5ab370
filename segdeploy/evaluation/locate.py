"""Where does an ONNX artifact start to diverge from its reference? The artifact's intermediate tensors are compared
with those of a reference ONNX graph exported afresh from the PyTorch reference with the artifact's own recorded
settings (export is deterministic, so tensor names line up). Both run in ONNX Runtime with graph optimisations
disabled, so every stored node runs as stored; the first node in topological order whose output leaves the FP32
tolerance is named. Comparing against the artifact itself with optimisations off would not do: a corrupted weight
is in both.
"""
from __future__ import annotations

import numpy as np
import onnx

from segdeploy.evaluation.compare import bound
from segdeploy.evaluation.tolerances import TOLERANCES
from segdeploy.export.trace import build_onnx
from segdeploy.runtimes.onnxruntime import OnnxRuntimeRunner

REL_TOLERANCE = TOLERANCES["fp32"].max_rel


def reference_onnx(graph, manifest) -> onnx.ModelProto:
    """Re-export the reference with the settings the artifact records (its traced shape, opset, simplifier)."""
    batch, height, width = manifest.profile.opt
    tool = manifest.export.simplifier
    model, _ = build_onnx(graph, batch, height, width, dynamic=manifest.export.dynamic, opset=manifest.export.opset,
                          simplify=manifest.export.simplify and tool is not None,
                          **({"simplifiers": (tool,)} if tool else {}))
    return model


def _with_outputs(model: onnx.ModelProto, names: list[str], types: dict[str, int]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.output[:]
    for name in names:
        copy.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
    return copy


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort; untyped tensors are just not compared
        inferred = model
    types = {}
    for value in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input):
        elem = value.type.tensor_type.elem_type
        if elem:
            types[value.name] = elem
    return types


def locate_divergence(candidate: onnx.ModelProto, reference: onnx.ModelProto, feed: dict, *,
                      threads: int | None = None, chunk: int = 96) -> dict:
    """Name the first node of ``candidate`` whose output differs from the same-named tensor of ``reference``."""
    cand_types, ref_types = _tensor_types(candidate), _tensor_types(reference)
    producers = {}
    order = []
    for node in candidate.graph.node:
        for out in node.output:
            if out and out in cand_types and ref_types.get(out) == cand_types[out]:
                producers[out] = node
                order.append(out)
    total = sum(len([o for o in node.output if o]) for node in candidate.graph.node)
    if not order:
        return {"found": False, "compared": 0, "intermediates": total,
                "message": "no intermediate tensor names in common with the reference export; cannot locate"}
    compared = 0
    for start in range(0, len(order), chunk):
        names = order[start:start + chunk]
        got = OnnxRuntimeRunner(_with_outputs(candidate, names, cand_types), threads=threads,
                                graph_optimization="disable").infer(feed)
        want = OnnxRuntimeRunner(_with_outputs(reference, names, ref_types), threads=threads,
                                 graph_optimization="disable").infer(feed)
        for name in names:
            compared += 1
            a, b = got[name], want[name]
            if a.shape != b.shape:
                bad, err, tol = True, None, None
            elif np.issubdtype(b.dtype, np.floating):
                err = float(np.abs(a.astype(np.float64) - b).max(initial=0.0))
                tol = bound(b, REL_TOLERANCE)
                bad = not err <= tol  # NaN counts as diverged
            else:
                err, tol = float(np.count_nonzero(a != b)), 0.0
                bad = err > 0
            if bad:
                node = producers[name]
                initializers = {i.name for i in candidate.graph.initializer}
                return {"found": True, "node": node.name, "op_type": node.op_type, "output": name,
                        "max_abs_err": err, "tolerance": tol, "shape": list(a.shape),
                        "inputs": list(node.input),
                        "weights": [i for i in node.input if i in initializers],
                        "compared": compared, "intermediates": total,
                        "message": f"first divergence at node {node.name!r} ({node.op_type}), output {name!r}"}
    return {"found": False, "compared": compared, "intermediates": total,
            "message": "every intermediate shared with the reference is within tolerance; the divergence is in "
                       "tensors the reference does not have"}


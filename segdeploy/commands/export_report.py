"""What export prints when it is done: the artifact's summary table, its precision and its measured accuracy.
"""
from __future__ import annotations

import os

from segdeploy.console import print_table
from segdeploy.evaluation.compare import required, shown


def print_summary(path: str, m) -> None:
    ex, v = m.export, m.validation
    rows = [
        ["artifact", f"{path} ({os.path.getsize(path) / 2**20:.1f} MiB)"],
        ["manifest", f"{os.path.splitext(path)[0]}.json (schema {m.schema_version}, also embedded)"],
        ["input", f"{m.input.name} {m.input.dtype} {m.input.layout} {m.input.shape}"],
        ["output", f"{m.output.name} {m.output.dtype} {m.output.shape} ({m.output.kind})"],
        ["profile", m.profile.describe()],
        ["precision", precision_line(m.precision)],
        ["nodes", f"{ex.nodes_traced} traced -> {ex.nodes}" + (f" ({ex.simplifier})" if ex.simplifier else
                                                                 " (not simplified)")],
        ["opset / options", f"{ex.opset} / {ex.model_options or 'none'}"],
        ["weights", f"{m.weights.source} sha256 {m.weights.sha256[:12]}"],
        ["graph sha256", m.graph_sha256[:12]],
    ]
    if v.get("skipped"):
        rows.append(["verification", f"skipped ({v.get('reason') or 'not compared with PyTorch'})"])
    elif v.get("checks") is not None:  # each criterion with the figure it is judged by

        figures = [f"{c['criterion']} {shown(c['value'], c['unit'], c['op'])} ({required(c)}"
                   f"{'' if c['passed'] else ': FAILED'})" for c in v["checks"]]
        rows.append(["verification", f"{'passed' if v['passed'] else 'FAILED'} on {v['cases']} "
                                     f"input{'s' if v['cases'] != 1 else ''} {v['shapes']}: " + "; ".join(figures)])
    else:  # a manifest written before the checks were recorded
        rows.append(["verification", f"{'passed' if v.get('passed') else 'FAILED'} on {v.get('cases')} inputs"])
    accuracy = m.precision.details.get("accuracy")
    if accuracy:
        rows.append(["accuracy", accuracy_line(accuracy, m.precision.mode)])
    print_table(f"{m.model.name} -> onnx{' (dynamic)' if m.dynamic else ''}", ["", "value"], rows)


def precision_line(p) -> str:
    text = p.mode + (f" ({p.flavour})" if p.flavour else "")
    details = p.details
    if "calibration" in details:
        c = details["calibration"]
        text += f"; calibrated on {c['count']} images ({c['method']})"
    quant = details.get("quantization", {})
    if quant.get("quantized") is not None:
        text += f"; {len(quant['quantized'])} layers in int8, {len(quant.get('not_quantized', []))} left in float"
    for module in details.get("float_modules", []):
        text += f"; {module['module']} in float ({module['nodes']} nodes)"
    islands = (details.get("float16") or quant.get("float16") or {})
    if islands.get("float32_nodes") is not None:
        text += f"; {islands['float32_nodes']} nodes kept in float32"
    mixed = details.get("mixed_precision")
    if mixed:
        text += f"; mixed precision: {len(mixed['kept'])} of {mixed['blocks']} blocks kept in {mixed['kept_in']}"
    return text


def accuracy_line(a: dict, mode: str) -> str:
    text = f"{a['metric']} {a['fp32']:.2f} (fp32) -> {a[mode]:.2f} ({mode}), drop {a['drop']:.2f} on {a['images']} " \
           "held-out images"
    if a.get("budget") is not None:
        text += f" (budget {a['budget']:g})"
    return text

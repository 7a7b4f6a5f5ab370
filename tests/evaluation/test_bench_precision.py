"""The precision comparison's recommendation: INT8 only where the CPU has int8 dot-product instructions and the
row is within its tolerance, any flavour, and the target's miss said as a miss."""
from __future__ import annotations

from segdeploy.evaluation.bench.precision import recommendation


def row(precision, backend, speedup, within=True, ips=None):
    return {"precision": precision, "backend": backend, "status": "ok", "speedup_vs_best_fp32": speedup,
            "within_tolerance": within, "throughput_ips": ips if ips is not None else 10 * speedup,
            "best_fp32": "onnxruntime fp32", "miou_delta": -0.1}


ROWS = [row("fp32", "onnxruntime", 1.0), row("fp32", "openvino", 0.9), row("fp16", "openvino", 0.95),
        row("int8-cpu", "onnxruntime", 1.2), row("int8-tensorrt", "openvino", 1.45),
        row("int8-cpu", "openvino", 1.6, within=False)]


def test_the_fastest_int8_within_tolerance_is_recommended_whichever_flavour():
    text = recommendation({"rows": ROWS, "int8_dot_product": True})
    assert text.startswith("INT8 (tensorrt flavour) on openvino: 1.45x") and "-0.10 points" in text


def test_a_miss_of_the_speed_target_is_said():
    rows = [r for r in ROWS if r["precision"] != "int8-tensorrt"]
    text = recommendation({"rows": rows, "int8_dot_product": True})
    assert "only 1.20x" in text and "target 1.3x" in text and "fastest within tolerance: int8-cpu on onnxruntime" \
        in text


def test_no_int8_for_speed_without_dot_product_instructions():
    text = recommendation({"rows": ROWS, "int8_dot_product": False})
    assert "not recommended for speed" in text and "fastest within tolerance: fp32 on onnxruntime" in text


def test_inaccurate_int8_is_never_recommended():
    rows = [dict(r, within_tolerance=False) if r["precision"].startswith("int8") else r for r in ROWS]
    text = recommendation({"rows": rows, "int8_dot_product": True})
    assert text.startswith("no INT8 row is within") and "fp32 on onnxruntime" in text


def test_bare_int8_is_the_flavour_made_for_each_backend():
    from segdeploy.evaluation.bench.precision import parse_precisions

    assert parse_precisions("fp32,int8", ["onnxruntime"]) == ["fp32", "int8-cpu"]
    assert parse_precisions("fp32,int8", ["onnxruntime", "openvino"]) == ["fp32", "int8-cpu", "int8-openvino"]
    assert parse_precisions("int8,int8-openvino", ["openvino"]) == ["int8-openvino"]
    assert parse_precisions("fp32,int8-tensorrt,int8", ["torch"]) == ["fp32", "int8-tensorrt", "int8-cpu"]


def test_a_flavour_timed_off_its_runtime_is_noted():
    from segdeploy.evaluation.bench.precision import flavour_notes

    rows = [{"precision": p, "backend": b} for p, b in [
        ("int8-openvino", "onnxruntime"), ("int8-openvino", "openvino"), ("int8-cpu", "onnxruntime"),
        ("fp32", "openvino"), ("int8-openvino", "onnxruntime")]]
    notes = flavour_notes(rows)
    assert len(notes) == 1 and notes[0].startswith("int8-openvino is made for openvino: onnxruntime runs it")

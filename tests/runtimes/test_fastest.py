"""The record of the fastest backend per model, precision and CPU: written by bench, read by predict, eval and
export when no --backend is given, each saying why."""
from __future__ import annotations

import json

from segdeploy.cli import main
from segdeploy.evaluation.bench.best import record_bench, record_precisions
from segdeploy.runtimes import fastest

ROW = {"status": "ok", "batch": 1, "streams": 1, "device": "cpu", "layout": "nchw", "model": "segnext_t",
       "precision": "fp32", "height": 512, "width": 512, "threads": 2}


def row(backend, ips, **extra):
    return {**ROW, "backend": backend, "throughput_ips": ips, "latency_ms": {"p50": 1000 / ips}, **extra}


def test_a_comparison_of_two_backends_is_recorded_and_chosen(backend_cache):
    assert fastest.record("segnext_t", "fp32", [{"backend": "onnxruntime", "throughput_ips": 5.0}], threads=2,
                          size=(512, 512), source="test") is None  # nothing compared, nothing learnt
    assert fastest.choose("segnext_t", threads=2).measured is False
    entry = fastest.record("segnext_t", "fp32", [{"backend": "onnxruntime", "throughput_ips": 5.0},
                                                 {"backend": "torch", "throughput_ips": 6.5}], threads=2,
                           size=(512, 512), source="test")
    assert entry["backend"] == "torch" and entry["compared"] == {"onnxruntime": 5.0, "torch": 6.5}
    assert json.loads(backend_cache.read_text())["schema"] == fastest.SCHEMA
    choice = fastest.choose("segnext_t", "fp32", threads=2)
    assert choice.measured and choice.backend == "torch"
    assert "fastest for segnext_t fp32 on this CPU" in choice.reason and "onnxruntime 5.0" in choice.reason
    # another thread count, precision or model is another question
    assert not fastest.choose("segnext_t", "fp32", threads=1).measured
    assert not fastest.choose("segnext_t", "fp16", threads=2).measured
    assert not fastest.choose("cgrseg_t", "fp32", threads=2).measured
    # a caller that takes only ONNX artifacts does not get the model backend
    onnx_only = fastest.choose("segnext_t", "fp32", ("onnx",), threads=2)
    assert not onnx_only.measured and onnx_only.backend in ("onnxruntime", "openvino")


def test_a_damaged_or_foreign_cache_is_ignored(backend_cache):
    for text in ("{not json", json.dumps({"schema": "other", "entries": {}}), json.dumps([1, 2])):
        backend_cache.write_text(text)
        choice = fastest.choose("segnext_t")
        assert not choice.measured and "no bench measurement of segnext_t fp32" in choice.reason
    backend_cache.write_text(json.dumps({"schema": fastest.SCHEMA, "entries": {
        f"{fastest.cpu_key(2)} | segnext_t | fp32": {"backend": "no-such-backend", "throughput_ips": 1.0}}}))
    assert not fastest.choose("segnext_t", threads=2).measured  # an unknown backend is not used


def test_bench_reports_feed_the_record():
    report = {"results": [row("onnxruntime", 8.0), row("openvino", 9.0), row("openvino", 20.0, batch=4),
                          row("onnxruntime", 30.0, streams=2), row("torch", 50.0, layout="channels_last")]}
    (line,) = record_bench(report)
    assert "openvino is the fastest here" in line
    entry = fastest.lookup("segnext_t", "fp32", 2)
    assert entry["backend"] == "openvino" and set(entry["compared"]) == {"onnxruntime", "openvino"}
    precisions = {"model": "cgrseg_t", "size": [512, 512], "threads": 2, "rows": [
        {"status": "ok", "format": "ONNX", "backend": b, "precision": p, "throughput_ips": ips, "p50_ms": 1.0,
         "within_tolerance": ok} for b, p, ips, ok in [
            ("onnxruntime", "fp32", 10.0, True), ("openvino", "fp32", 12.0, True),
            ("onnxruntime", "int8-cpu", 14.0, True), ("openvino", "int8-cpu", 13.0, True),
            ("openvino", "int8-openvino", 19.0, True), ("onnxruntime", "int8-tensorrt", 30.0, False)]]}
    lines = record_precisions(precisions)
    assert any("int8-openvino flavour on openvino" in line for line in lines)
    assert fastest.lookup("cgrseg_t", "int8-cpu", 2)["backend"] == "onnxruntime"
    best = fastest.lookup("cgrseg_t", "int8", 2)
    assert (best["backend"], best["flavour"]) == ("openvino", "int8-openvino")  # the inaccurate row never wins
    advice = fastest.export_advice("cgrseg_t", "int8-cpu", 2)
    assert advice[0].startswith("run it on onnxruntime: the fastest for cgrseg_t int8-cpu")
    assert "export --target openvino" in advice[1]
    assert fastest.export_advice("cgrseg_t", "fp16", 2)[0].startswith("backend: ")


def test_predict_and_eval_use_the_recorded_backend_and_say_why(tmp_path, capsys):
    from goldens import IMAGES
    from segdeploy.evaluation.eval import model_predictor
    from segdeploy.hostinfo import cpu_info

    threads = cpu_info()["usable_cores"]
    fastest.record("segnext_t", "fp32", [{"backend": "torch", "throughput_ips": 9.0},
                                         {"backend": "onnxruntime", "throughput_ips": 3.0}], threads=threads,
                   size=(512, 512), source="test")
    code = main(["predict", "--model", "segnext_t", "--source", str(IMAGES / "grace_hopper.jpg")])
    out = capsys.readouterr().out
    assert code == 0
    assert "backend torch: the fastest for segnext_t fp32 on this CPU" in out and "on torch" in out
    predictor = model_predictor("segnext_t")
    try:
        assert predictor.segmenter.runner.backend == "torch"
        assert predictor.segmenter.backend_reason.startswith("torch: the fastest")
    finally:
        predictor.close()

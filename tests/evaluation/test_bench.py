"""The benchmark's arithmetic, protocol logic, paper comparison and report formats; never its speed."""
from __future__ import annotations

import csv
import io
import json
import sys

import numpy as np
import pytest

from hostile import answer_lines
from segdeploy.cli import main
from segdeploy.errors import InputError, SegdeployError
from segdeploy.evaluation.bench import papers, peak, protocol, reports, run, streams
from segdeploy.evaluation.bench import request as bench_request
from segdeploy.evaluation.bench import stats as bench_stats
from segdeploy.runtimes.base import Runner, TensorInfo, Timing

TINY = dict(height=64, width=64)
FAST = protocol.Protocol(warmup_s=0.0, min_s=0.0, min_iters=3)


class FakeRunner(Runner):
    """A runner whose timing split is known, to check that the bench passes it through untouched."""
    backend = "fake"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def inputs(self):
        return [TensorInfo("input", ("batch", 3, "height", "width"), "float32")]

    def outputs(self):
        return [TensorInfo("logits", ("batch", 2), "float32")]

    def _infer(self, feed):
        self.calls += 1
        self.last_timing = Timing(host_ms=5.0, h2d_ms=1.0, compute_ms=3.0 + self.calls % 2, d2h_ms=0.5)
        return {"logits": np.zeros((feed["input"].shape[0], 2), np.float32)}


def test_latency_stats_match_the_definitions():
    samples = np.arange(1, 101, dtype=float)  # 1..100 ms
    stats = bench_stats.latency_stats(samples)
    assert stats["mean"] == 50.5 and stats["min"] == 1 and stats["max"] == 100
    assert stats["std"] == pytest.approx(np.sqrt(np.sum((samples - 50.5) ** 2) / 99))  # sample std, ddof=1
    # linear interpolation between order statistics: p-th percentile sits at rank (n - 1) * p / 100
    assert stats["p50"] == pytest.approx(50.5) and stats["p90"] == pytest.approx(90.1)
    assert stats["p95"] == pytest.approx(95.05) and stats["p99"] == pytest.approx(99.01)
    assert stats["mean_clipped"] == pytest.approx(50.5)  # nothing outside 2 sigma of a uniform ramp
    spiky = bench_stats.latency_stats([10.0] * 20 + [500.0])  # one call interrupted by another process
    assert spiky["mean"] > 30 and spiky["mean_clipped"] == 10.0
    single = bench_stats.latency_stats([7.0])
    assert single["std"] == 0.0 and single["p99"] == 7.0
    with pytest.raises(ValueError):
        bench_stats.latency_stats([])


def test_time_runner_follows_the_protocol_and_passes_the_split_through():
    runner = FakeRunner()
    feed = {"input": np.zeros((4, 3, 8, 8), np.float32)}
    seen = []
    timed = protocol.time_runner(runner, feed, protocol.Protocol(warmup_s=0.0, min_s=0.0, min_iters=6),
                              progress=lambda label, fraction: seen.append(fraction), label="fake")
    assert timed["iterations"] == 6 and runner.calls == 7  # one warm-up call, then six timed ones
    assert timed["throughput_ips"] == pytest.approx(4 * 6 / timed["wall_s"])
    assert timed["split_ms"] == {"host": 5.0, "h2d": 1.0, "compute": pytest.approx(3.5), "d2h": 0.5}
    assert seen[-1] == 1.0 and seen == sorted(seen)
    capped = protocol.time_runner(FakeRunner(), feed, protocol.Protocol(warmup_s=0.0, min_s=60.0, min_iters=1,
                                                                  max_iters=4))
    assert capped["iterations"] == 4


def test_parse_batches():
    assert bench_request.parse_batches("1,2,4,8") == [1, 2, 4, 8]
    assert bench_request.parse_batches("max") == ["max"]
    assert bench_request.parse_batches("1, MAX, 1") == [1, "max"]
    for bad in ("0", "two", "1,,2", "-4"):
        with pytest.raises(InputError, match="--batch"):
            bench_request.parse_batches(bad)


def test_max_batch_search_stops_when_throughput_saturates(monkeypatch):
    curve = {1: 10.0, 2: 18.0, 4: 30.0, 8: 30.5, 16: 29.0}
    measured = []

    def fake_measure(target, batch, machine, peak, progress, is_max, sweep, streams=1):
        measured.append(batch)
        return {"model": None, "batch": batch, "status": "ok", "throughput_ips": curve[batch], "sweep": "max",
                "max_batch": False, "latency_ms": {"mean": 1000 * batch / curve[batch]},
                "memory": {"kind": "rss_delta", "peak_mb": 1.0}}

    monkeypatch.setattr(run, "_measure_row", fake_measure)
    target = run._Target(bench_request.BenchRequest(models=["segnext_t"]), None, "torch", "nchw")
    rows = run.max_batch_sweep(target, {}, None, None, limit=64)
    assert measured == [1, 2, 4, 8]  # 8 gains < 3 % over 4: saturated, 16 is never tried
    assert [r["batch"] for r in rows if r["max_batch"]] == [8]  # the best throughput seen is the max row
    measured.clear()
    target = run._Target(bench_request.BenchRequest(models=["segnext_t"]), None, "torch", "nchw")
    rows = run.max_batch_sweep(target, {}, None, None, limit=2)
    assert measured == [1, 2] and rows[-1]["max_batch"]


def test_parse_streams():
    assert bench_request.parse_streams("1,2,4,2") == [1, 2, 4]
    for bad in ("0", "two", "1,-3", "100000"):
        with pytest.raises(InputError, match="--streams"):
            bench_request.parse_streams(bad)


def test_streams_run_concurrently_and_every_call_counts():
    """Each stream runs on its own thread until the protocol is met; the row counts every call of every stream."""
    import threading

    in_flight, most, lock = [0], [0], threading.Lock()

    def call(feed):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        threading.Event().wait(0.002)
        with lock:
            in_flight[0] -= 1

    feed = {"input": np.zeros((2, 3, 4, 4), np.float32)}
    timed = streams.time_streams([call, call, call], feed, protocol.Protocol(warmup_s=0.0, min_s=0.05, min_iters=9))
    assert timed["streams"] == 3 and most[0] == 3
    assert timed["iterations"] == sum(timed["per_stream_calls"]) >= 9 and min(timed["per_stream_calls"]) >= 1
    assert timed["throughput_ips"] == pytest.approx(2 * timed["iterations"] / timed["wall_s"])
    assert timed["latency_ms"]["p50"] > 0

    def broken(feed):
        raise RuntimeError("out of memory\nmore")

    with pytest.raises(SegdeployError, match="a stream failed: out of memory$"):
        streams.time_streams([call, broken], feed, FAST)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_bench_rows_per_stream_count(backend, tmp_path):
    """--streams 1,2: one row per stream count, the streams' outputs those of the single stream; the summary sets the
    throughput at full load next to one stream's."""
    if backend == "openvino":
        pytest.importorskip("openvino")
    from profile_graphs import scoped_graph

    from segdeploy.runtimes.registry import create_runner

    artifact = scoped_graph(tmp_path / "g.onnx")
    request = bench_request.BenchRequest(artifact=artifact, backends=[backend], batches=[1], threads=2,
                                         measure_peak=False, protocol=FAST, streams=[1, 2], height=32, width=32)
    report = run.run_bench(request)
    rows = report["results"]
    assert [(r["streams"], r["status"]) for r in rows] == [(1, "ok"), (2, "ok")]
    assert rows[1]["iterations"] >= 3 and len(rows[1]["per_stream_calls"]) == 2
    assert "x2 streams" in reports.timing_table(report)[1][1][1]
    (line,) = reports.streams_summary(report)
    assert "with 2 streams at full load" in line and "one stream's" in line
    with create_runner(backend, artifact=artifact, threads=2) as runner:
        feed = {"input": np.random.default_rng(0).standard_normal((1, 8, 32, 32), dtype=np.float32)}
        expected = runner.infer(feed)["logits"]
        for call in runner.stream_calls(2):
            np.testing.assert_allclose(call(feed)["logits"], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="runs one stream here"):
        bench_request.check_request(bench_request.BenchRequest(models=["segnext_t"], backends=["torch"],
                                                               streams=[2], protocol=FAST, **TINY))


def test_same_device_matching():
    assert papers.same_device("NVIDIA Tesla V100", "Tesla V100-SXM2-16GB")
    assert papers.same_device("NVIDIA RTX 3090", "NVIDIA GeForce RTX 3090")
    assert not papers.same_device("NVIDIA Tesla V100", "AMD EPYC (2 threads)")
    assert not papers.same_device("unspecified GPU", "NVIDIA A100-SXM4-80GB")


def test_paper_comparison_rows(monkeypatch):
    # measured complexity is segdeploy.models.complexity's business (tested there); pin it to test the comparison
    monkeypatch.setitem(papers._COMPLEXITY, ("segnext_t", 512, 512), {"params": 4263414, "gmacs": 6.4})
    monkeypatch.setitem(papers._COMPLEXITY, ("lrformer_s", 256, 256), {"params": 32e6, "gmacs": 10.0})
    cmp = papers.paper_comparison("segnext_t", 512, 512, 16, True, 61.75, "AMD EPYC (2 threads)")
    assert cmp["params_m_paper"] == 4.3 and cmp["params_m"] == pytest.approx(4.263414)
    assert cmp["params_ratio"] == pytest.approx(4.263414 / 4.3)
    assert cmp["gflops_paper"] == 6.6 and cmp["gmacs_ratio"] == pytest.approx(6.4 / 6.6)
    by_device = {row["device"]: row for row in cmp["throughput"]}
    v100 = by_device["NVIDIA Tesla V100"]
    assert v100["same_input"] and v100["same_batch"] and v100["cross_device"]
    assert v100["ratio"] == pytest.approx(61.75 / 123.5) and v100["label"] == "cross-device"
    rtx = by_device["NVIDIA RTX 3090"]
    assert not rtx["same_input"] and not rtx["same_batch"]
    assert rtx["label"] == "cross-device, different input, different batch"
    assert papers.best_paper_match(cmp["throughput"]) is v100
    # a latency figure becomes img/s; another input size has no GFLOPs ratio
    lr = papers.paper_comparison("lrformer_s", 256, 256, 1, False, 8.0, "AMD EPYC")
    assert lr["throughput"][0]["throughput_ips"] == pytest.approx(80.0) and lr["gmacs_ratio"] is None


def test_flops_use_two_per_mac():
    row = {"height": 64, "width": 64, "throughput_ips": 10.0}
    papers.add_flops(row, "segnext_t", {"gflops": 100.0})
    assert row["flops_per_mac"] == 2
    assert row["achieved_gflops"] == pytest.approx(2 * row["gmacs_per_image"] * 10.0)
    assert row["peak_fraction"] == pytest.approx(row["achieved_gflops"] / 100.0)


def test_fp32_peak_is_the_best_matmul_engine():
    measured = peak.fp32_peak_gflops(n=256, seconds=0.05, probes=3)
    assert set(measured["by_engine"]) == {"torch.mm", "onnxruntime MatMul"} and measured["device"] == "cpu"
    assert measured["gflops"] == pytest.approx(max(measured["by_engine"].values()), rel=1e-3)
    assert measured["engine"] in measured["method"] and measured["gflops"] > 0
    # the peak is the best of several interleaved rounds per engine, reported with their spread
    assert all(len(values) == 3 for values in measured["rounds"].values())
    lo, hi = measured["spread"]
    assert lo <= hi == pytest.approx(max(measured["rounds"][measured["engine"]]), rel=1e-6)
    assert hi == pytest.approx(measured["gflops"], rel=1e-3)


@pytest.fixture(scope="module")
def report():
    request = bench_request.BenchRequest(models=["segnext_t"], backends=["torch"], batches=[1, 2], threads=1,
                                 measure_peak=False, protocol=FAST, **TINY)
    return run.run_bench(request)


def test_report_json_schema(report):
    data = json.loads(reports.to_json(report))
    assert data["schema"] == run.SCHEMA and data["flops"]["flops_per_mac"] == 2
    assert {"cpu", "versions", "load_average", "host"} <= set(data["machine"])
    assert [r["batch"] for r in data["results"]] == [1, 2]
    for row in data["results"]:
        assert row["status"] == "ok", row
        assert {"model", "backend", "precision", "batch", "height", "width", "latency_ms", "throughput_ips",
                "split_ms", "memory", "gmacs_per_image", "achieved_gflops", "paper", "runner"} <= set(row)
        assert set(row["latency_ms"]) == {"mean", "std", "min", "max", "p50", "p90", "p95", "p99", "mean_clipped"}
        lat = row["latency_ms"]
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        # the raw samples behind the statistics, one per timed call
        assert len(row["samples_ms"]) == row["iterations"]
        assert min(row["samples_ms"]) == pytest.approx(lat["min"], abs=1e-3)
        assert row["memory"]["kind"] == "rss_delta" and row["memory"]["peak_mb"] >= 0
        assert row["peak_fraction"] is None  # no peak measured in this run
        assert row["runner"]["threads"] == 1


def test_report_csv_and_markdown(report):
    rows = list(csv.DictReader(io.StringIO(reports.to_csv(report))))
    assert list(rows[0]) == list(reports.CSV_COLUMNS) and len(rows) == 2
    assert rows[0]["model"] == "segnext_t" and float(rows[0]["throughput_ips"]) > 0
    assert rows[0]["paper_device"] == "NVIDIA RTX 3090" and rows[0]["params_m_paper"] == "4.3"
    md = reports.to_markdown(report)
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| model |"))
    assert lines[header + 1].startswith("|---|") and lines[header + 2].startswith("| segnext_t | torch | 1 |")
    assert "2 x GMACs" in md and "cross-device" in md


def test_plot_writes_a_png(report, tmp_path):
    pytest.importorskip("matplotlib")
    path = reports.write_reports(report, plot_path=str(tmp_path / "tput.png"))[0]
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_failing_row_is_recorded_not_fatal(tmp_path, monkeypatch):
    from segdeploy.export.onnx import export_onnx

    artifact = str(export_onnx("segnext_t", tmp_path / "b1.onnx", **TINY).path)
    # a batch the static artifact does not take is the request's fault: refused before anything runs
    with pytest.raises(InputError, match="takes batch 1, not 2"):
        bench_request.check_request(bench_request.BenchRequest(artifact=artifact, backends=["onnxruntime"],
                                                               batches=[2, 1], protocol=FAST))
    # a backend that crashes on one row loses that row, not the others
    real_create, calls = run.create_runner, []

    def crash_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("simulated backend crash")
        return real_create(*args, **kwargs)

    monkeypatch.setattr(run, "create_runner", crash_once)
    request = bench_request.BenchRequest(artifact=artifact, backends=["onnxruntime", "onnxruntime"], batches=[1],
                                         threads=1, measure_peak=False, protocol=FAST)  # size: the 512 default
    results = run.run_bench(request)["results"]
    assert results[0]["status"] == "failed" and "simulated backend crash" in results[0]["error"]
    assert not results[0].get("bad_input")
    ok = results[1]
    assert ok["status"] == "ok" and ok["model"] == "segnext_t"  # named by the artifact's manifest
    assert (ok["height"], ok["width"]) == (64, 64)  # the static artifact's size, not the request's
    assert ok["paper"]["gmacs_ratio"] is None  # 64x64 is not the papers' 512x512


def test_bench_cli_end_to_end(tmp_path, capsys):
    paths = {ext: tmp_path / f"r.{ext}" for ext in ("json", "csv", "md")}
    code = main(["bench", "--model", "segnext_t", "--backend", "torch", "--size", "64",
                 "--threads", "1", "--warmup-s", "0", "--min-s", "0", "--min-iters", "2", "--no-peak",
                 "--json", str(paths["json"]), "--csv", str(paths["csv"]), "--md", str(paths["md"])])
    out = capsys.readouterr().out
    assert code == 0
    assert "segnext_t" in out and "against the papers" in out
    assert all(p.exists() for p in paths.values())
    assert json.loads(paths["json"].read_text())["results"][0]["backend"] == "torch"
    # the reports exist now: a second run refuses to overwrite them, before measuring anything
    assert main(["bench", "--model", "segnext_t", "--backend", "torch", "--size", "64", "--json",
                 str(paths["json"])]) == 2
    assert "exists; pass --force" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--model", "segnext_t", "--backend", "tflite"], "unknown backend 'tflite'"),
    (["--model", "nope_t", "--backend", "torch"], "unknown model 'nope_t'"),
    (["--backend", "torch"], "give --model"),
    (["--model", "segnext_t", "--batch", "0"], "--batch values must be >= 1"),
    (["--model", "segnext_t", "--size", "100"], "multiple of 32"),
    (["--model", "segnext_t", "--size", "0x64"], "--size takes a positive"),
    (["--model", "segnext_t", "--backend", "torch", "--device", "foo"], "--device takes cpu, cuda or cuda:N"),
    (["--model", "segnext_t", "--plot", "x.svg"], "give a .png path"),
    (["--model", "segnext_t", "--layout", "nhwc"], "--layout"),
    (["--model", "segnext_t", "--backend", "torch", "--threads", "0"], "expected a positive integer"),
    (["--model", "segnext_t", "--backend", "torch", "--precision", "fp16"], "fp16 on CUDA only"),
    (["--model", "segnext_t", "--backend", "onnxruntime", "--precision", "bf16"], "runs fp32, not bf16"),
    (["--artifact", "missing.onnx"], "artifact not found"),
])
def test_bench_cli_errors_are_one_line(args, message, capsys):
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(answer_lines(err)) == 1, err


def _matrix_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "benchmarks" / "run_cpu_matrix.py"
    if str(path.parent) not in sys.path:  # as when it runs as a script: record.py sits beside it
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("run_cpu_matrix", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(model, backend, batch, ips, layout="nchw", max_batch=False):
    lat = {k: 1000 * batch / ips for k in ("mean", "min", "max", "p50", "p90", "p95", "p99", "mean_clipped")}
    return {"model": model, "backend": backend, "layout": layout, "batch": batch, "max_batch": max_batch,
            "status": "ok", "precision": "fp32", "device": "cpu", "throughput_ips": ips,
            "latency_ms": {**lat, "std": 0.0}, "memory": {"kind": "rss_delta", "peak_mb": 1.0}}


def test_matrix_ratios_use_the_faster_eager_layout():
    matrix = _matrix_module()
    rows = [_row("m", "torch", 1, 10.0), _row("m", "torch", 1, 12.0, layout="channels_last"),
            _row("m", "torch", 4, 15.0, max_batch=True), _row("m", "onnxruntime", 1, 30.0),
            _row("m", "onnxruntime", 2, 40.0, max_batch=True), _row("m", "openvino", 1, 25.0)]
    b1, bmax = matrix.summarize(rows)
    assert b1["batch"] == 1 and b1["ort_over_eager"] == pytest.approx(30 / 12) and b1["meets_ort_target"]
    assert b1["ort_over_openvino"] == pytest.approx(30 / 25)
    assert bmax["ort_over_eager"] == pytest.approx(40 / 15) and bmax["ort_over_openvino"] is None  # no OV max row
    assert "| m | 1 |" in matrix.summary_markdown([b1, bmax])


def test_matrix_resumes_and_skips_finished_pairs(tmp_path, monkeypatch):
    """Each run writes a new results file; --resume keeps an earlier file's finished pairs, --redo runs them again."""
    matrix = _matrix_module()
    calls = []

    def fake_pair(model, backend, args):
        calls.append((model, backend))
        return {"protocol": {"warmup_s": 0, "min_s": 0, "min_iters": 1}, "created": "now",
                "results": [_row(model, backend, 1, 10.0, max_batch=True)]}

    monkeypatch.setattr(matrix, "run_pair", fake_pair)
    args = ["--models", "segnext_t", "--backends", "torch,onnxruntime", "--out-dir", str(tmp_path)]
    assert matrix.main(args) == 0
    assert calls == [("segnext_t", "torch"), ("segnext_t", "onnxruntime")]
    (first,) = tmp_path.glob("cpu_matrix-*.json")
    report = json.loads(first.read_text())["results"]
    assert len(report["results"]) == 2 and report["summary"][0]["ort_over_eager"] == pytest.approx(1.0)
    assert "Ratios per model" in first.with_suffix(".md").read_text()
    assert matrix.main(args + ["--resume", str(first)]) == 0 and len(calls) == 2  # nothing left to run
    resumed = [p for p in tmp_path.glob("cpu_matrix-*.json") if p != first]
    assert len(resumed) == 1 and json.loads(first.read_text())["results"] == report  # the first file is untouched
    rows = json.loads(resumed[0].read_text())["results"]["results"]
    assert [r["resumed_from"] for r in rows] == [first.name, first.name]
    assert matrix.main(args + ["--resume", str(first), "--redo", "--backends", "onnxruntime"]) == 0
    assert calls[-1] == ("segnext_t", "onnxruntime") and len(calls) == 3
    newest = max(tmp_path.glob("cpu_matrix-*.json"), key=lambda p: p.stat().st_mtime_ns)
    rows = json.loads(newest.read_text())["results"]["results"]
    assert len(rows) == 2 and [r.get("resumed_from") for r in rows] == [first.name, None]  # replaced, not appended


def test_bench_on_a_corrupt_artifact_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    assert main(["bench", "--artifact", str(bad), "--backend", "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a readable ONNX model" in err[0]

"""What a bench run tells the next command: the fastest backend (and INT8 flavour) per model and precision on this
CPU, recorded by segdeploy.runtimes.fastest from the rows that compare like with like (batch 1, one stream, the
default layout, on the CPU)."""
from __future__ import annotations

from segdeploy.runtimes import fastest


def _comparable(row: dict) -> bool:
    return (row.get("status") == "ok" and row.get("batch") == 1 and (row.get("streams") or 1) == 1
            and row.get("device", "cpu") == "cpu" and row.get("layout", "nchw") == "nchw"
            and not row.get("compile") and not row.get("cuda_graphs") and row.get("model"))


def record_bench(report: dict) -> list[str]:
    """Record the fastest backend per (model, precision) among a bench report's comparable rows; one line each."""
    groups: dict[tuple, list[dict]] = {}
    for row in report["results"]:
        if _comparable(row):
            groups.setdefault((row["model"], row["precision"], row["height"], row["width"], row["threads"]),
                              []).append(row)
    lines = []
    for (model, precision, height, width, threads), rows in groups.items():
        candidates = [{"backend": r["backend"], "throughput_ips": r["throughput_ips"],
                       "p50_ms": r["latency_ms"]["p50"]} for r in rows]
        entry = fastest.record(model, precision, candidates, threads=threads, size=(height, width), source="bench")
        if entry:
            lines.append(f"{model} {precision}: {entry['backend']} is the fastest here; predict, eval and export "
                         "use it when no --backend is given")
    return lines


def record_precisions(report: dict) -> list[str]:
    """Record, from a precision comparison, the fastest backend per precision and the fastest INT8 flavour within
    its accuracy tolerance (key ``int8``)."""
    rows = [r for r in report["rows"] if r.get("status") == "ok" and r.get("format") == "ONNX"]
    size, threads, model = report["size"], report["threads"], report["model"]
    lines = []
    for label in dict.fromkeys(r["precision"] for r in rows):
        same = [{"backend": r["backend"], "throughput_ips": r["throughput_ips"], "p50_ms": r.get("p50_ms")}
                for r in rows if r["precision"] == label]
        if fastest.record(model, label, same, threads=threads, size=size, source="bench --precision"):
            lines.append(f"{model} {label}: the fastest backend recorded")
    int8 = [{"backend": r["backend"], "flavour": r["precision"], "throughput_ips": r["throughput_ips"],
             "p50_ms": r.get("p50_ms")} for r in rows
            if r["precision"].startswith("int8-") and r.get("within_tolerance") is not False]
    entry = fastest.record(model, "int8", int8, threads=threads, size=size, source="bench --precision")
    if entry:
        lines.append(f"{model} int8: the {entry['flavour']} flavour on {entry['backend']} is the fastest within "
                     "tolerance; export recommends it")
    return lines

"""Bench reports: JSON (the full record), CSV (one flat row per measurement), Markdown and terminal tables."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict

from segdeploy.evaluation.bench.labels import row_names
from segdeploy.evaluation.bench.papers import best_paper_match
from segdeploy.evaluation.bench.plot import render_plot
from segdeploy.evaluation.bench.protocol import Protocol
from segdeploy.evaluation.bench.stats import PERCENTILES
from segdeploy.files.atomic import write_bytes_atomic
from segdeploy.hostinfo import int8_speed_note

CSV_COLUMNS = ("model", "backend", "device", "precision", "layout", "batch", "max_batch", "height", "width", "threads",
               "streams", "status", "iterations", "latency_mean_ms", "latency_std_ms", "latency_mean_clipped_ms",
               "latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "throughput_ips", "host_ms",
               "h2d_ms", "compute_ms", "d2h_ms", "memory_kind", "memory_peak_mb", "params_m", "params_m_paper",
               "gmacs", "gflops_paper", "achieved_gflops", "peak_fraction", "paper_device", "paper_input",
               "paper_batch", "paper_ips", "paper_ratio", "paper_label", "error")


def flat_row(row: dict) -> dict:
    """One row as flat columns (CSV, tables); the closest paper throughput figure stands for the full list."""
    lat = row.get("latency_ms") or {}
    split = row.get("split_ms") or {}
    mem = row.get("memory") or {}
    paper = row.get("paper") or {}
    match = best_paper_match(paper.get("throughput") or []) or {}
    out = {k: row.get(k) for k in ("model", "backend", "device", "precision", "layout", "batch", "max_batch", "height",
                                   "width", "threads", "streams", "status", "iterations", "throughput_ips",
                                   "achieved_gflops", "peak_fraction", "error")}
    out.update({f"latency_{k}_ms": lat.get(k) for k in ("mean", "std", "mean_clipped", "p50", "p90", "p95", "p99")})
    out.update({"host_ms": split.get("host"), "h2d_ms": split.get("h2d"), "compute_ms": split.get("compute"),
                "d2h_ms": split.get("d2h"), "memory_kind": mem.get("kind"), "memory_peak_mb": mem.get("peak_mb"),
                "params_m": paper.get("params_m"), "params_m_paper": paper.get("params_m_paper"),
                "gmacs": paper.get("gmacs", row.get("gmacs_per_image")), "gflops_paper": paper.get("gflops_paper"),
                "paper_device": match.get("device"),
                "paper_input": "x".join(map(str, match["input"])) if match.get("input") else None,
                "paper_batch": match.get("batch"), "paper_ips": match.get("throughput_ips"),
                "paper_ratio": match.get("ratio"), "paper_label": match.get("label")})
    return {k: out.get(k) for k in CSV_COLUMNS}


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, default=str) + "\n"


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report["results"]:
        writer.writerow({k: ("" if v is None else v) for k, v in flat_row(row).items()})
    return buf.getvalue()


def _f(value, fmt="{:.2f}", missing="-"):
    return missing if value is None else fmt.format(value)


def _short_device(name: str | None) -> str:
    words = [w for w in (name or "?").split() if w.lower() not in ("nvidia", "tesla", "geforce")]
    return " ".join(words) or "?"


def _flops_cell(f: dict) -> str:
    percent = None if f["peak_fraction"] is None else 100 * f["peak_fraction"]
    return f"{_f(f['achieved_gflops'], '{:.1f}')} ({_f(percent, '{:.0f}%')})"


def timing_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Terminal table 1: latency statistics, throughput, host/device split and memory."""
    columns = ["model", "backend", "batch", "ms mean±std", "p50", "p90", "p95", "p99", "img/s", "h2d/compute/d2h",
               "mem MB"]
    rows = []
    for row in report["results"]:
        f = flat_row(row)
        if row["status"] != "ok":
            rows.append(row_names(row) + [f"FAILED: {row.get('error')}"] + [""] * (len(columns) - 4))
            continue
        split = "/".join(_f(f[k], "{:.1f}") for k in ("h2d_ms", "compute_ms", "d2h_ms"))
        rows.append(row_names(row) + [f"{f['latency_mean_ms']:.1f} ± {f['latency_std_ms']:.1f}"] +
                    [_f(f[f"latency_p{q}_ms"], "{:.1f}") for q in PERCENTILES] +
                    [_f(f["throughput_ips"], "{:.1f}"), "host only" if split == "-/-/-" else split,
                     _f(f["memory_peak_mb"], "{:.0f}")])
    return columns, rows


def streams_summary(report: dict) -> list[str]:
    """One line per (model, backend, batch) timed with several streams: img/s at full load next to one stream's
    img/s and latency."""
    lines = []
    ok = [r for r in report["results"] if r["status"] == "ok"]
    for row in ok:
        streams = row.get("streams") or 1
        if streams == 1:
            continue
        single = next((r for r in ok if (r.get("streams") or 1) == 1 and r["batch"] == row["batch"] and
                       (r["model"], r["backend"], r["layout"], r["precision"]) ==
                       (row["model"], row["backend"], row["layout"], row["precision"])), None)
        name = " ".join(row_names(row)[:2]).replace(f" x{streams} streams", "")
        text = (f"{name} batch {row['batch']}: {row['throughput_ips']:.1f} img/s with {streams} streams at full "
                f"load (p50 {row['latency_ms']['p50']:.1f} ms per request)")
        if single is not None:
            text += (f", {row['throughput_ips'] / single['throughput_ips']:.2f}x one stream's "
                     f"{single['throughput_ips']:.1f} img/s at {single['latency_ms']['p50']:.1f} ms")
        lines.append(text)
    return lines


def paper_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Terminal table 2: the same rows against the papers (params, GFLOPs, the closest throughput figure)."""
    columns = ["model", "backend", "batch", "img/s", "GFLOP/s (%pk)", "params M / paper", "GMACs / paper",
               "paper img/s", "paper setting", "ratio"]
    rows = []
    for row in report["results"]:
        if row["status"] != "ok":
            continue
        f = flat_row(row)
        setting = "-" if f["paper_ips"] is None else \
            f"{_short_device(f['paper_device'])} {f['paper_input']} b={f['paper_batch']}; {f['paper_label']}"
        rows.append(row_names(row) + [_f(f["throughput_ips"], "{:.1f}"), _flops_cell(f),
                                       f"{_f(f['params_m'])} / {_f(f['params_m_paper'], '{:.1f}')}",
                                       f"{_f(f['gmacs'])} / {_f(f['gflops_paper'], '{:.1f}')}",
                                       _f(f["paper_ips"], "{:.1f}"), setting, _f(f["paper_ratio"], "{:.3f}")])
    return columns, rows


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """The full table (Markdown): every metric and the closest paper figure on one row."""
    columns = ["model", "backend", "batch", "ms mean±std", "p50", "p90", "p95", "p99", "img/s",
               "GFLOP/s (% peak)", "mem MB", "params M / paper", "GMACs / paper GFLOPs", "paper img/s [setting]",
               "measured / paper"]
    rows = []
    for row in report["results"]:
        f = flat_row(row)
        if row["status"] != "ok":
            rows.append(row_names(row) + [f"FAILED: {row.get('error')}"] + [""] * (len(columns) - 4))
            continue
        paper = "-" if f["paper_ips"] is None else (
            f"{f['paper_ips']:.1f} [{f['paper_device']}, {f['paper_input']}, batch {f['paper_batch']}; "
            f"{f['paper_label']}]")
        rows.append(row_names(row) + [f"{f['latency_mean_ms']:.2f} ± {f['latency_std_ms']:.2f}"] +
                    [_f(f[f"latency_p{q}_ms"]) for q in PERCENTILES] +
                    [_f(f["throughput_ips"]), _flops_cell(f), _f(f["memory_peak_mb"], "{:.0f}"),
                     f"{_f(f['params_m'])} / {_f(f['params_m_paper'], '{:.1f}')}",
                     f"{_f(f['gmacs'])} / {_f(f['gflops_paper'], '{:.1f}')}", paper, _f(f["paper_ratio"], "{:.3f}")])
    return columns, rows


def peak_text_of(peak: dict) -> str:
    """"412 GFLOP/s (rounds 380-412)": the peak with the spread of its probe rounds, when it has them."""
    spread = peak.get("spread")
    text = f"{peak['gflops']:.0f} GFLOP/s"
    return text + (f" (rounds {spread[0]:.0f}-{spread[1]:.0f})" if spread and len(spread) == 2 else "")


def machine_summary(report: dict) -> str:
    m = report["machine"]
    cpu = m["cpu"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    peak = report.get("peak")
    peak_text = f"; FP32 peak {peak_text_of(peak)} ({peak['method']}, {peak['threads']} threads)" if peak else ""
    return (f"{m['host']}: {cpu['model']}, {cpu['usable_cores']} usable cores, ISA {' '.join(cpu['isa']) or '-'}; "
            f"{int8_speed_note(cpu)}; load {m['load_average']}{peak_text}; {versions}")


def to_markdown(report: dict) -> str:
    columns, rows = table_rows(report)
    p = report.get("protocol") or asdict(Protocol())
    lines = [f"# segdeploy bench ({report.get('created', '?')})", "", machine_summary(report), "",
             f"Protocol: warm-up {p['warmup_s']} s, then at least {p['min_s']} s and {p['min_iters']} calls, one "
             "synchronous request at a time; latency is host wall time per call; GFLOP/s = 2 x GMACs x img/s. "
             "Paper figures are the authors' (GPU) numbers: a ratio across devices is context, not a like-for-like "
             "comparison.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |")
    return "\n".join(lines) + "\n"



def write_reports(report: dict, json_path=None, csv_path=None, md_path=None, plot_path=None,
                  force: bool = False) -> list[str]:
    files = [(path, render(report).encode("utf-8")) for path, render in
             ((json_path, to_json), (csv_path, to_csv), (md_path, to_markdown)) if path]
    if plot_path:
        files.append((plot_path, render_plot(report)))
    return [write_bytes_atomic(path, data, force=force) for path, data in files]

"""The CPU matrix: every registered model x (torch NCHW and channels_last, onnxruntime, openvino if installed),
at 512x512, batch 1 and the "max" batch, with per-model ratios ORT / eager and ORT / OpenVINO.

Each (model, backend) runs in its own `segdeploy bench` process (a crash or a leak cannot spoil the next row, and
each RSS figure starts from a fresh process) and is merged at once into this run's results file (benchmarks/
record.py: results/cpu_matrix-<date>-<host>-<run id>.json, .md and .png, with the command, the commit, the machine
and every timed call), so a stopped run loses nothing: --resume FILE starts a new run that keeps FILE's finished
pairs (each marked with the file it came from) and measures the rest. Run it on a quiet machine:

    python benchmarks/run_cpu_matrix.py                       # everything
    python benchmarks/run_cpu_matrix.py --models segnext_t,cgrseg_t --backends onnxruntime
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import record  # noqa: E402
from segdeploy.evaluation.bench import reports  # noqa: E402
from segdeploy.evaluation.bench.run import SCHEMA  # noqa: E402
from segdeploy.hostinfo import machine_info  # noqa: E402
from segdeploy.models import list_models  # noqa: E402
from segdeploy.runtimes.registry import backend_status  # noqa: E402

TARGET_ORT_OVER_EAGER = 1.5  # the goal for ONNX Runtime FP32 over the faster PyTorch eager layout (not a test)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="all", help="comma-separated model names, or 'all' (default)")
    p.add_argument("--backends", default="torch,onnxruntime,openvino",
                   help="comma-separated; backends that are not usable here are skipped with their reason")
    p.add_argument("--batch", default="1,max")
    p.add_argument("--size", default="512x512", help="input size HxW")
    p.add_argument("--threads", type=int, help="default: all usable cores")
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--min-s", type=float, default=3.0)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--out-dir", default=record.RESULTS)
    p.add_argument("--resume", metavar="FILE", help="an earlier run's results JSON: its finished pairs are kept")
    p.add_argument("--cache-dir", default=os.path.join(ROOT, "artifacts", "cache"))
    p.add_argument("--opset", type=int, default=20, help="opset of the ONNX exports (see benchmarks/README.md)")
    p.add_argument("--redo", action="store_true", help="re-run pairs that are already in the results file")
    return p.parse_args(argv)


def pair_key(row: dict) -> tuple[str, str]:
    return row["model"], row["backend"]


def run_pair(model: str, backend: str, args) -> dict:
    """One `segdeploy bench` process for (model, backend); returns its JSON report."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "report.json")
        cmd = [sys.executable, "-m", "segdeploy", "bench", "--model", model, "--backend", backend,
               "--size", args.size, "--batch", args.batch,
               "--warmup-s", str(args.warmup_s), "--min-s", str(args.min_s), "--max-batch", str(args.max_batch),
               "--cache-dir", args.cache_dir, "--opset", str(args.opset), "--json", out]
        if backend == "torch":
            cmd += ["--layout", "nchw,channels_last"]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if os.path.isfile(out):
            with open(out) as f:
                return json.load(f)
        error = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"results": [{"model": model, "backend": backend, "status": "failed", "error": error}]}


def _throughput(rows, model, backend, layout=None, max_batch=False):
    """The best throughput of ``backend`` on ``model`` at batch 1 (or on its max row); None if not measured."""
    values = [r["throughput_ips"] for r in rows if r.get("status") == "ok" and r["model"] == model and
              r["backend"] == backend and (layout is None or r.get("layout") == layout) and
              (r.get("max_batch") if max_batch else r.get("batch") == 1)]
    return max(values) if values else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def summarize(rows: list[dict]) -> list[dict]:
    """Per model and per batch setting (1, max): ORT / eager (the faster layout) and ORT / OpenVINO."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for max_batch in (False, True):
            eager = [_throughput(rows, model, "torch", layout, max_batch) for layout in ("nchw", "channels_last")]
            eager_best = max((v for v in eager if v is not None), default=None)
            ort = _throughput(rows, model, "onnxruntime", max_batch=max_batch)
            ov = _throughput(rows, model, "openvino", max_batch=max_batch)
            ort_eager = _ratio(ort, eager_best)
            out.append({"model": model, "batch": "max" if max_batch else 1, "torch_nchw_ips": eager[0],
                        "torch_channels_last_ips": eager[1], "onnxruntime_ips": ort, "openvino_ips": ov,
                        "ort_over_eager": ort_eager, "ort_over_openvino": _ratio(ort, ov),
                        "meets_ort_target": None if ort_eager is None else ort_eager >= TARGET_ORT_OVER_EAGER})
    return out


def summary_markdown(summary: list[dict]) -> str:
    f = reports._f
    lines = ["## Ratios per model", "",
             f"ORT / eager uses the faster of PyTorch NCHW and channels_last; target ORT / eager >= "
             f"{TARGET_ORT_OVER_EAGER} and ORT / OpenVINO >= 1 (all FP32).", "",
             "| model | batch | torch NCHW img/s | torch channels_last img/s | ORT img/s | OpenVINO img/s "
             "| ORT / eager | ORT / OpenVINO |", "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['model']} | {s['batch']} | {f(s['torch_nchw_ips'])} | {f(s['torch_channels_last_ips'])} "
                     f"| {f(s['onnxruntime_ips'])} | {f(s['openvino_ips'])} | {f(s['ort_over_eager'])} "
                     f"| {f(s['ort_over_openvino'])} |")
    return "\n".join(lines) + "\n"


def write_all(report: dict, run: record.Run, final: bool) -> list[str]:
    peak = report.get("peak")
    if peak and peak.get("gflops"):
        # rows merged from several processes: express all of them against the one peak the header shows
        for row in report["results"]:
            if row.get("achieved_gflops") is not None:
                row["peak_fraction"] = row["achieved_gflops"] / peak["gflops"]
    report["summary"] = summarize(report["results"])
    written = run.write(report, reports.to_markdown(report) + "\n" + summary_markdown(report["summary"]),
                        final=final)
    if any(r.get("status") == "ok" for r in report["results"]):
        try:  # the plot belongs to this run's files: redrawn as rows arrive
            written += reports.write_reports(report, plot_path=run.path(".png"), force=True)
        except Exception as exc:  # matplotlib missing: the JSON and Markdown still stand
            print(f"no plot: {exc}", file=sys.stderr)
    return written


def resumed_rows(path: str) -> list[dict]:
    """The finished rows of an earlier run's file (this script's, or a bench report), each marked with it; ValueError
    with one line when the file is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--resume {path}: not a readable JSON results file ({exc})") from None
    report = data.get("results") if isinstance(data, dict) and isinstance(data.get("results"), dict) else data
    rows = report.get("results") if isinstance(report, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, dict) and isinstance(row.get("model"), str)
                                             and isinstance(row.get("backend"), str) for row in rows):
        raise ValueError(f"--resume {path}: not a CPU-matrix or bench results file (no list of rows, each naming "
                         "its model and backend)")
    name = os.path.basename(path)
    return [dict(row, resumed_from=row.get("resumed_from", name)) for row in rows]


def main(argv=None) -> int:
    args = parse_args(argv)
    models = list_models() if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in list_models()]
    if unknown:  # refused before any work: one line, nothing written
        print(f"run_cpu_matrix.py: unknown model {unknown[0]!r}; known: {', '.join(list_models())}", file=sys.stderr)
        return 2
    backends = []
    for name in (b.strip() for b in args.backends.split(",") if b.strip()):
        status = backend_status(name)
        if status.available:
            backends.append(name)
        else:
            print(f"skipping {name}: {status.reason}")
    try:  # refused before any work: one line, nothing written
        resumed = resumed_rows(args.resume) if args.resume else []
    except ValueError as exc:
        print(f"run_cpu_matrix.py: {exc}", file=sys.stderr)
        return 2
    run = record.start("cpu_matrix", args, out_dir=args.out_dir,
                       argv=None if argv is None else [__file__, *argv])
    report = {"schema": SCHEMA, "machine": machine_info(), "results": []}
    if args.resume:
        report["results"] = resumed
        print(f"resuming {args.resume} ({len(report['results'])} rows)")
    for model in models:
        for backend in backends:
            done = [r for r in report["results"] if pair_key(r) == (model, backend)]
            if done and all(r.get("status") == "ok" for r in done) and not args.redo:
                print(f"{model} {backend}: done, skipped")
                continue
            print(f"{model} {backend}: running", flush=True)
            part = run_pair(model, backend, args)
            report["results"] = [r for r in report["results"] if pair_key(r) != (model, backend)] + part["results"]
            for key in ("created", "protocol", "flops", "peak", "machine"):
                if key in part:  # the latest process describes the machine, the load and the protocol
                    report[key] = part[key]
            for row in part["results"]:
                print(f"  {row['backend']} {row.get('layout') or ''} b{row.get('batch')}: " +
                      (f"{row['throughput_ips']:.2f} img/s" if row["status"] == "ok" else f"FAILED {row['error']}"))
            write_all(report, run, final=False)
    for path in write_all(report, run, final=True):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

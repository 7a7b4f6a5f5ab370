"""Speed a user feels, per model and CPU backend: where the time goes (``segdeploy profile``: modules, operators,
achieved GFLOP/s against the FP32 peak), photo to mask (``bench --e2e``: every stage, host and in-graph
pre/post-processing) and throughput at full load (``bench --streams``: parallel requests next to one stream).

Each part runs through the same code as its command and writes a named results file (JSON with the raw samples,
Markdown for reading) into --out: ``speed-<part>-<host>-<date>[-N]``, never overwriting one. Every file records the
command line, the commit, the CPU with its ISA flags, the library versions and the load. Shares and ratios within
one file are what to compare across runs on a shared machine; absolute times move with the load.

    python benchmarks/speed_matrix.py                                   # T variants, ORT and OpenVINO, all parts
    python benchmarks/speed_matrix.py --parts profile --models cgrseg_t --backends onnxruntime
    python benchmarks/speed_matrix.py --parts e2e --images tests/data/images --out benchmarks/results
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from segdeploy.console import print_table  # noqa: E402
from segdeploy.evaluation.bench import e2e, reports  # noqa: E402
from segdeploy.evaluation.bench.protocol import Protocol  # noqa: E402
from segdeploy.evaluation.bench.request import BenchRequest  # noqa: E402
from segdeploy.evaluation.bench.run import run_bench  # noqa: E402
from segdeploy.evaluation.profile import report as profile_report  # noqa: E402
from segdeploy.evaluation.profile.run import ProfileRequest, profile  # noqa: E402
from segdeploy.hostinfo import machine_info  # noqa: E402
from segdeploy.io import write_text_atomic  # noqa: E402
from segdeploy.runtimes.registry import backend_status  # noqa: E402

T_VARIANTS = "cgrseg_t,segnext_t,lrformer_t,offseg_t"
PARTS = ("profile", "e2e", "streams")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=T_VARIANTS)
    p.add_argument("--backends", default="onnxruntime,openvino")
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20, help="profiled runs per model and backend")
    p.add_argument("--depth", type=int, default=2, help="module depth of the profile tables")
    p.add_argument("--streams", default="1,2", help="stream counts of the throughput part")
    p.add_argument("--min-s", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=5, help="timed rounds of the end-to-end part")
    p.add_argument("--images", help="photos of the end-to-end part (default: scenes at four camera sizes)")
    p.add_argument("--cache-dir", default=os.path.join(ROOT, "artifacts", "cache"))
    p.add_argument("--out", help="folder for the results files (default: print only)")
    return p.parse_args(argv)


def provenance(argv) -> dict:
    """What a results file needs to be read later: the command, the commit, the machine (CPU, ISA flags, load,
    versions). Written by this script until the benchmarks share one results writer."""
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {"command": " ".join(["python", "benchmarks/speed_matrix.py", *argv]), "commit": commit,
            "dirty": dirty, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info()}


def write_results(out: str, part: str, payload: dict, markdown: str) -> list[str]:
    """``<out>/speed-<part>-<host>-<date>[-N].{json,md}``: a new pair of files every time, never an overwrite."""
    stem = f"speed-{part}-{socket.gethostname()}-{_dt.date.today().isoformat()}"
    n = 1
    while any(os.path.exists(os.path.join(out, f"{stem}{f'-{n}' if n > 1 else ''}.{ext}")) for ext in ("json", "md")):
        n += 1
    stem = os.path.join(out, stem + (f"-{n}" if n > 1 else ""))
    return [write_text_atomic(stem + ".json", json.dumps(payload, indent=1, default=str) + "\n"),
            write_text_atomic(stem + ".md", markdown)]


def header(meta: dict, title: str) -> str:
    cpu = meta["machine"]["cpu"]
    versions = ", ".join(f"{k} {v}" for k, v in meta["machine"]["versions"].items() if v)
    return (f"# {title}\n\n`{meta['command']}` at commit {meta['commit']}{' (dirty)' if meta['dirty'] else ''}, "
            f"{meta['created']}\n\n{cpu['model']}, {cpu['usable_cores']} usable cores, ISA {' '.join(cpu['isa'])}; "
            f"load {meta['machine']['load_average']}; {versions}\n\n")


def run_profiles(args, models, backends, meta) -> tuple[dict, str]:
    reports_, lines = [], [header(meta, "segdeploy profile: where the time goes")]
    for model in models:
        for backend in backends:
            print(f"profiling {model} on {backend}", file=sys.stderr)
            report = profile(ProfileRequest(model=model, backend=backend, height=args.size, width=args.size,
                                            threads=args.threads, runs=args.runs, depth=args.depth,
                                            protocol=Protocol(warmup_s=1.0, min_s=args.min_s, min_iters=10),
                                            cache_dir=args.cache_dir))
            reports_.append(report)
            print_table(profile_report.title(report), *profile_report.module_table(report, "time", 12))
            lines.append(profile_report.to_markdown(report, "time", 15).replace("# ", "## ", 1))
    return {**meta, "part": "profile", "reports": reports_}, "\n".join(lines)


def run_e2e(args, models, backends, meta) -> tuple[dict, str]:
    print("timing end to end", file=sys.stderr)
    report = e2e.run_e2e(e2e.E2ERequest(models=models, backends=backends, images=args.images, threads=args.threads,
                                        protocol=Protocol(warmup_s=0.0, min_s=0.0, min_iters=args.rounds),
                                        cache_dir=args.cache_dir))
    print_table("end to end", *e2e.table_rows(report))
    return {**meta, "part": "e2e", "report": report}, header(meta, "bench --e2e") + e2e.to_markdown(report)


def run_streams(args, models, backends, meta) -> tuple[dict, str]:
    print("timing throughput", file=sys.stderr)
    streams = [int(s) for s in args.streams.split(",")]
    report = run_bench(BenchRequest(models=models, backends=backends, height=args.size, width=args.size,
                                    batches=[1, "max"], threads=args.threads, streams=streams,
                                    protocol=Protocol(warmup_s=1.0, min_s=args.min_s, min_iters=10),
                                    export_dir=args.cache_dir, measure_peak=False))
    print_table("throughput", *reports.timing_table(report))
    summary = reports.streams_summary(report)
    for line in summary:
        print(line)
    markdown = header(meta, "bench --streams: throughput at full load") + reports.to_markdown(report) + \
        "\n" + "\n".join(f"- {line}" for line in summary) + "\n"
    return {**meta, "part": "streams", "report": report}, markdown


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    backends = []
    for backend in (b for b in args.backends.split(",") if b):
        status = backend_status(backend)
        if status.available:
            backends.append(backend)
        else:
            print(f"skipping {backend}: {status.reason}", file=sys.stderr)
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not backends:
        print(f"nothing to run: parts {unknown or parts}, backends {backends}", file=sys.stderr)
        return 2
    meta = provenance(argv)
    runners = {"profile": run_profiles, "e2e": run_e2e, "streams": run_streams}
    for part in parts:
        payload, markdown = runners[part](args, models, backends, meta)
        if args.out:
            for path in write_results(args.out, part, payload, markdown):
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

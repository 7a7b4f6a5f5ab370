"""Speed a user feels, per model and CPU backend: where the time goes (``segdeploy profile``: modules, operators,
achieved GFLOP/s against the FP32 peak), photo to mask (``bench --e2e``: every stage, host and in-graph
pre/post-processing) and throughput at full load (``bench --streams``: parallel requests next to one stream).

Each part runs through the same code as its command and writes a new results file through benchmarks/record.py
(JSON with the raw samples, Markdown for reading) into --out: ``speed_<part>-<date>-<host>-<run id>``, never
overwriting one. Every file records the command line, the commit, the CPU with its ISA flags, the library versions
and the load. Shares and ratios within
one file are what to compare across runs on a shared machine; absolute times move with the load.

    python benchmarks/speed_matrix.py                                   # T variants, ORT and OpenVINO, all parts
    python benchmarks/speed_matrix.py --parts profile --models cgrseg_t --backends onnxruntime
    python benchmarks/speed_matrix.py --parts e2e --images tests/data/images --out benchmarks/results
    python benchmarks/speed_matrix.py --parts profile --artifacts a_int8.onnx,a_fp32.onnx --backends onnxruntime
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import record  # noqa: E402
from segdeploy.console import print_table  # noqa: E402
from segdeploy.errors import SegdeployError  # noqa: E402
from segdeploy.evaluation.bench import e2e, reports  # noqa: E402
from segdeploy.evaluation.bench.protocol import Protocol  # noqa: E402
from segdeploy.evaluation.bench.request import BenchRequest  # noqa: E402
from segdeploy.evaluation.bench.run import run_bench  # noqa: E402
from segdeploy.evaluation.profile import report as profile_report  # noqa: E402
from segdeploy.evaluation.profile.run import ProfileRequest, profile  # noqa: E402
from segdeploy.runtimes.registry import backend_status  # noqa: E402

T_VARIANTS = "cgrseg_t,segnext_t,lrformer_t,offseg_t"
PARTS = ("profile", "e2e", "streams")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=T_VARIANTS)
    p.add_argument("--artifacts", help="profile part: these ONNX artifacts (comma-separated; e.g. a fixture's INT8 "
                                       "export next to its FP32 one) instead of --models")
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


def header(title: str) -> str:
    return f"# {title}\n\n"


def run_profiles(args, models, backends) -> tuple[dict, str]:
    reports_, lines = [], [header("segdeploy profile: where the time goes")]
    targets = [{"artifact": a} for a in args.artifacts.split(",") if a] if args.artifacts else \
        [{"model": m} for m in models]
    for target in targets:
        for backend in backends:
            print(f"profiling {next(iter(target.values()))} on {backend}", file=sys.stderr)
            report = profile(ProfileRequest(**target, backend=backend, height=args.size, width=args.size,
                                            threads=args.threads, runs=args.runs, depth=args.depth,
                                            protocol=Protocol(warmup_s=1.0, min_s=args.min_s, min_iters=10),
                                            cache_dir=args.cache_dir))
            reports_.append(report)
            print_table(profile_report.title(report), *profile_report.module_table(report, "time", 12))
            lines.append(profile_report.to_markdown(report, "time", 15).replace("# ", "## ", 1))
    return {"part": "profile", "reports": reports_}, "\n".join(lines)


def run_e2e(args, models, backends) -> tuple[dict, str]:
    print("timing end to end", file=sys.stderr)
    report = e2e.run_e2e(e2e.E2ERequest(models=models, backends=backends, images=args.images, threads=args.threads,
                                        protocol=Protocol(warmup_s=0.0, min_s=0.0, min_iters=args.rounds),
                                        cache_dir=args.cache_dir))
    print_table("end to end", *e2e.table_rows(report))
    return {"part": "e2e", "report": report}, header("bench --e2e") + e2e.to_markdown(report)


def run_streams(args, models, backends) -> tuple[dict, str]:
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
    markdown = header("bench --streams: throughput at full load") + reports.to_markdown(report) + \
        "\n" + "\n".join(f"- {line}" for line in summary) + "\n"
    return {"part": "streams", "report": report}, markdown


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
    runners = {"profile": run_profiles, "e2e": run_e2e, "streams": run_streams}
    for part in parts:
        run = record.start(f"speed_{part}", args, out_dir=args.out or record.RESULTS, argv=[__file__, *argv])
        try:
            payload, markdown = runners[part](args, models, backends)
        except SegdeployError as exc:  # an unknown model, a missing or refused artifact: one line, nothing written
            print(f"speed_matrix.py: {exc}", file=sys.stderr)
            return 2
        if args.out:
            for path in run.write(payload, markdown):
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

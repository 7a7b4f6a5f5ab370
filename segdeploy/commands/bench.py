"""segdeploy bench: latency, throughput and memory per model x backend x batch, next to the papers' figures."""
from __future__ import annotations

from segdeploy import bench
from segdeploy.console import print_table
from segdeploy.errors import InputError
from segdeploy.runtimes.registry import BACKENDS, fastest_cpu_backend


def _names(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark models or an artifact on the available backends",
                              description="Time models (exported on the fly for ONNX backends) or one artifact. "
                                          "Protocol, statistics and the 'max' batch are described in segdeploy.bench.")
    what = p.add_argument_group("what to run")
    what.add_argument("--model", help="registered model name(s), comma-separated")
    what.add_argument("--artifact", help="an exported .onnx file (with --model NAME to compare it with the paper)")
    what.add_argument("--backend", help=f"comma-separated, from {', '.join(BACKENDS)} (default: the fastest CPU "
                                        "backend here; see `segdeploy doctor`)")
    what.add_argument("--checkpoint", help="the authors' checkpoint; default: golden-recipe weights")
    shape = p.add_argument_group("input")
    shape.add_argument("--height", type=int, default=512)
    shape.add_argument("--width", type=int, default=512)
    shape.add_argument("--batch", default="1", help="comma-separated sizes and/or 'max' (grow until throughput "
                                                    "saturates), e.g. 1,2,4,8 or 1,max (default 1)")
    run = p.add_argument_group("execution")
    run.add_argument("--threads", type=int, help="CPU threads for every backend (default: all usable cores)")
    run.add_argument("--device", default="cpu", help="torch device: cpu or cuda[:N] (default cpu)")
    run.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                     help="fp16: torch on CUDA; bf16: OpenVINO")
    run.add_argument("--layout", default="nchw", help="torch memory format(s): nchw, channels_last or both, "
                                                      "comma-separated")
    run.add_argument("--compile", action="store_true", help="torch.compile the PyTorch model")
    run.add_argument("--cuda-graphs", action="store_true", help="replay the PyTorch model from a CUDA graph")
    run.add_argument("--warmup-s", type=float, default=1.0, help="warm-up seconds (default 1)")
    run.add_argument("--min-s", type=float, default=3.0, help="timed seconds, at least (default 3)")
    run.add_argument("--min-iters", type=int, default=10, help="timed calls, at least (default 10)")
    run.add_argument("--max-batch", type=int, default=64, help="upper bound of the 'max' batch search (default 64)")
    run.add_argument("--export-dir", default="artifacts/bench", help="cache of on-the-fly ONNX exports")
    run.add_argument("--opset", type=int, default=20, help="ONNX opset of on-the-fly exports (default 20: GELU "
                                                           "stays one node; see benchmarks/README.md)")
    run.add_argument("--force-export", action="store_true", help="re-export even if the cache has the artifact")
    run.add_argument("--no-peak", action="store_true", help="skip the FP32 matmul peak measurement")
    out = p.add_argument_group("reports")
    out.add_argument("--json", metavar="FILE")
    out.add_argument("--csv", metavar="FILE")
    out.add_argument("--md", metavar="FILE")
    out.add_argument("--plot", metavar="FILE.png", help="throughput vs GMACs with the papers' points (matplotlib)")
    p.set_defaults(func=run_command)


def build_request(args) -> bench.BenchRequest:
    default = fastest_cpu_backend()
    if args.artifact:  # an artifact runs on the backend of its format
        default = "tensorrt" if args.artifact.lower().endswith((".engine", ".plan")) else "onnxruntime"
    backends = _names(args.backend) or [default]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise InputError(f"unknown backend {unknown[0]!r}; backends: {', '.join(BACKENDS)}")
    layouts = _names(args.layout)
    bad = [x for x in layouts if x not in ("nchw", "channels_last")]
    if bad or not layouts:
        raise InputError(f"--layout takes nchw and/or channels_last, not {args.layout!r}")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise InputError(f"--plot writes a PNG; give a .png path, not {args.plot!r}")
    protocol = bench.Protocol(warmup_s=args.warmup_s, min_s=args.min_s, min_iters=args.min_iters)
    return bench.BenchRequest(
        models=_names(args.model), artifact=args.artifact, backends=backends, height=args.height, width=args.width,
        batches=bench.parse_batches(args.batch), threads=args.threads, device=args.device, precision=args.precision,
        layouts=layouts, compile=args.compile, cuda_graphs=args.cuda_graphs, checkpoint=args.checkpoint,
        export_dir=args.export_dir, opset=args.opset, force_export=args.force_export, max_batch_limit=args.max_batch,
        measure_peak=not args.no_peak, protocol=protocol)


def _progress():
    """A rich progress bar with one task per row; a no-op without rich or a terminal."""
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        return None, None
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn(), transient=True)
    task = bar.add_task("starting", total=1.0)

    def update(label: str, fraction: float) -> None:
        bar.update(task, description=label, completed=fraction)

    return bar, update


def run_command(args) -> int:
    request = build_request(args)
    bench.check_request(request)
    bar, update = _progress()
    if bar is not None:
        with bar:
            report = bench.run_bench(request, progress=update)
    else:
        report = bench.run_bench(request)
    print_table(f"segdeploy bench: {request.height}x{request.width}, {request.precision}, latency in ms",
                *bench.timing_table(report))
    print_table("against the papers (their GPU figures; the ratio is measured / paper)", *bench.paper_table(report))
    print(bench.machine_summary(report))
    load, cores = report["machine"]["load_average"], report["machine"]["cpu"]["usable_cores"]
    if load and load[0] > 0.5 * cores:
        print(f"note: the 1-minute load average was {load[0]} on {cores} cores when the run started; other "
              "processes were competing for the CPU, so these numbers are pessimistic")
    print("GFLOP/s = 2 FLOPs per MAC x GMACs x img/s; paper figures are GPU numbers unless the row says "
          "'same device'.")
    for path in bench.write_reports(report, args.json, args.csv, args.md, args.plot):
        print(f"wrote {path}")
    failed = [r for r in report["results"] if r["status"] != "ok"]
    return 1 if failed else 0

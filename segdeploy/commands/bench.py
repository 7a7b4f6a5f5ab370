"""segdeploy bench: latency, throughput and memory per model x backend x batch, next to the papers' figures."""
from __future__ import annotations

from segdeploy.commands import common
from segdeploy.console import print_table
from segdeploy.errors import InputError, SegdeployError
from segdeploy.evaluation.bench import reports
from segdeploy.evaluation.bench.protocol import Protocol
from segdeploy.evaluation.bench.request import BenchRequest, check_request, parse_batches
from segdeploy.evaluation.bench.run import run_bench
from segdeploy.export.cache import DEFAULT_CACHE_DIR
from segdeploy.export.trace import DEFAULT_OPSET
from segdeploy.runtimes.registry import default_backend_for, fastest_cpu_backend, get_backend

EXAMPLES = """examples:
  segdeploy bench --model cgrseg_t                                    # the fastest CPU backend here
  segdeploy bench --model segnext_t,cgrseg_t --backend torch,onnxruntime,openvino --batch 1,max
  segdeploy bench --artifact artifacts/cgrseg_t_512x512.onnx --backend onnxruntime --md bench.md
  segdeploy bench --model cgrseg_t --device cuda --precision fp16 --cuda-graphs"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark models or an artifact on the available backends",
                              description="Time models (exported on the fly, from the shared export cache, for "
                                          "artifact backends) or one artifact: latency percentiles, throughput, "
                                          "memory and GFLOP/s against this machine's FP32 peak, with the papers' "
                                          "figures beside them.",
                              epilog=EXAMPLES, formatter_class=common.HelpFormatter)
    what = p.add_argument_group("what to run")
    what.add_argument("--model", metavar="NAME[,NAME...]",
                      help=f"registered model(s), comma-separated: {', '.join(common.model_names())}")
    what.add_argument("--artifact", metavar="FILE", help="an exported artifact (with --model NAME, checked "
                                                         "against its manifest)")
    common.add_backend(what, "comma-separated backends (default: the fastest CPU backend here; see `segdeploy "
                             "doctor`)", multiple=True)
    common.add_checkpoint(what)
    shape = p.add_argument_group("input")
    common.add_size(shape)
    shape.add_argument("--batch", default="1", help="comma-separated sizes and/or 'max' (grow until throughput "
                                                    "saturates), e.g. 1,2,4,8 or 1,max (default 1)")
    run = p.add_argument_group("execution")
    common.add_threads(run)
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
    run.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help=f"the export cache (default {DEFAULT_CACHE_DIR})")
    run.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset of on-the-fly exports (default "
                                                                      f"{DEFAULT_OPSET})")
    run.add_argument("--no-simplify", dest="simplify", action="store_false", help="export without the simplifier")
    run.add_argument("--force-export", action="store_true", help="re-export even if the cache has the artifact")
    run.add_argument("--no-peak", action="store_true", help="skip the FP32 matmul peak measurement")
    out = p.add_argument_group("reports")
    common.add_json(out)
    out.add_argument("--csv", metavar="FILE", help="one flat row per measurement")
    out.add_argument("--md", metavar="FILE", help="a Markdown table with the machine and the protocol")
    out.add_argument("--plot", metavar="FILE.png", help="throughput vs GMACs with the papers' points (matplotlib)")
    common.add_force(out, "existing report files")
    p.set_defaults(func=run_command)


def build_request(args) -> BenchRequest:
    if args.artifact:  # an artifact runs on a backend of its kind
        from segdeploy.artifact.formats import format_of

        default = default_backend_for(format_of(args.artifact).kind)
    else:
        default = fastest_cpu_backend()
    backends = common.names(args.backend) or [default]
    for backend in backends:
        get_backend(backend)  # unknown -> one line
    layouts = common.names(args.layout)
    bad = [x for x in layouts if x not in ("nchw", "channels_last")]
    if bad or not layouts:
        raise InputError(f"--layout takes nchw and/or channels_last, not {args.layout!r}")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise InputError(f"--plot writes a PNG; give a .png path, not {args.plot!r}")
    height, width = common.parse_size(args.size)
    protocol = Protocol(warmup_s=args.warmup_s, min_s=args.min_s, min_iters=args.min_iters)
    return BenchRequest(
        models=common.names(args.model), artifact=args.artifact, backends=backends, height=height, width=width,
        batches=parse_batches(args.batch), threads=args.threads, device=args.device, precision=args.precision,
        layouts=layouts, compile=args.compile, cuda_graphs=args.cuda_graphs, checkpoint=args.checkpoint,
        export_dir=args.cache_dir, opset=args.opset, simplify=args.simplify, force_export=args.force_export,
        max_batch_limit=args.max_batch, measure_peak=not args.no_peak, protocol=protocol)


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
    common.check_outputs(args.force, args.json, args.csv, args.md, args.plot, inputs=[args.artifact, args.checkpoint])
    request = build_request(args)
    check_request(request)
    bar, update = _progress()
    if bar is not None:
        with bar:
            report = run_bench(request, progress=update)
    else:
        report = run_bench(request)
    print_table(f"segdeploy bench: {request.height}x{request.width}, {request.precision}, latency in ms",
                *reports.timing_table(report))
    print_table("against the papers (their GPU figures; the ratio is measured / paper)", *reports.paper_table(report))
    print(reports.machine_summary(report))
    load, cores = report["machine"]["load_average"], report["machine"]["cpu"]["usable_cores"]
    if load and load[0] > 0.5 * cores:
        print(f"note: the 1-minute load average was {load[0]} on {cores} cores when the run started; other "
              "processes were competing for the CPU, so these numbers are pessimistic")
    print("GFLOP/s = 2 FLOPs per MAC x GMACs x img/s; paper figures are GPU numbers unless the row says "
          "'same device'.")
    for path in reports.write_reports(report, args.json, args.csv, args.md, args.plot, force=args.force):
        print(f"wrote {path}")
    failed = [r for r in report["results"] if r["status"] != "ok"]
    refused = [r for r in failed if r.get("bad_input")]
    if refused:  # bad input is exit 2 and one line, here as everywhere; the rows that ran are reported above
        first = refused[0]
        raise SegdeployError(f"{first['model'] or first['artifact']} on {first['backend']} (batch {first['batch']}): "
                             f"{first['error']}")
    return 1 if failed else 0

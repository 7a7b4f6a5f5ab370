"""segdeploy bench: latency, throughput and memory per model x backend x batch, next to the papers' figures."""
from __future__ import annotations

from segdeploy.artifact.formats import format_of
from segdeploy.commands import common
from segdeploy.console import StepLines, print_table, stderr_is_terminal
from segdeploy.errors import InputError, SegdeployError
from segdeploy.evaluation.bench import precision as pb
from segdeploy.evaluation.bench import reports
from segdeploy.evaluation.bench.best import record_bench, record_precisions
from segdeploy.evaluation.bench.precision import flavour_notes
from segdeploy.evaluation.bench.protocol import Protocol
from segdeploy.evaluation.bench.request import BenchRequest, check_request, parse_batches, parse_streams
from segdeploy.export.cache import DEFAULT_CACHE_DIR
from segdeploy.export.trace import DEFAULT_OPSET
from segdeploy.files.atomic import write_text_atomic
from segdeploy.hostinfo import cpu_info, int8_speed_note
from segdeploy.runtimes.registry import (
    backend_status,
    cpu_backends,
    default_backend_for,
    fastest_cpu_backend,
    get_backend,
)

EXAMPLES = """examples:
  segdeploy bench --model cgrseg_t                                    # the fastest CPU backend here
  segdeploy bench --model segnext_t,cgrseg_t --backend torch,onnxruntime,openvino --batch 1,max
  segdeploy bench --artifact artifacts/cgrseg_t_512x512.onnx --backend onnxruntime --md bench.md
  segdeploy bench --model cgrseg_t --device cuda --precision fp16 --cuda-graphs
  segdeploy bench --model cgrseg_t --e2e --images photos/ --md e2e.md   # photo to mask, stage by stage
  segdeploy bench --model cgrseg_t --backend openvino,onnxruntime --streams 1,2 --batch 1,max  # server load
  segdeploy bench --model cgrseg_t --checkpoint ck.pth --precision fp32,fp16,int8 --data data/ \
      --backend onnxruntime,openvino --md compare.md --plot compare.png   # formats x precisions, with mIoU
                                                   # int8: each backend's flavour (int8-cpu, int8-openvino)"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark models or an artifact on the available backends",
                              description="Time models (exported on the fly, from the shared export cache, for "
                                          "artifact backends) or one artifact: latency percentiles, throughput, "
                                          "memory and GFLOP/s against this machine's FP32 peak, with the papers' "
                                          "figures beside them.",
                              epilog=EXAMPLES, formatter_class=common.HelpFormatter)
    what = p.add_argument_group("what to run")
    what.add_argument("--model", metavar="NAME[,NAME...]",
                      help=f"registered model(s), comma-separated ({common.MODEL_NAMES_HINT})")
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
    run.add_argument("--precision", default="fp32",
                     help="fp32; fp16: torch on CUDA; bf16: OpenVINO. A list (fp32,fp16,int8,int8-cpu,"
                          "int8-openvino,int8-tensorrt; int8 is each backend's flavour), int8 or --data compare "
                          "precisions instead: each is exported (calibrated, cached) and measured")
    compare = p.add_argument_group("precision comparison (--precision LIST or --data)")
    compare.add_argument("--data", metavar="DIR",
                         help="held-out set for the accuracy columns: a labelled dataset folder (validation split: "
                              "mIoU) or a folder of images (agreement with FP32); a dataset's training split "
                              "calibrates INT8 when --calib is not given")
    compare.add_argument("--calib", metavar="DIR", help="calibration images (default: --data's training split)")
    compare.add_argument("--calib-count", type=common.positive_int, default=32, help="calibration images "
                                                                                       "(default 32)")
    compare.add_argument("--calib-method", choices=("minmax", "percentile", "entropy"), default="minmax")
    compare.add_argument("--limit", type=common.positive_int, metavar="N", help="use the first N images of --data")
    run.add_argument("--layout", default="nchw", help="torch memory format(s): nchw, channels_last or both, "
                                                      "comma-separated")
    run.add_argument("--compile", action="store_true", help="torch.compile the PyTorch model")
    run.add_argument("--cuda-graphs", action="store_true", help="replay the PyTorch model from a CUDA graph")
    run.add_argument("--warmup-s", type=float, default=1.0, help="warm-up seconds (default 1)")
    run.add_argument("--min-s", type=float, default=3.0, help="timed seconds, at least (default 3)")
    run.add_argument("--min-iters", type=int, default=10, help="timed calls, at least (default 10)")
    run.add_argument("--max-batch", type=int, default=64, help="upper bound of the 'max' batch search (default 64)")
    run.add_argument("--streams", default="1",
                     help="requests in flight at once, comma-separated (e.g. 1,2,4): above 1, throughput at full load "
                          "(OpenVINO's THROUGHPUT mode, parallel ONNX Runtime sessions sharing --threads); default 1")
    run.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help=f"the export cache (default {DEFAULT_CACHE_DIR})")
    run.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset of on-the-fly exports (default "
                                                                      f"{DEFAULT_OPSET})")
    run.add_argument("--no-simplify", dest="simplify", action="store_false", help="export without the simplifier")
    run.add_argument("--force-export", action="store_true", help="re-export even if the cache has the artifact")
    run.add_argument("--no-peak", action="store_true", help="skip the FP32 matmul peak measurement")
    e2e = p.add_argument_group("end to end (--e2e)")
    e2e.add_argument("--e2e", action="store_true",
                     help="time photo to colour mask: decode, preprocess, network, upsample/argmax at the photo's "
                          "size, colour mask, with pre/post-processing on the host and in the graph")
    e2e.add_argument("--images", metavar="IMAGE|DIR|GLOB", help="the photos (default: scenes at 640x480, 1280x720, "
                                                               "1920x1080 and 4032x3024, JPEG)")
    e2e.add_argument("--pipelines", default="host,in-graph", help="host and/or in-graph (default both)")
    out = p.add_argument_group("reports")
    common.add_json(out)
    out.add_argument("--csv", metavar="FILE", help="one flat row per measurement")
    out.add_argument("--md", metavar="FILE", help="a Markdown table with the machine and the protocol")
    out.add_argument("--plot", metavar="FILE.png", help="throughput vs GMACs with the papers' points (matplotlib)")
    common.add_force(out, "existing report files")
    p.set_defaults(func=run_command)


def build_request(args):
    if args.artifact:  # an artifact runs on a backend of its kind

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
        max_batch_limit=args.max_batch, measure_peak=not args.no_peak, protocol=protocol,
        streams=parse_streams(args.streams))


def _progress():
    """A rich progress bar with one task per row on a terminal; timestamped lines in logs (console.StepLines)."""
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        return None, StepLines("bench")
    if not stderr_is_terminal():
        return None, StepLines("bench")
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn(), transient=True)
    task = bar.add_task("starting", total=1.0)

    def update(label: str, fraction: float) -> None:
        bar.update(task, description=label, completed=fraction)

    return bar, update


def compares_precisions(args) -> bool:
    names = common.names(args.precision)
    return bool(args.data) or len(names) > 1 or any(n.startswith("int8") for n in names)


def run_precision_comparison(args) -> int:
    if not args.model or "," in args.model or args.artifact:
        raise InputError("the precision comparison takes one --model (it exports each precision itself)")
    if args.csv:
        raise InputError("the precision comparison writes --json, --md and --plot")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise InputError(f"--plot writes a PNG; give a .png path, not {args.plot!r}")
    usable = [b for b in cpu_backends() if get_backend(b).consumes == "onnx" and backend_status(b).available]
    backends = common.names(args.backend) or usable
    precisions = pb.parse_precisions(args.precision, backends)
    if "fp32" not in precisions:
        precisions = ["fp32", *precisions]
    height, width = common.parse_size(args.size)
    request = pb.PrecisionBench(
        model=args.model, precisions=precisions, backends=backends, height=height, width=width,
        checkpoint=args.checkpoint, data=args.data, calib=args.calib, calib_count=args.calib_count,
        calib_method=args.calib_method, limit=args.limit, threads=args.threads,
        protocol=Protocol(warmup_s=args.warmup_s, min_s=args.min_s, min_iters=args.min_iters),
        cache_dir=args.cache_dir, rebuild=args.force_export)
    pb.check(request)
    print(f"int8 on this CPU: {int8_speed_note(cpu_info())}")
    with common.status(f"comparing precisions of {args.model}") as say:
        report = pb.compare_precisions(request, progress=say)
    print_table(f"segdeploy bench: precisions of {args.model}", *pb.table_rows(report))
    print(pb.header(report))
    print(f"recommendation: {report['recommendation']}")

    for line in record_precisions(report):
        print(f"recorded: {line}")
    written = []
    if args.json:
        written.append(common.write_json(args.json, report, args.force))
    if args.md:
        written.append(write_text_atomic(args.md, pb.to_markdown(report), force=args.force))
    if args.plot:
        pb.plot(report, args.plot, force=args.force)
        written.append(args.plot)
    for path in written:
        if path:
            print(f"wrote {path}")
    # out of tolerance exits 1, as everywhere: a row that failed, or one whose accuracy is outside its precision's
    return 1 if any(r["status"] != "ok" or r.get("within_tolerance") is False for r in report["rows"]) else 0


def run_e2e_command(args) -> int:
    from segdeploy.evaluation.bench import e2e

    if args.artifact or args.csv or args.plot or args.data:
        raise InputError("bench --e2e takes --model (it exports both pipelines itself) and writes --json and --md")
    if args.precision != "fp32" or args.batch != "1" or args.streams != "1":
        raise InputError("bench --e2e times fp32 at batch 1, one photo at a time, as predict runs")
    request = e2e.E2ERequest(
        models=common.names(args.model), backends=common.names(args.backend) or [fastest_cpu_backend()],
        pipelines=common.names(args.pipelines), images=args.images, checkpoint=args.checkpoint, threads=args.threads,
        protocol=Protocol(warmup_s=0.0, min_s=args.min_s, min_iters=args.min_iters), cache_dir=args.cache_dir,
        opset=args.opset, force_export=args.force_export)
    e2e.check(request)
    with common.status("timing end to end") as say:
        report = e2e.run_e2e(request, progress=say)
    print_table("segdeploy bench --e2e: p50 ms per stage (share of the end-to-end time)", *e2e.table_rows(report))
    print("photos: " + "; ".join(f"{p['name']} {p['size'][0]}x{p['size'][1]}" for p in report["photos"]))
    written = []
    if args.json:
        written.append(common.write_json(args.json, report, args.force))
    if args.md:
        written.append(write_text_atomic(args.md, e2e.to_markdown(report), force=args.force))
    for path in written:
        if path:
            print(f"wrote {path}")
    return 0


def run_command(args) -> int:
    from segdeploy.evaluation.bench.run import run_bench

    common.check_outputs(args.force, args.json, args.csv, args.md, args.plot, inputs=[args.artifact, args.checkpoint])
    if args.e2e:
        return run_e2e_command(args)
    if compares_precisions(args):
        return run_precision_comparison(args)
    if args.precision not in ("fp32", "fp16", "bf16"):
        raise InputError(f"--precision takes fp32, fp16 or bf16 (or a list to compare precisions), not "
                         f"{args.precision!r}")
    request = build_request(args)
    check_request(request)
    bar, update = _progress()
    if bar is not None:
        with bar:
            report = run_bench(request, progress=update)
    else:
        report = run_bench(request, progress=update)
    print_table(f"segdeploy bench: {request.height}x{request.width}, {request.precision}, latency in ms",
                *reports.timing_table(report))
    print_table("against the papers (their GPU figures; the ratio is measured / paper)", *reports.paper_table(report))
    print(reports.machine_summary(report))
    for line in reports.streams_summary(report):
        print(f"throughput: {line}")
    for line in flavour_notes(report["results"]):
        print(f"note: {line}")

    for line in record_bench(report):
        print(f"recorded: {line}")
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

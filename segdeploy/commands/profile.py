"""segdeploy profile: where a model's time goes, per PyTorch module, from the backend's own per-layer profiler."""
from __future__ import annotations

import os

from segdeploy.artifact import formats
from segdeploy.commands import common
from segdeploy.console import print_table
from segdeploy.errors import InputError
from segdeploy.evaluation.bench.protocol import Protocol
from segdeploy.evaluation.profile import report as rp
from segdeploy.evaluation.profile.run import ProfileRequest, profile
from segdeploy.export.cache import DEFAULT_CACHE_DIR
from segdeploy.files.atomic import write_bytes_atomic, write_text_atomic

EXAMPLES = """examples:
  segdeploy profile cgrseg_t                                   # the fastest CPU backend, 512x512, FP32
  segdeploy profile cgrseg_t --backend onnxruntime --depth 2   # stages instead of blocks
  segdeploy profile artifacts/cgrseg_t_512x512.onnx --backend openvino --sort time --top 15 --plot prof.png
  segdeploy profile cgrseg_t --checkpoint ck.pth --precision int8 --calib data/ --backend onnxruntime
  segdeploy profile model.engine --backend tensorrt --json prof.json"""

SUFFIXES = formats.ARTIFACT_SUFFIXES


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("profile", help="per-module time, share and GFLOP/s of a model or artifact, from the "
                                              "backend's per-layer profiler",
                              description="Profile a model (exported on the fly into the shared export cache) or an "
                                          "artifact with the backend's own profiler (ONNX Runtime's, OpenVINO's "
                                          "performance counters, TensorRT's layer profiler) and fold the layers' "
                                          "times onto the PyTorch module tree that the exporter's node names "
                                          "record: time, share, GFLOP and achieved GFLOP/s against this machine's "
                                          "measured FP32 peak per module, and time per operator.",
                              epilog=EXAMPLES, formatter_class=common.HelpFormatter)
    p.add_argument("target", metavar="MODEL|ARTIFACT", help="a registered model or an .onnx/.engine artifact")
    common.add_backend(p, "the backend to profile on (default: the fastest usable CPU backend for ONNX)")
    p.add_argument("--precision", default="fp32",
                   help="a model's export: fp32 (default), fp16, int8 (the backend's flavour), int8-cpu, "
                        "int8-openvino; bf16: OpenVINO's inference precision")
    common.add_checkpoint(p)
    p.add_argument("--calib", metavar="DIR", help="calibration images for an int8 export of a model")
    p.add_argument("--calib-count", type=common.positive_int, default=32, help="calibration images (default 32)")
    common.add_size(p)
    p.add_argument("--batch", type=common.positive_int, default=1, help="batch size (default 1)")
    common.add_threads(p)
    p.add_argument("--runs", type=common.positive_int, default=20, help="profiled runs, after --warmup (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="unprofiled runs first (default 3)")
    p.add_argument("--depth", type=int, default=3, help="module levels to fold at: 1 backbone/decode_head, 2 "
                                                        "stages, 3 blocks (default), 0 the whole graph")
    p.add_argument("--statistic", choices=("median", "mean"), default="median",
                   help="of each layer's per-run times (default median: robust to other processes' bursts)")
    p.add_argument("--sort", choices=("graph", "time"), default="graph",
                   help="rows in graph order (default) or by time")
    p.add_argument("--top", type=common.positive_int, help="show the N slowest modules only")
    p.add_argument("--min-s", type=float, default=3.0, help="seconds of unprofiled calls timing the latency "
                                                            "(default 3)")
    p.add_argument("--cache-dir", default=None, help="the export cache (default artifacts/cache)")
    p.add_argument("--force-export", action="store_true", help="re-export even if the cache has the artifact")
    p.add_argument("--no-peak", action="store_true", help="skip the FP32 matmul peak measurement")
    common.add_json(p)
    p.add_argument("--md", metavar="FILE", help="the tables as Markdown")
    p.add_argument("--plot", metavar="FILE.png", help="the slowest modules as bars split by operator (matplotlib)")
    common.add_force(p, "existing report files")
    p.set_defaults(func=run)


def is_artifact(target: str) -> bool:
    return target.lower().endswith(SUFFIXES) or os.path.sep in target or os.path.isfile(target)


def run(args) -> int:
    artifact = args.target if is_artifact(args.target) else None
    common.check_outputs(args.force, args.json, args.md, args.plot, inputs=[artifact, args.checkpoint])
    if args.plot and not args.plot.lower().endswith(".png"):
        raise InputError(f"--plot writes a PNG; give a .png path, not {args.plot!r}")
    height, width = common.parse_size(args.size)
    request = ProfileRequest(
        model=None if artifact else args.target, artifact=artifact, backend=args.backend,
        precision=args.precision.lower(), checkpoint=args.checkpoint, calib=args.calib, calib_count=args.calib_count,
        height=height, width=width, batch=args.batch, threads=args.threads, runs=args.runs, warmup=args.warmup,
        depth=args.depth, statistic=args.statistic, protocol=Protocol(warmup_s=1.0, min_s=args.min_s, min_iters=10),
        cache_dir=args.cache_dir or DEFAULT_CACHE_DIR, force_export=args.force_export,
        measure_peak=not args.no_peak)
    if request.model is not None:
        from segdeploy.models import get_spec

        get_spec(request.model)  # an unknown model: one line, before any progress line
    with common.status(f"profiling {args.target}") as say:
        report = profile(request, progress=say)
    print_table(rp.title(report), *rp.module_table(report, args.sort, args.top))
    print_table("by operator", *rp.operator_table(report))
    for line in rp.summary_lines(report):
        print(line)
    written = []
    if args.json:
        written.append(common.write_json(args.json, report, args.force))
    if args.md:
        written.append(write_text_atomic(args.md, rp.to_markdown(report, args.sort, args.top), force=args.force))
    if args.plot:
        written.append(write_bytes_atomic(args.plot, rp.render_plot(report, args.top or 20), force=args.force))
    for path in written:
        if path:
            print(f"wrote {path}")
    return 0

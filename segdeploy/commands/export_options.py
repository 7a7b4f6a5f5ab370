"""export's flags turned into one ExportRequest (with its precision and TensorRT build options) and the accuracy
evaluator export.run is handed; the argument groups other commands share (precision, TensorRT build).
"""
from __future__ import annotations

from segdeploy import backends, flavours
from segdeploy.commands import common
from segdeploy.errors import InputError
from segdeploy.evaluation.accuracy import GraphAccuracy
from segdeploy.export.precision import MODES, TARGETS, PrecisionOptions
from segdeploy.export.precision.calibrate import DEFAULT_PERCENTILE, METHODS
from segdeploy.export.precision.calibration_images import DEFAULT_COUNT
from segdeploy.export.request import ExportRequest
from segdeploy.export.tensorrt import BUILDERS
from segdeploy.export.tensorrt.plan import MAX_DLA_CORE, MAX_WORKSPACE_MB, BuildOptions
from segdeploy.export.triton import MAX_INSTANCES


def add_precision_arguments(p) -> None:
    g = p.add_argument_group("precision (FP16/INT8 as graph passes, verified on the CPU; the manifest records it)")
    g.add_argument("--precision", choices=MODES, default="fp32",
                   help="fp32 (default); fp16: float16 with float32 islands (normalisations, Softmax, SegNeXt's "
                        "NMF, overflowing tensors); int8: explicit Q/DQ (see --target)")
    g.add_argument("--target", choices=TARGETS,
                   help="INT8 flavour, for where the graph will run: "
                        + "; ".join(flavours.get(name).help for name in TARGETS))
    g.add_argument("--io-dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of the float input and outputs of fp16/int8-tensorrt graphs (default float32)")
    g.add_argument("--calib", metavar="DIR",
                   help="calibration images: a folder of images, or a dataset folder (its training split); needed "
                        "for int8, optional for fp16 (the ranges of its islands)")
    g.add_argument("--calib-count", type=common.positive_int, default=DEFAULT_COUNT,
                   help=f"calibration images, taken evenly spaced in name order (default {DEFAULT_COUNT})")
    g.add_argument("--calib-method", choices=METHODS, default="minmax",
                   help="activation ranges: minmax (default), percentile, entropy (TensorRT's KL divergence)")
    g.add_argument("--percentile", type=common.finite_float(50, 100, above=True), default=DEFAULT_PERCENTILE,
                   help=f"the percentile of --calib-method percentile (default {DEFAULT_PERCENTILE})")
    g.add_argument("--eval-data", metavar="DIR",
                   help="held-out set the accuracy is measured and recorded on: a labelled dataset folder (its "
                        "validation split; mIoU) or a folder of images (label agreement with FP32); must not share "
                        "images with --calib")
    g.add_argument("--max-drop", type=common.finite_float(0, 100), metavar="POINTS",
                   help="accuracy budget on --eval-data (mIoU points, or agreement points without labels): INT8 "
                        "keeps its most sensitive blocks in float until the drop is within it")


def add_engine_arguments(p) -> None:
    """--fmt trt / triton options (the ONNX artifact is exported first, then built or packaged)."""
    g = p.add_argument_group("TensorRT (--fmt trt; --fmt triton --platform tensorrt); the engine's precision is the "
                             "ONNX graph's (--precision)")
    g.add_argument("--workspace", type=common.int_range(1, MAX_WORKSPACE_MB), metavar="MiB",
                   help="builder workspace limit (default: TensorRT's)")
    g.add_argument("--opt-level", type=int, choices=range(6), metavar="0-5",
                   help="builder optimization level (TensorRT's default 3)")
    g.add_argument("--timing-cache", metavar="FILE", help="load and update this timing cache (merged under a lock)")
    g.add_argument("--dla-core", type=common.int_range(0, MAX_DLA_CORE), metavar="N",
                   help="build for DLA core N (Jetson; static fp16/int8 only)")
    g.add_argument("--gpu-fallback", action="store_true", help="let layers DLA cannot run fall back to the GPU")
    g.add_argument("--version-compatible", action="store_true",
                   help="engine runs on newer TensorRT releases too (10.x engines on 11.x)")
    g.add_argument("--hardware-compat", nargs="?", const="ampere_plus", default="none",
                   choices=("none", "ampere_plus", "same_compute_capability"),
                   help="engine runs on other GPUs: ampere_plus (SM >= 8.0, the default when given) or "
                        "same_compute_capability (TensorRT >= 10.9); not on Jetson")
    g.add_argument("--tf32", action="store_true",
                   help="let TensorRT run FP32 layers as TF32 on Ampere and newer (faster; ~1e-3 relative off "
                        "PyTorch FP32, beyond validate's fp32 tolerance); off by default, recorded in the header")
    g.add_argument("--builder", choices=("auto", "tensorrt-python", "trtexec", "bundle"), default="auto",
                   help="auto (default): the TensorRT Python API, else trtexec, else a build bundle; bundle: write "
                        "the bundle even where TensorRT is installed")
    g.add_argument("--engine-format", choices=("engine", "plan"),
                   help="engine: segdeploy's header + the plan (its runner, C++ library, info); plan: the bare plan "
                        "that trtexec --loadEngine, Polygraphy, DeepStream and Triton read (default: plan when "
                        "--output ends in .plan, else engine)")
    t = p.add_argument_group("Triton (--fmt triton; --output is the model repository folder)")
    t.add_argument("--platform", choices=backends.TRITON_PLATFORMS, default=backends.ONNXRUNTIME,
                   help="onnxruntime_onnx (model.onnx) or tensorrt_plan (model.plan, built here)")
    t.add_argument("--instance-kind", choices=("auto", "gpu", "cpu"), default="auto",
                   help="instance_group kind: auto (default; Triton uses its GPUs, else the CPU), gpu or cpu")
    t.add_argument("--instances", type=common.int_range(1, MAX_INSTANCES), default=1,
                   help=f"instance_group count, 1-{MAX_INSTANCES}")


def export_request(args) -> ExportRequest:
    """export's flags as the request export.run carries out (the flags alone are checked here; the model, the
    destinations and the data there)."""
    # with --from-onnx the artifact's manifest says the size
    height, width = (512, 512) if args.from_onnx else common.parse_size(args.size)
    return ExportRequest(
        model=args.model, fmt=args.fmt, output=args.output, from_onnx=args.from_onnx, checkpoint=args.checkpoint,
        height=height, width=width, batch=args.batch, dynamic=args.dynamic, opset=args.opset, simplify=args.simplify,
        outputs=args.outputs, preprocess=args.preprocess,
        precision=PrecisionOptions() if args.from_onnx else precision_options(args), force=args.force,
        validate=args.validate, threads=args.threads, build=build_options(args),
        builders=BUILDERS if args.builder == "auto" else (args.builder,), engine_format=args.engine_format,
        platform=args.platform, instance_kind=args.instance_kind, instances=args.instances)


def build_options(args) -> BuildOptions:
    return BuildOptions(precision=args.precision, workspace_mb=args.workspace, opt_level=args.opt_level,
                        timing_cache=args.timing_cache, dla_core=args.dla_core, gpu_fallback=args.gpu_fallback,
                        version_compatible=args.version_compatible, hardware_compat=args.hardware_compat,
                        tf32=args.tf32)


def builds_engine(args) -> bool:
    return args.fmt == "trt" or (args.fmt == "triton" and backends.get(args.platform).consumes == "engine")


def precision_options(args) -> PrecisionOptions:
    """The export's precision from the flags; INT8 defaults to the flavour of where it will run."""
    target = args.target
    if args.precision == "int8" and target is None:
        target = flavours.FOR_ENGINES if builds_engine(args) else flavours.DEFAULT
    if builds_engine(args) and target in flavours.FLAVOURS and not flavours.get(target).builds_engine:
        raise InputError(f"TensorRT builds the {flavours.FOR_ENGINES} INT8 flavour (symmetric Q/DQ, float16 "
                         f"elsewhere); --target {target} is for {backends.label(flavours.get(target).fast_on[0])}")
    return PrecisionOptions(args.precision, target, args.io_dtype, args.calib, args.calib_count,
                            args.calib_method, args.percentile, args.max_drop).checked()


def accuracy_evaluator(args, height: int, width: int):
    if not args.eval_data:
        return None
    from segdeploy import models

    spec = models.get_spec(args.model)
    return GraphAccuracy(args.eval_data, mean=spec.mean, std=spec.std, channel_order=spec.channel_order,
                         align_corners=spec.align_corners, size=(height, width), uint8_input=args.preprocess,
                         batch=args.batch, threads=args.threads)

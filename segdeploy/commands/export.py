"""segdeploy export: a registered model -> a verified, self-describing artifact (ONNX + manifest), and from it a
TensorRT engine (or a build bundle for the target) or a Triton model repository."""
from __future__ import annotations

import os

from segdeploy import backends, flavours
from segdeploy.artifact import formats
from segdeploy.artifact.formats import FORMATS, require_exportable
from segdeploy.commands import common
from segdeploy.console import print_table
from segdeploy.errors import InputError

EXAMPLES = """examples:
  segdeploy export --model cgrseg_t                                  # artifacts/cgrseg_t_512x512.onnx
  segdeploy export --model segnext_t --size 512x1024 --dynamic        # batch 1-4, H and W 256-1024
  segdeploy export --model offseg_t --outputs mask --preprocess       # uint8 BGR image in, uint8 labels out
  segdeploy export --model cgrseg_t --checkpoint cgrseg_t_ade.pth --output cgrseg_t.onnx --force
  segdeploy export --model cgrseg_t --fmt trt --dynamic               # engine here, else a bundle for the target
  segdeploy export --model cgrseg_t --precision fp16                  # float16 with float32 islands
  segdeploy export --model cgrseg_t --checkpoint ck.pth --precision int8 --calib data/ --eval-data data/
                                                                      # INT8 for ONNX Runtime (cpu flavour)
  segdeploy export --model cgrseg_t --checkpoint ck.pth --precision int8 --calib data/ --target openvino
                                                                      # INT8 for OpenVINO (symmetric, float32 elsewhere)
  segdeploy export --model cgrseg_t --checkpoint ck.pth --precision int8 --calib data/ --eval-data data/ \\
      --max-drop 1                                                    # mixed precision: at most 1 mIoU point lost
  segdeploy export --model cgrseg_t --checkpoint ck.pth --fmt trt --precision int8 --calib data/
                                                                      # TensorRT Q/DQ, float16 elsewhere
  segdeploy export --model cgrseg_t --fmt triton --output repo/       # Triton model repository (ONNX Runtime)
  segdeploy export --fmt trt --from-onnx artifacts/cgrseg_t_512x512.onnx

An export whose artifact exists already (the same model, weights, size and options, checked against its manifest) is
reused, so --fmt trt and --fmt triton after an ONNX export build on that ONNX; --force exports again."""


def add_parser(subparsers) -> None:
    from segdeploy.export.trace import DEFAULT_OPSET, MAX_OPSET

    p = subparsers.add_parser("export", help="export a model to a verified, self-describing artifact",
                              description="Trace a registered model to ONNX (standard ops only), simplify it, verify "
                                          "it against PyTorch and write it with its manifest (embedded and as a "
                                          "JSON sidecar); --fmt trt and triton build on that artifact. Nothing is "
                                          "written unless every step succeeds. Exit 0: written or reused; 1: the "
                                          "graph is out of tolerance (nothing written); 2: bad input.",
                              epilog=EXAMPLES, formatter_class=common.HelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    common.add_model(what, required=False, help_text="registered model")
    what.add_argument("--from-onnx", metavar="FILE",
                      help="--fmt trt/triton: build from this ONNX artifact (its manifest says the model, size and "
                           "precision) instead of exporting one")
    p.add_argument("--fmt", default="onnx", choices=sorted(FORMATS), help="artifact format (default onnx)")
    common.add_checkpoint(p)
    common.add_size(p, help_text="traced input size, height x width")
    p.add_argument("--batch", type=common.positive_int, default=1, help="traced batch size (default 1)")
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic batch (1-4) and H, W (multiples of 32, 256-1024), traced at --batch/--size")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, 17-{MAX_OPSET} (default {DEFAULT_OPSET}: the newest TensorRT 10 reads; GELU "
                        "stays one node)")
    p.add_argument("--no-simplify", dest="simplify", action="store_false", help="skip the simplifier (onnxslim)")
    p.add_argument("--outputs", default="logits", choices=("logits", "mask"),
                   help="logits: class scores at the head's stride; mask: labels at the input size, argmax in the "
                        "graph (uint8 up to 255 classes)")
    p.add_argument("--preprocess", action="store_true",
                   help="the graph takes uint8 NHWC BGR images (OpenCV's layout) and normalises them itself")
    p.add_argument("--output", metavar="PATH",
                   help="onnx: the artifact (default artifacts/<model>_<H>x<W>[_dynamic][_mask][_uint8].onnx); trt: "
                        "the engine (the ONNX goes beside it); triton: the repository folder (default "
                        "artifacts/triton)")
    p.add_argument("--force", action="store_true",
                   help="export (and build) again even when the artifact exists, overwriting it and its sidecar (and "
                        "the engine or repository); without it an existing artifact is reused when it is this export "
                        "and refused when it is another")
    p.add_argument("--no-validate", dest="validate", action="store_false",
                   help="skip the comparison with PyTorch (the manifest then says so, and every command that reads "
                        "the artifact warns)")
    common.add_threads(p)
    add_precision_arguments(p)
    add_engine_arguments(p)
    p.set_defaults(func=run)


def add_precision_arguments(p) -> None:
    from segdeploy.export.precision import MODES, TARGETS
    from segdeploy.export.precision.calibrate import DEFAULT_COUNT, DEFAULT_PERCENTILE, METHODS

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
    from segdeploy.export.tensorrt.plan import MAX_DLA_CORE, MAX_WORKSPACE_MB
    from segdeploy.export.triton import MAX_INSTANCES

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


def build_options(args):
    from segdeploy.export.tensorrt.plan import BuildOptions

    return BuildOptions(precision=args.precision, workspace_mb=args.workspace, opt_level=args.opt_level,
                        timing_cache=args.timing_cache, dla_core=args.dla_core, gpu_fallback=args.gpu_fallback,
                        version_compatible=args.version_compatible, hardware_compat=args.hardware_compat,
                        tf32=args.tf32)


def _onnx_output(args):
    """Where the ONNX artifact goes: --output itself for onnx; beside the engine for trt; default for triton."""
    if args.fmt == "onnx" or not args.output:
        return args.output
    if args.fmt == "trt":
        return formats.with_suffix(args.output, formats.ONNX_SUFFIX)
    return None


def builds_engine(args) -> bool:
    return args.fmt == "trt" or (args.fmt == "triton" and backends.get(args.platform).consumes == "engine")


def precision_options(args):
    """The export's precision from the flags; INT8 defaults to the flavour of where it will run."""
    from segdeploy.export.precision import PrecisionOptions

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
    from segdeploy.evaluation.accuracy import GraphAccuracy

    spec = models.get_spec(args.model)
    return GraphAccuracy(args.eval_data, mean=spec.mean, std=spec.std, channel_order=spec.channel_order,
                         align_corners=spec.align_corners, size=(height, width), uint8_input=args.preprocess,
                         batch=args.batch, threads=args.threads)


def check_trt_output(args) -> str:
    """What --fmt trt writes here ("engine", a file, where TensorRT is present; "bundle", a folder, where it is
    not), with --output refused before any work when it names the other kind."""
    from segdeploy.export.tensorrt import planned_kind

    kind = planned_kind()
    if args.output:
        engine_name = formats.is_engine_name(args.output)
        if kind == "engine" and not engine_name:
            raise InputError(f"--fmt trt builds an engine here: --output must end in .engine or .plan, not "
                             f"{args.output}")
        if kind == "bundle" and (engine_name or formats.suffix_of(args.output) in (formats.ONNX_SUFFIX,
                                                                                    formats.MANIFEST_SUFFIX)):
            raise InputError(f"no TensorRT here, so --fmt trt writes a build bundle (a folder) to build the engine "
                             f"on the target: give --output a folder name, not the file name {args.output}")
    return kind


# INT8 is judged against PyTorch on real images; the recipe weights' logits are near ties, which any quantizer
# flips, so verification would fail after minutes of calibration. Said before any of it runs.
INT8_NEEDS_WEIGHTS = ("--precision int8 needs trained weights (--checkpoint): the recipe weights' near-tied logits "
                      "flip under any quantizer, so verification would fail. `segdeploy fixtures --quick` trains "
                      "cgrseg_t on a small synthetic dataset in a couple of minutes and prints the export command "
                      "to run with it (or pass --no-validate to export INT8 unverified, for timing only)")


def run(args) -> int:
    import warnings

    require_exportable(args.fmt)
    if args.fmt == "trt":
        args.trt_kind = check_trt_output(args)  # an engine (a file) here, else a bundle (a folder)
    if args.from_onnx:
        return run_from_onnx(args)
    height, width = common.parse_size(args.size)
    precision = precision_options(args)
    from segdeploy import models
    from segdeploy.export.onnx import artifact_path, check_export_shape
    from segdeploy.export.trace import check_opset

    check_export_shape(models.get_spec(args.model), args.batch, height, width, args.dynamic)
    check_opset(args.opset)
    path = artifact_path(args.model, _onnx_output(args), height=height, width=width, dynamic=args.dynamic,
                         outputs=args.outputs, preprocess=args.preprocess, precision=precision)
    if args.fmt in ("trt", "triton"):
        from segdeploy.export.tensorrt.plan import check_options

        check_options(build_options(args))  # refuse impossible flag combinations before the export runs
        check_final_destination(args, args.model, onnx_exists=os.path.exists(path))
    evaluator = accuracy_evaluator(args, height, width)
    if precision.mode != "fp32":
        from segdeploy.export.precision import prepare

        prepare(precision, opset=args.opset, evaluator=evaluator)  # the calibration folder, the held-out set
        if precision.mode == "int8" and args.checkpoint is None and args.validate:
            raise InputError(INT8_NEEDS_WEIGHTS)
    from segdeploy.artifact.manifest import sidecar_path

    existed = {os.path.abspath(p) for p in (path, sidecar_path(path)) if os.path.lexists(p)}
    missing = []  # the folders the ONNX step will make, deepest first
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        missing.append(folder)
        folder = os.path.dirname(folder)
    if os.path.exists(path) and not args.force:
        manifest = reuse(args, path, height, width, precision, evaluator)
    else:
        manifest = export(args, path, height, width, precision, evaluator)
        if not args.validate:
            warnings.warn(f"{path} was not compared with PyTorch (--no-validate); its manifest says so and every "
                          "command that reads it will warn; segdeploy validate compares it", stacklevel=1)
    print_summary(path, manifest)
    if args.fmt == "onnx":
        from segdeploy.runtimes.fastest import export_advice

        p = manifest.precision
        for line in export_advice(args.model, flavours.label(p.mode, p.flavour), args.threads):
            print(line)
    if args.fmt in ("trt", "triton"):
        from segdeploy.io import identities, remove_made, remove_unchanged

        written = identities(*(p for p in (path, sidecar_path(path)) if os.path.abspath(p) not in existed))
        try:
            if args.fmt == "trt":
                export_trt(args, path)
            else:
                export_triton(args, path, manifest.model.name)
        except BaseException:
            remove_unchanged(written)  # a command that fails leaves nothing behind: not its ONNX step either
            remove_made(missing)
            raise
    return 0


def export(args, path, height, width, precision, evaluator):
    from segdeploy.evaluation.validate import verify_graph
    from segdeploy.export.onnx import export_onnx

    def verify(graph, proto, shapes, **options):
        return verify_graph(graph, proto, shapes, threads=args.threads, **options)

    with common.status(f"exporting {args.model}") as say:
        result = export_onnx(args.model, path, checkpoint=args.checkpoint, height=height, width=width,
                             batch=args.batch, dynamic=args.dynamic, opset=args.opset, simplify=args.simplify,
                             outputs=args.outputs, preprocess=args.preprocess, force=args.force,
                             verify=verify if args.validate else None, progress=say, precision=precision,
                             evaluator=evaluator, threads=args.threads, unverified="exported with --no-validate")
    return result.manifest


def reuse(args, path, height, width, precision, evaluator):
    """The manifest of the artifact at ``path`` when it is this export (checked against its manifest and graph
    hash), announced as reused; one line and exit 2 when it is another export (it is never overwritten without
    --force)."""
    from segdeploy.artifact.reader import warn_caveats
    from segdeploy.errors import ArtifactError
    from segdeploy.export.identity import export_request, reusable

    with common.status(f"checking {path} against this export") as say:
        def wanted():
            say("hashing the weights" + (" and the calibration images" if precision.calib else ""))
            return export_request(args.model, checkpoint=args.checkpoint, batch=args.batch, height=height,
                                  width=width, dynamic=args.dynamic, opset=args.opset, simplify=args.simplify,
                                  outputs=args.outputs, preprocess=args.preprocess, precision=precision,
                                  evaluator=evaluator, verify=args.validate)

        manifest, why = reusable(path, wanted)
    if manifest is None:
        raise ArtifactError(f"{path} exists and is another export ({why}); pass --force to replace it, or choose "
                            "another --output")
    print(f"reused {path}: the same model, weights, size and options, and its graph still hashes to its manifest's "
          "sha256 (--force exports it again)")
    warn_caveats(manifest, path)
    return manifest


def run_from_onnx(args) -> int:
    """--fmt trt/triton from an ONNX artifact segdeploy wrote: its manifest says what it is."""
    from segdeploy.artifact.reader import read_runnable_manifest

    if args.fmt == "onnx":
        raise InputError("--from-onnx builds on an ONNX artifact: give --fmt trt or --fmt triton with it")
    if args.checkpoint:
        raise InputError("--checkpoint goes with --model; the ONNX artifact carries its weights")
    path = args.from_onnx
    if not formats.is_onnx_name(path):
        raise InputError(f"--from-onnx takes an ONNX artifact (.onnx), not {path}")
    manifest = read_runnable_manifest(path)
    if args.precision != "fp32" and args.precision != manifest.precision.mode:
        raise InputError(f"{path} is {manifest.precision.mode}; the engine's precision is the graph's (leave "
                         "--precision out, or export that precision first)")
    args.precision = manifest.precision.mode
    from segdeploy.export.tensorrt.plan import check_options

    check_options(build_options(args))
    check_final_destination(args, manifest.model.name, onnx_exists=True)
    print(f"building on {path}: {manifest.model.name}, {manifest.profile.describe()}, "
          f"{precision_line(manifest.precision)}")
    if args.fmt == "trt":
        export_trt(args, path)
    else:
        export_triton(args, path, manifest.model.name)
    return 0


def check_final_destination(args, model: str, onnx_exists: bool = False) -> None:
    """The engine, bundle or model repository --fmt trt/triton ends with must be writable before minutes of export
    and build: a repository that is a file, a folder without permission, and an existing engine, bundle or model
    folder without --force, unless the ONNX artifact exists (it may then be this very build, which is reused; the
    build step decides)."""
    from segdeploy.io import check_destination

    if args.fmt == "trt" and args.output:
        if getattr(args, "trt_kind", "engine") == "engine":
            if not (onnx_exists and os.path.exists(args.output)):
                check_destination(args.output, args.force, "engine")
            return
        bundle = os.path.abspath(args.output)
        if os.path.exists(bundle) and not os.path.isdir(bundle):
            raise InputError(f"--output {args.output} is a file; without TensorRT --fmt trt writes a bundle folder")
        if os.path.exists(bundle) and not args.force and not onnx_exists:
            raise InputError(f"{args.output} exists; pass --force to replace the bundle")
        check_destination(os.path.join(os.path.dirname(bundle), f".{os.path.basename(bundle)}.probe"), True,
                          "build bundle")
        return
    if args.fmt == "triton":
        repository = os.path.abspath(args.output or os.path.join("artifacts", "triton"))
        if os.path.exists(repository) and not os.path.isdir(repository):
            raise InputError(f"--output {args.output} is a file; --fmt triton writes a model repository folder")
        target = os.path.join(repository, model)
        if os.path.exists(target) and not args.force and not onnx_exists:
            raise InputError(f"{target} exists; pass --force to replace the model")
        check_destination(os.path.join(repository, f".{model}.probe"), True, "model repository")
        # the model is staged beside the repository (Triton loads every folder inside it)
        check_destination(os.path.join(os.path.dirname(repository), f".{model}.probe"), True,
                          "folder the model is staged in, beside the repository,")


def print_summary(path: str, m) -> None:
    ex, v = m.export, m.validation
    rows = [
        ["artifact", f"{path} ({os.path.getsize(path) / 2**20:.1f} MiB)"],
        ["manifest", f"{os.path.splitext(path)[0]}.json (schema {m.schema_version}, also embedded)"],
        ["input", f"{m.input.name} {m.input.dtype} {m.input.layout} {m.input.shape}"],
        ["output", f"{m.output.name} {m.output.dtype} {m.output.shape} ({m.output.kind})"],
        ["profile", m.profile.describe()],
        ["precision", precision_line(m.precision)],
        ["nodes", f"{ex.nodes_traced} traced -> {ex.nodes}" + (f" ({ex.simplifier})" if ex.simplifier else
                                                                 " (not simplified)")],
        ["opset / options", f"{ex.opset} / {ex.model_options or 'none'}"],
        ["weights", f"{m.weights.source} sha256 {m.weights.sha256[:12]}"],
        ["graph sha256", m.graph_sha256[:12]],
    ]
    if v.get("skipped"):
        rows.append(["verification", f"skipped ({v.get('reason') or 'not compared with PyTorch'})"])
    elif v.get("checks") is not None:  # each criterion with the figure it is judged by
        from segdeploy.evaluation.compare import required, shown

        figures = [f"{c['criterion']} {shown(c['value'], c['unit'], c['op'])} ({required(c)}"
                   f"{'' if c['passed'] else ': FAILED'})" for c in v["checks"]]
        rows.append(["verification", f"{'passed' if v['passed'] else 'FAILED'} on {v['cases']} "
                                     f"input{'s' if v['cases'] != 1 else ''} {v['shapes']}: " + "; ".join(figures)])
    else:  # a manifest written before the checks were recorded
        rows.append(["verification", f"{'passed' if v.get('passed') else 'FAILED'} on {v.get('cases')} inputs"])
    accuracy = m.precision.details.get("accuracy")
    if accuracy:
        rows.append(["accuracy", accuracy_line(accuracy, m.precision.mode)])
    print_table(f"{m.model.name} -> onnx{' (dynamic)' if m.dynamic else ''}", ["", "value"], rows)


def precision_line(p) -> str:
    text = p.mode + (f" ({p.flavour})" if p.flavour else "")
    details = p.details
    if "calibration" in details:
        c = details["calibration"]
        text += f"; calibrated on {c['count']} images ({c['method']})"
    quant = details.get("quantization", {})
    if quant.get("quantized") is not None:
        text += f"; {len(quant['quantized'])} layers in int8, {len(quant.get('not_quantized', []))} left in float"
    islands = (details.get("float16") or quant.get("float16") or {})
    if islands.get("float32_nodes") is not None:
        text += f"; {islands['float32_nodes']} nodes kept in float32"
    mixed = details.get("mixed_precision")
    if mixed:
        text += f"; mixed precision: {len(mixed['kept'])} of {mixed['blocks']} blocks kept in {mixed['kept_in']}"
    return text


def accuracy_line(a: dict, mode: str) -> str:
    text = f"{a['metric']} {a['fp32']:.2f} (fp32) -> {a[mode]:.2f} ({mode}), drop {a['drop']:.2f} on {a['images']} " \
           "held-out images"
    if a.get("budget") is not None:
        text += f" (budget {a['budget']:g})"
    return text


def export_trt(args, onnx_path: str):
    from segdeploy.commands.build_engine import print_engine_result
    from segdeploy.export.tensorrt import BUILDERS, export_engine

    builders = BUILDERS if args.builder == "auto" else (args.builder,)
    result = export_engine(onnx_path, build_options(args), args.output, force=args.force, log=print,
                           builders=builders, engine_format=args.engine_format)
    print_engine_result(result)
    verb = "kept" if any(n.startswith("reused") for n in result.notes) else "wrote"
    print(f"{verb} {'the engine' if result.kind == 'engine' else 'the build bundle (a folder)'} {result.path}")
    return result


def export_triton(args, onnx_path: str, model: str):
    from segdeploy.export.triton import write_repository

    artifact = onnx_path
    if backends.get(args.platform).consumes == "engine":
        from segdeploy.export.tensorrt import export_engine

        artifact = export_engine(onnx_path, build_options(args), force=args.force, log=print,
                                 builders=("tensorrt-python", "trtexec")).path
    repository = args.output or os.path.join("artifacts", "triton")
    existed = os.path.exists(os.path.join(repository, model)) and not args.force
    folder = write_repository(artifact, repository, platform=args.platform, instance_kind=args.instance_kind,
                              instances=args.instances, force=args.force)
    if existed:  # kept by write_repository: it holds exactly these files
        print(f"reused {folder}: it holds this model, config and manifest already")
    from segdeploy.export.triton import serving_warnings

    for warning in serving_warnings(args.platform, args.version_compatible):
        print(f"warning: {warning}")
    print(f"Triton model repository: {folder} (serve with: tritonserver --model-repository "
          f"{os.path.dirname(folder)})")
    return folder

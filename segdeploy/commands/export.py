"""segdeploy export: a registered model -> a verified, self-describing artifact (ONNX + manifest), and from it a
TensorRT engine (or a build bundle for the target) or a Triton model repository."""
from __future__ import annotations

import os

from segdeploy import backends, flavours
from segdeploy.artifact import formats
from segdeploy.artifact.formats import FORMATS, require_exportable
from segdeploy.artifact.manifest_store import sidecar_path
from segdeploy.artifact.reader import read_runnable_manifest, warn_caveats
from segdeploy.commands import common
from segdeploy.commands.build_engine import print_engine_result
from segdeploy.commands.export_options import (
    accuracy_evaluator,
    add_engine_arguments,
    add_precision_arguments,
    build_options,
    check_final_destination,
    check_trt_output,
    onnx_output,
    precision_options,
)
from segdeploy.commands.export_report import precision_line, print_summary
from segdeploy.errors import ArtifactError, InputError
from segdeploy.export import triton
from segdeploy.export.identity import export_request, reusable
from segdeploy.export.precision import prepare
from segdeploy.export.tensorrt import BUILDERS, export_engine
from segdeploy.export.tensorrt.plan import check_options
from segdeploy.export.trace import DEFAULT_OPSET, MAX_OPSET, check_opset
from segdeploy.files.atomic import identities, remove_unchanged
from segdeploy.files.destinations import remove_made
from segdeploy.runtimes.fastest import export_advice

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


# INT8 is judged against PyTorch on real images; the recipe weights' logits are near ties, which any quantizer
# flips, so verification would fail after minutes of calibration. Said before any of it runs.
INT8_NEEDS_WEIGHTS = ("--precision int8 needs trained weights (--checkpoint): the recipe weights' near-tied logits "
                      "flip under any quantizer, so verification would fail. `segdeploy fixtures --quick` trains "
                      "cgrseg_t on a small synthetic dataset in a couple of minutes and prints the export command "
                      "to run with it (or pass --no-validate to export INT8 unverified, for timing only)")


def run(args) -> int:
    import warnings

    require_exportable(args.fmt)
    if args.from_onnx:
        return run_from_onnx(args)
    height, width = common.parse_size(args.size)
    precision = precision_options(args)
    from segdeploy import models
    from segdeploy.export.onnx import artifact_path, check_export_shape

    check_export_shape(models.get_spec(args.model), args.batch, height, width, args.dynamic)
    check_opset(args.opset)
    path = artifact_path(args.model, onnx_output(args), height=height, width=width, dynamic=args.dynamic,
                         outputs=args.outputs, preprocess=args.preprocess, precision=precision)
    if args.fmt in ("trt", "triton"):
        check_options(build_options(args))  # refuse impossible flag combinations before the export runs
        if args.fmt == "trt":
            args.trt_kind = check_trt_output(args)  # an engine (a file) here, else a bundle (a folder)
        check_final_destination(args, args.model, onnx_exists=os.path.exists(path))
    evaluator = accuracy_evaluator(args, height, width)
    if precision.mode != "fp32":
        prepare(precision, opset=args.opset, evaluator=evaluator)  # the calibration folder, the held-out set
        if precision.mode == "int8" and args.checkpoint is None and args.validate:
            raise InputError(INT8_NEEDS_WEIGHTS)

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
        p = manifest.precision
        for line in export_advice(args.model, flavours.label(p.mode, p.flavour), args.threads):
            print(line)
    if args.fmt in ("trt", "triton"):
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

    check_options(build_options(args))
    if args.fmt == "trt":
        args.trt_kind = check_trt_output(args)  # an engine (a file) here, else a bundle (a folder)
    check_final_destination(args, manifest.model.name, onnx_exists=True)
    print(f"building on {path}: {manifest.model.name}, {manifest.profile.describe()}, "
          f"{precision_line(manifest.precision)}")
    if args.fmt == "trt":
        export_trt(args, path)
    else:
        export_triton(args, path, manifest.model.name)
    return 0


def export_trt(args, onnx_path: str):
    builders = BUILDERS if args.builder == "auto" else (args.builder,)
    result = export_engine(onnx_path, build_options(args), args.output, force=args.force, log=print,
                           builders=builders, engine_format=args.engine_format)
    print_engine_result(result)
    verb = "kept" if any(n.startswith("reused") for n in result.notes) else "wrote"
    print(f"{verb} {'the engine' if result.kind == 'engine' else 'the build bundle (a folder)'} {result.path}")
    return result


def export_triton(args, onnx_path: str, model: str):
    artifact = onnx_path
    if backends.get(args.platform).consumes == "engine":
        artifact = export_engine(onnx_path, build_options(args), force=args.force, log=print,
                                 builders=("tensorrt-python", "trtexec")).path
    repository = args.output or os.path.join("artifacts", "triton")
    existed = os.path.exists(os.path.join(repository, model)) and not args.force
    folder = triton.write_repository(artifact, repository, platform=args.platform, instance_kind=args.instance_kind,
                              instances=args.instances, force=args.force)
    if existed:  # kept by write_repository: it holds exactly these files
        print(f"reused {folder}: it holds this model, config and manifest already")

    for warning in triton.serving_warnings(args.platform, args.version_compatible):
        print(f"warning: {warning}")
    print(f"Triton model repository: {folder} (serve with: tritonserver --model-repository "
          f"{os.path.dirname(folder)})")
    return folder

"""segdeploy export: a registered model -> a validated, self-describing artifact (ONNX + JSON sidecar)."""
from __future__ import annotations

import os

from segdeploy import formats
from segdeploy.console import print_table


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a model to a deployable artifact (ONNX), validated against "
                                             "PyTorch")
    p.add_argument("--model", required=True)
    p.add_argument("--fmt", default="onnx", choices=sorted(formats.FORMATS),
                   help="artifact format (trt needs TensorRT; see the format table in segdeploy/formats.py)")
    p.add_argument("--checkpoint", help="the authors' checkpoint (.pth); without it, the golden-recipe weights")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic batch (1-4) and H, W (multiples of 32, 256-1024); traced at --batch/--height/--width")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-simplify", dest="simplify", action="store_false", help="skip onnxsim/onnxslim")
    p.add_argument("--outputs", default="logits", choices=("logits", "mask"),
                   help="logits: stride-8 class scores; mask: uint8 labels at the input size, argmax in the graph")
    p.add_argument("--preprocess", action="store_true",
                   help="the graph takes uint8 HWC BGR images and normalises them itself")
    p.add_argument("--output", help="artifact path (default artifacts/<model>_<H>x<W>[_dynamic].onnx)")
    p.add_argument("--force", action="store_true", help="overwrite the artifact and its sidecar")
    p.add_argument("--no-validate", dest="validate", action="store_false",
                   help="skip the comparison with PyTorch (not recommended)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads for the validation")
    add_engine_arguments(p)
    p.set_defaults(func=run)


def add_engine_arguments(p) -> None:
    """--fmt trt / triton options (the ONNX artifact is exported first, then built or packaged)."""
    g = p.add_argument_group("TensorRT (--fmt trt; --fmt triton --platform tensorrt)")
    g.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                   help="the engine's precision: the ONNX artifact's own (its precision passes put fp16 casts or "
                        "Q/DQ in the graph); checked against the artifact")
    g.add_argument("--workspace", type=int, metavar="MiB", help="builder workspace limit (default: TensorRT's)")
    g.add_argument("--opt-level", type=int, choices=range(6), metavar="0-5",
                   help="builder optimization level (TensorRT's default 3)")
    g.add_argument("--timing-cache", metavar="FILE", help="load and update this timing cache (merged under a lock)")
    g.add_argument("--dla-core", type=int, metavar="N", help="build for DLA core N (Jetson; static fp16/int8 only)")
    g.add_argument("--gpu-fallback", action="store_true", help="let layers DLA cannot run fall back to the GPU")
    g.add_argument("--version-compatible", action="store_true",
                   help="engine runs on newer TensorRT releases too (10.x engines on 11.x)")
    g.add_argument("--hardware-compat", nargs="?", const="ampere_plus", default="none",
                   choices=("none", "ampere_plus", "same_compute_capability"),
                   help="engine runs on other GPUs: ampere_plus (SM >= 8.0, the default when given) or "
                        "same_compute_capability (TensorRT >= 10.9)")
    t = p.add_argument_group("Triton (--fmt triton; --output is the model repository folder)")
    t.add_argument("--platform", choices=("onnxruntime", "tensorrt"), default="onnxruntime",
                   help="onnxruntime_onnx (model.onnx) or tensorrt_plan (model.plan, built here)")
    t.add_argument("--instance-kind", choices=("gpu", "cpu"), default="gpu", help="instance_group kind")
    t.add_argument("--instances", type=int, default=1, help="instance_group count")


def build_options(args):
    from segdeploy.export.tensorrt.plan import BuildOptions

    return BuildOptions(precision=args.precision, workspace_mb=args.workspace, opt_level=args.opt_level,
                        timing_cache=args.timing_cache, dla_core=args.dla_core, gpu_fallback=args.gpu_fallback,
                        version_compatible=args.version_compatible, hardware_compat=args.hardware_compat)


def _onnx_output(args):
    """Where the ONNX artifact goes: --output itself for onnx; beside the engine for trt; default for triton."""
    if args.fmt == "onnx" or not args.output:
        return args.output
    if args.fmt == "trt":
        return os.path.splitext(args.output)[0] + ".onnx"
    return None


def run(args) -> int:
    formats.require(args.fmt, for_export=True)
    if args.fmt == "trt" and args.output and os.path.splitext(args.output)[1].lower() not in (".engine", ".plan"):
        from segdeploy.errors import SegdeployError

        raise SegdeployError(f"--fmt trt writes an engine: --output must end in .engine or .plan, not {args.output}")
    if args.fmt in ("trt", "triton"):
        from segdeploy.export.tensorrt.plan import check_options

        check_options(build_options(args))  # refuse impossible flag combinations before the export runs
    from segdeploy.export.onnx import export_onnx

    onnx_output = _onnx_output(args)
    result = export_onnx(args.model, onnx_output, checkpoint=args.checkpoint, height=args.height, width=args.width,
                         batch=args.batch, dynamic=args.dynamic, opset=args.opset, simplify=args.simplify,
                         outputs=args.outputs, preprocess=args.preprocess, force=args.force,
                         validate=args.validate, threads=args.threads)
    m = result.metadata
    graph, v = m["graph"], m["validation"]
    shape = m["input"]["shape"]
    rows = [
        ["artifact", f"{result.path} ({os.path.getsize(result.path) / 2**20:.1f} MiB)"],
        ["sidecar", result.sidecar_path],
        ["input", f"{m['input']['name']} {m['input']['dtype']} {list(shape)}"
                  + (f" (profile {m['input_profile']})" if m["dynamic"] else "")],
        ["output", f"{m['output']['name']} {m['output']['dtype']} {list(m['output']['shape'])}"],
        ["nodes", f"{graph['nodes_traced']} traced -> {graph['nodes']}"
                  + (f" ({graph['simplifier']})" if graph["simplifier"] else " (not simplified)")],
        ["opset / options", f"{m['opset']} / {m['export_options']['model_options'] or 'none'}"],
        ["weights", f"{m['weights']['source']} sha256 {m['weights']['sha256'][:12]}"],
        ["graph sha256", m["graph_sha256"][:12]],
    ]
    if v.get("skipped"):
        rows.append(["validation", "skipped (--no-validate)"])
    else:
        numbers = [f"max abs err {v['max_abs_err']:.3g}, cosine {v['cosine']:.6f}"] if v["max_abs_err"] is not None \
            else []  # mask outputs have labels only
        numbers.append(f"label agreement {v['mask_agreement']:.3%}")
        rows.append(["validation", f"{'passed' if v['passed'] else 'FAILED'} on {v['cases']} inputs "
                                   f"{[list(s) for s in v['shapes']]}: " + ", ".join(numbers)])
    print_table(f"{m['model']} -> onnx{' (dynamic)' if m['dynamic'] else ''}", ["", "value"], rows)
    if args.fmt == "trt":
        export_trt(args, result.path)
    elif args.fmt == "triton":
        export_triton(args, result.path)
    return 0


def export_trt(args, onnx_path: str):
    from segdeploy.commands.build_engine import print_engine_result
    from segdeploy.export.tensorrt import export_engine

    result = export_engine(onnx_path, build_options(args), args.output, force=args.force, log=print)
    print_engine_result(result)
    return result


def export_triton(args, onnx_path: str):
    from segdeploy.export.triton import write_repository

    artifact = onnx_path
    if args.platform == "tensorrt":
        from segdeploy.export.tensorrt import export_engine

        artifact = export_engine(onnx_path, build_options(args), force=args.force, log=print,
                                 builders=("tensorrt-python", "trtexec")).path
    repository = args.output or os.path.join("artifacts", "triton")
    folder = write_repository(artifact, repository, platform=args.platform, instance_kind=args.instance_kind,
                              instances=args.instances, force=args.force)
    print(f"Triton model repository: {folder} (serve with: tritonserver --model-repository "
          f"{os.path.dirname(folder)})")
    return folder

"""segdeploy build-engine BUNDLE: build the TensorRT engine of a build bundle on the machine it will run on."""
from __future__ import annotations

import os

from segdeploy.artifact import formats
from segdeploy.commands import common
from segdeploy.console import print_table
from segdeploy.errors import ArtifactError
from segdeploy.export.tensorrt import export_engine
from segdeploy.export.tensorrt.bundle import PLAN_FILE, SCRIPT_FILE, read_bundle


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("build-engine", help="build a bundle's TensorRT engine here (TensorRT Python API, "
                                                   "else trtexec), with segdeploy's self-describing header",
                              epilog="examples:\n  segdeploy build-engine artifacts/cgrseg_t_512x512_trt_bundle\n"
                                     "  segdeploy build-engine bundle/ --output /opt/models/cgrseg_t.engine --force",
                              formatter_class=common.HelpFormatter)
    p.add_argument("bundle", help="the folder `segdeploy export --fmt trt` wrote where TensorRT was missing")
    p.add_argument("--output", help="engine path (default BUNDLE/<model>.engine)")
    p.add_argument("--force", action="store_true", help="overwrite an existing engine")
    p.add_argument("--engine-format", choices=("engine", "plan"),
                   help="engine: segdeploy's header + the plan; plan: the bare plan for trtexec, Polygraphy, "
                        "DeepStream and Triton (default: plan when --output ends in .plan, else engine)")
    p.add_argument("--no-lint", dest="lint", action="store_false",
                   help="build even when the TensorRT lint finds errors (TensorRT's parser has the last word)")
    p.set_defaults(func=run)


def run(args) -> int:
    if os.path.isfile(args.bundle):
        raise ArtifactError(f"{args.bundle} is a file; build-engine takes the bundle folder (export --fmt trt "
                            "builds an engine from an ONNX artifact directly)")
    document, plan, onnx_path = read_bundle(args.bundle)
    output = args.output or document["engine"]  # the user's path, else the bundle's own engine name, inside it
    if args.engine_format == "plan" and not args.output:
        output = formats.with_suffix(output, formats.ENGINE_FORMATS["plan"])
    # an existing engine is export_engine's to judge: kept when it is this very build, else refused without --force
    inputs = [onnx_path, os.path.join(args.bundle, PLAN_FILE), os.path.join(args.bundle, SCRIPT_FILE)]
    common.check_outputs(args.force or os.path.exists(output), output, inputs=inputs)
    result = export_engine(onnx_path, plan, output, force=args.force, builders=("tensorrt-python", "trtexec"),
                           lint=args.lint, log=print, onnx_sha256=document["onnx_sha256"],
                           engine_format=args.engine_format)
    print_engine_result(result)
    return 0


def print_engine_result(result) -> None:
    rows = [[result.kind, result.path], ["builder", result.builder]]
    if result.manifest is not None:
        e = result.manifest.engine
        rows += [["TensorRT", e.tensorrt_version], ["GPU", f"{e.gpu_name} (SM {e.compute_capability})"],
                 ["precision", result.plan.precision + ("" if e.strongly_typed else " (weakly typed, DLA)")],
                 ["TF32", "on (--tf32)" if e.tf32 else "off: FP32 layers run in FP32"],
                 ["size", f"{os.path.getsize(result.path) / 2**20:.1f} MiB"]]
    for profile in result.plan.profiles:
        for r in profile:
            rows.append([f"profile {r.name}", f"{list(r.min)} .. {list(r.opt)} .. {list(r.max)}"])
    if result.plan.dla:
        rows.append(["DLA core", f"{result.plan.dla_core}" + (" (GPU fallback)" if result.plan.gpu_fallback else "")])
    rows += [["lint", f.line()] for f in result.findings]
    rows += [["note", note] for note in result.notes]
    print_table(f"{result.plan.model} -> TensorRT {result.kind}", ["", "value"], rows)

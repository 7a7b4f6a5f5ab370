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
    p.set_defaults(func=run)


def run(args) -> int:
    formats.require(args.fmt, for_export=True)
    from segdeploy.export.onnx import export_onnx

    result = export_onnx(args.model, args.output, checkpoint=args.checkpoint, height=args.height, width=args.width,
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
    print_table(f"{m['model']} -> {args.fmt}{' (dynamic)' if m['dynamic'] else ''}", ["", "value"], rows)
    return 0

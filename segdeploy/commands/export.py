"""segdeploy export: a registered model -> a verified, self-describing artifact (ONNX + manifest)."""
from __future__ import annotations

import os

from segdeploy.artifact.formats import FORMATS, require_exportable
from segdeploy.commands import common
from segdeploy.console import print_table

EXAMPLES = """examples:
  segdeploy export --model cgrseg_t                                  # artifacts/cgrseg_t_512x512.onnx
  segdeploy export --model segnext_t --size 512x1024 --dynamic        # batch 1-4, H and W 256-1024
  segdeploy export --model offseg_t --outputs mask --preprocess       # uint8 BGR image in, uint8 labels out
  segdeploy export --model cgrseg_t --checkpoint cgrseg_t_ade.pth --output cgrseg_t.onnx --force"""


def add_parser(subparsers) -> None:
    from segdeploy.export.trace import DEFAULT_OPSET, MAX_OPSET

    p = subparsers.add_parser("export", help="export a model to a verified, self-describing artifact",
                              description="Trace a registered model to ONNX (standard ops only), simplify it, verify "
                                          "it against PyTorch and write it with its manifest (embedded and as a "
                                          "JSON sidecar). Nothing is written unless every step succeeds.",
                              epilog=EXAMPLES, formatter_class=common.HelpFormatter)
    common.add_model(p)
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
    p.add_argument("--output", metavar="FILE",
                   help="artifact path (default artifacts/<model>_<H>x<W>[_dynamic][_mask][_uint8].onnx)")
    common.add_force(p, "the artifact and its sidecar")
    p.add_argument("--no-validate", dest="validate", action="store_false",
                   help="skip the comparison with PyTorch (the manifest then says so)")
    common.add_threads(p)
    p.set_defaults(func=run)


def run(args) -> int:
    require_exportable(args.fmt)
    from segdeploy.evaluation.validate import verify_graph
    from segdeploy.export.onnx import export_onnx

    height, width = common.parse_size(args.size)
    verify = (lambda graph, proto, shapes: verify_graph(graph, proto, shapes, threads=args.threads)) \
        if args.validate else None
    with common.status(f"exporting {args.model}") as say:
        result = export_onnx(args.model, args.output, checkpoint=args.checkpoint, height=height, width=width,
                             batch=args.batch, dynamic=args.dynamic, opset=args.opset, simplify=args.simplify,
                             outputs=args.outputs, preprocess=args.preprocess, force=args.force, verify=verify,
                             progress=say)
    print_summary(result.path, result.manifest, args.fmt)
    return 0


def print_summary(path: str, m, fmt: str) -> None:
    ex, v = m.export, m.validation
    rows = [
        ["artifact", f"{path} ({os.path.getsize(path) / 2**20:.1f} MiB)"],
        ["manifest", f"{os.path.splitext(path)[0]}.json (schema {m.schema_version}, also embedded)"],
        ["input", f"{m.input.name} {m.input.dtype} {m.input.layout} {m.input.shape}"],
        ["output", f"{m.output.name} {m.output.dtype} {m.output.shape} ({m.output.kind})"],
        ["profile", m.profile.describe()],
        ["precision", m.precision.mode + (f" ({m.precision.flavour})" if m.precision.flavour else "")],
        ["nodes", f"{ex.nodes_traced} traced -> {ex.nodes}" + (f" ({ex.simplifier})" if ex.simplifier else
                                                                 " (not simplified)")],
        ["opset / options", f"{ex.opset} / {ex.model_options or 'none'}"],
        ["weights", f"{m.weights.source} sha256 {m.weights.sha256[:12]}"],
        ["graph sha256", m.graph_sha256[:12]],
    ]
    if v.get("skipped"):
        rows.append(["verification", "skipped (--no-validate)"])
    else:
        numbers = [f"max abs err {v['max_abs_err']:.3g}, cosine {v['cosine']:.6f}"] \
            if v.get("max_abs_err") is not None else []  # mask outputs have labels only
        numbers.append(f"label agreement {v['mask_agreement']:.3%}")
        rows.append(["verification", f"{'passed' if v['passed'] else 'FAILED'} on {v['cases']} inputs "
                                     f"{v['shapes']}: " + ", ".join(numbers)])
    print_table(f"{m.model.name} -> {fmt}{' (dynamic)' if m.dynamic else ''}", ["", "value"], rows)

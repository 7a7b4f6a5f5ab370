"""segdeploy validate: compare an artifact with its PyTorch reference; exit 1 when it is out of tolerance."""
from __future__ import annotations

import json

from segdeploy.console import print_table
from segdeploy.errors import InputError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("validate", help="compare an exported artifact with the PyTorch reference")
    p.add_argument("artifact", help="an .onnx file written by segdeploy export (or any ONNX file, with --model)")
    p.add_argument("--model", help="model name (default: read from the artifact's metadata)")
    p.add_argument("--checkpoint", help="the checkpoint the artifact was exported from")
    p.add_argument("--images", help="folder of images to compare on too (preprocessed as the artifact says)")
    p.add_argument("--n", type=int, default=8, help="seeded random inputs (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", action="append", metavar="BxHxW",
                   help="input shape(s) for the seeded inputs (default: the traced shape, plus 2x384x640 for "
                        "dynamic artifacts); repeatable")
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--locate", action="store_true", help="where an output fails, name the first diverging node")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads")
    p.add_argument("--providers", help="ONNX Runtime execution providers, e.g. cuda,cpu (default cpu)")
    p.set_defaults(func=run)


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        b, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--shape must look like 1x512x512 (batch x height x width), not {text!r}") from None
    return b, h, w


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def run(args) -> int:
    from segdeploy.io import write_text_atomic
    from segdeploy.validate import validate_artifact

    shapes = [parse_shape(s) for s in args.shape] if args.shape else None
    report = validate_artifact(args.artifact, model=args.model, checkpoint=args.checkpoint, images=args.images,
                               n=args.n, seed=args.seed, shapes=shapes, locate=args.locate, threads=args.threads,
                               providers=args.providers)
    rows = [[f"{o.name} ({o.kind})", o.cases, _fmt(o.max_abs_err, ".3g"), _fmt(o.max_rel_err, ".3g"),
             _fmt(o.mean_abs_err, ".3g"), _fmt(o.cosine, ".6f"), _fmt(o.mask_agreement, ".3%"),
             _fmt(o.miou_vs_reference, ".4f"), "ok" if o.passed else "FAIL"] for o in report.outputs.values()]
    shapes_seen = sorted({tuple(c["input_shape"]) for c in report.cases})
    print_table(f"{report.model}: {report.artifact} vs PyTorch on {len(report.cases)} inputs "
                f"{[list(s) for s in shapes_seen]}",
                ["output", "cases", "max abs", "max rel", "mean abs", "cosine", "labels", "mIoU", "status"], rows)
    print("labels: pixel label agreement; mIoU: of the artifact's masks, taking the reference's as ground truth")
    print(f"tolerance: {report.summary()['tolerance']}")
    if report.graph_unchanged is False:
        print("note: the graph's SHA-256 differs from the one recorded at export: it was edited since")
    if report.locate is not None:
        located = report.locate
        print(f"locate: {located.get('message') or located.get('skipped')}"
              + (f"; max abs err {located['max_abs_err']:.3g} > {located['tolerance']:.3g}; weights "
                 f"{located['weights']} (compared {located['compared']} of {located['intermediates']} "
                 f"intermediates)" if located.get("found") and located.get("tolerance") is not None else ""))
    if args.json:
        write_text_atomic(args.json, json.dumps(report.as_dict(), indent=2) + "\n", force=True)
        print(f"wrote {args.json}")
    print("PASSED" if report.passed else f"FAILED: {report.failure_line()}")
    return 0 if report.passed else 1

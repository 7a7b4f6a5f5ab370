"""segdeploy validate: compare an artifact with its PyTorch reference; exit 1 when it is out of tolerance."""
from __future__ import annotations

from segdeploy.commands import common
from segdeploy.console import print_table
from segdeploy.errors import InputError
from segdeploy.evaluation.compare import required, shown

EXAMPLES = """examples:
  segdeploy validate artifacts/cgrseg_t_512x512.onnx
  segdeploy validate artifacts/segnext_t_512x512_dynamic.onnx --size 384x640 --size 1024 --batch 2
  segdeploy validate model.onnx --images photos/ --backend openvino --json report.json
  segdeploy validate foreign.onnx --model cgrseg_t --locate
  segdeploy validate artifacts/cgrseg_t_512x512_int8_cpu.onnx --checkpoint ck.pth --data data/   # + mIoU delta"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("validate", help="compare an artifact with its PyTorch reference",
                              description="Rebuild the PyTorch reference from the artifact's manifest and compare "
                                          "the two on seeded inputs and real images, with the tolerance of the "
                                          "artifact's precision. Exit 0: within tolerance; 1: out of tolerance; "
                                          "2: bad input.",
                              epilog=EXAMPLES, formatter_class=common.HelpFormatter)
    p.add_argument("artifact", help="an artifact segdeploy wrote (or any ONNX file, with --model)")
    common.add_model(p, required=False, help_text="model name (default: the artifact's manifest)")
    p.add_argument("--checkpoint", metavar="FILE", help="the checkpoint the artifact was exported from")
    common.add_backend(p, "backend that runs the artifact (default: ONNX Runtime for ONNX artifacts)")
    p.add_argument("--images", metavar="DIR", help="folder of images to compare on too (prepared as the manifest "
                                                   "says)")
    p.add_argument("--data", metavar="DIR",
                   help="held-out set: a labelled dataset folder (its validation split: mIoU of the artifact and of "
                        "PyTorch, and the delta, judged by the precision's tolerance) or a folder of images (label "
                        "agreement); refused when it shares images with the artifact's calibration")
    p.add_argument("--limit", type=common.positive_int, metavar="N", help="use the first N images of --data")
    p.add_argument("--n", type=int, default=8, help="seeded random inputs (default 8)")
    p.add_argument("--seed", type=common.int_range(0, 2**32 - 1), default=0, help="seed of the random inputs")
    common.add_size(p, default=None, repeat=True,
                    help_text="input size(s) for the seeded inputs; repeatable (default: the traced size, plus "
                              "384x640 at batch 2 for dynamic artifacts)")
    p.add_argument("--batch", type=common.positive_int, help="batch of the seeded inputs given with --size "
                                                             "(default 1)")
    common.add_json(p)
    common.add_force(p, "the --json report")
    p.add_argument("--locate", action="store_true", help="where an output fails, name the first diverging node")
    common.add_threads(p)
    p.add_argument("--providers", help="ONNX Runtime execution providers, e.g. cuda,cpu (default cpu)")
    p.set_defaults(func=run)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def run(args) -> int:
    from segdeploy.evaluation.validate import validate_artifact

    common.check_outputs(args.force, args.json, inputs=[args.artifact, args.checkpoint])
    sizes = [common.parse_size(s) for s in args.size] if args.size else None
    if args.batch and not sizes:
        raise InputError("--batch goes with --size")
    if args.limit and not args.data:
        raise InputError("--limit goes with --data")
    shapes = [(args.batch or 1, h, w) for h, w in sizes] if sizes else None
    with common.status(f"validating {args.artifact}") as say:
        report = validate_artifact(args.artifact, model=args.model, checkpoint=args.checkpoint, images=args.images,
                                   n=args.n, seed=args.seed, shapes=shapes, locate=args.locate,
                                   threads=args.threads, backend=args.backend, providers=args.providers,
                                   progress=say, data=args.data, limit=args.limit)

    rows = [[f"{o.name} ({o.kind})", o.cases, _fmt(o.max_abs_err, ".3g"), _fmt(o.max_rel_err, ".3g"),
             _fmt(o.mean_abs_err, ".3g"), _fmt(o.cosine, ".6f"), _fmt(o.mask_agreement, ".3%"),
             _fmt(o.miou_vs_reference, ".4f")] for o in report.outputs.values()]
    shapes_seen = sorted({tuple(c["input_shape"]) for c in report.cases})
    print_table(f"{report.model}: {report.artifact} on {report.candidate.get('backend')} vs PyTorch, "
                f"{len(report.cases)} inputs {[list(s) for s in shapes_seen]}",
                ["output", "cases", "max abs", "max rel", "mean abs", "cosine", "labels", "mIoU"], rows)
    print("over all inputs: max/mean abs error, max rel (max abs error / max |ref|), cosine (the worst input's), "
          "labels (pixel label agreement) and mIoU (of the artifact's masks, the reference's taken as ground truth)")
    if report.dataset is not None:
        d = report.dataset
        line = f"held-out set ({d['data']}): label agreement with PyTorch {d['agreement']:.3f}%"
        if "miou_delta" in d:
            line += f"; mIoU {d['miou']:.2f} vs PyTorch {d['miou_reference']:.2f} ({d['miou_delta']:+.2f} points)"
        print(line)
    checks = report.checks()
    print_table(f"tolerance ({report.tolerance.precision}): each criterion, the figure it is judged by",
                ["output", "criterion", "measured", "required", "status"],
                [[c["output"], c["criterion"], shown(c["value"], c["unit"], c["op"]), required(c),
                  "ok" if c["passed"] else ("FAIL" + (f" ({c['failed']} of {report.outputs[c['output']].cases})"
                                                      if c["failed"] else ""))] for c in checks])
    if report.graph_unchanged is False:
        print("note: the graph's SHA-256 differs from the one recorded at export: it was edited since")
    if report.locate is not None:
        located = report.locate
        print(f"locate: {located.get('message') or located.get('skipped')}"
              + (f"; max abs err {located['max_abs_err']:.3g} > {located['tolerance']:.3g}; weights "
                 f"{located['weights']} (compared {located['compared']} of {located['intermediates']} "
                 f"intermediates)" if located.get("found") and located.get("tolerance") is not None else ""))
    written = common.write_json(args.json, report.as_dict(), args.force)
    if written:
        print(f"wrote {written}")
    print("PASSED" if report.passed else f"FAILED: {report.failure_line()}")
    return 0 if report.passed else 1

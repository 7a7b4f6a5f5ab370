"""segdeploy eval: mIoU, mAcc, aAcc and per-class IoU of a model or an artifact on a labelled dataset."""
from __future__ import annotations

import math
import os

from segdeploy.artifact import formats
from segdeploy.commands import common
from segdeploy.console import ProgressBar, print_table
from segdeploy.datasets import open_dataset
from segdeploy.datasets.layouts import META_FILE
from segdeploy.errors import InputError
from segdeploy.export.cache import DEFAULT_CACHE_DIR
from segdeploy.files.atomic import write_text_atomic

EXAMPLE = """examples:
  segdeploy eval --model cgrseg_t --checkpoint cgrseg_t_synth16.pth --data data/synth16
  segdeploy eval --model cgrseg_t --checkpoint cgrseg_t_synth16.pth --data data/synth16 --backend openvino \\
      --reference cgrseg_t --json eval.json --md eval.md
  segdeploy eval artifacts/cgrseg_t_512x512_dynamic.onnx --data ADEChallengeData2016 --limit 200

Layouts (--layout auto detects them): ADE20K (images/validation/*.jpg + annotations/validation/*.png, read with
reduce_zero_label), Cityscapes (leftImg8bit/val/<city>/ + gtFine/val/<city>/*_gtFine_labelTrainIds.png) and pairs
(images/ + masks/ with the same stems). Metrics follow mmsegmentation: ignore index 255, whole-image inference at the
model's test resize, logits resized to the label's size before the argmax. Figures are percentages."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="mIoU of a model or artifact on a labelled dataset (any backend)",
                              description=__doc__, epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    p.add_argument("artifact", nargs="?", help="an artifact segdeploy exported (or use --model)")
    common.add_model(p, required=False, help_text="a registered model (recipe weights, or --checkpoint); with an "
                                                   "artifact that carries no manifest: how to prepare its images")
    common.add_checkpoint(p)
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder")
    p.add_argument("--layout", default="auto", help="auto (default), ade20k, cityscapes or pairs")
    p.add_argument("--split", help="split folder (default: validation for ADE20K, val for Cityscapes)")
    common.add_backend(p, "backend (default: the fastest that segdeploy bench recorded for the model on this CPU, "
                          "else the model backend for --model, ONNX Runtime for an ONNX artifact); artifact "
                          "backends run --model as a dynamic export from the export cache")
    p.add_argument("--reference", metavar="MODEL|ARTIFACT",
                   help="also evaluate this (a model name or an .onnx file) and report the mIoU delta and the "
                        "pixel agreement between the two")
    p.add_argument("--reference-backend", help="backend of --reference (default: torch for a model, onnxruntime for "
                                               "an artifact)")
    p.add_argument("--reference-checkpoint", help="weights for a --reference model (default: --checkpoint)")
    p.add_argument("--limit", type=common.positive_int, metavar="N", help="evaluate the first N images only")
    common.add_threads(p)
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help=f"the export cache (default {DEFAULT_CACHE_DIR})")
    common.add_json(p, "the full report (metrics, per-class, timing)")
    p.add_argument("--md", metavar="FILE", help="write a Markdown report here")
    common.add_force(p, "--json / --md")
    p.set_defaults(func=run)


def _is_artifact(text: str) -> bool:
    return formats.for_path(text) is not None or os.path.isfile(text)


class Progress:
    """The evaluation's progress on stderr (console.ProgressBar: a live bar on a terminal, timestamped lines in
    logs), with images/s and the running mIoU."""

    def __init__(self, total: int, label: str):
        self.bar = ProgressBar(label, total, "images")

    def __call__(self, done: int, total: int, rate: float, miou: float) -> None:
        self.bar.update(done, f"{rate:.1f} img/s, running mIoU {'-' if math.isnan(miou) else f'{miou:.2f}'}")

    def close(self) -> None:
        self.bar.close()


def _pct(value, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def summary_rows(report) -> list[list]:
    m = report.metrics
    rows = [[report.label, report.images, _pct(m.miou), _pct(m.macc), _pct(m.aacc), f"{report.images_per_s:.2f}",
             f"{report.infer_ms_mean:.1f}"]]
    ref = report.reference
    if ref is not None:
        rows.append([f"reference: {ref['model']}", report.images, _pct(ref["miou"]), _pct(ref["macc"]),
                     _pct(ref["aacc"]), "-", _pct(ref["infer_ms_mean"])])
    return rows


SUMMARY_COLUMNS = ["model", "images", "mIoU", "mAcc", "aAcc", "img/s", "infer ms"]


def markdown(report) -> str:
    lines = [f"# Evaluation: {report.label}", "", f"Dataset: {report.dataset}. Metrics in percent (mmseg "
             "semantics: ignore index 255, whole-image inference, logits resized to the label size).", "",
             "| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in summary_rows(report)]
    if report.reference is not None:
        ref = report.reference
        lines += ["", f"mIoU delta (model - reference): {_pct(ref['miou_delta'], sign=True)} points; pixel "
                      f"agreement with the reference: {_pct(ref['pixel_agreement'])}%"]
    lines += ["", "| class | IoU | Acc | labelled pixels |", "|---|---|---|---|"]
    for row in report.metrics.per_class(report.class_names):
        lines.append(f"| {row['name']} | {_pct(row['iou'])} | {_pct(row['acc'])} | {row['pixels']} |")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    from segdeploy.evaluation.eval import EvalRequest, class_mismatch, run_eval

    if args.artifact is None and args.model is None:
        raise InputError("nothing to evaluate: give an artifact or --model")
    if args.artifact is not None and args.checkpoint is not None:
        raise InputError("--checkpoint goes with --model; an artifact carries its own weights")
    whole = open_dataset(args.data, args.layout, args.split)
    dataset = whole.head(args.limit)
    if args.json and args.md and args.json != "-" and os.path.realpath(args.json) == os.path.realpath(args.md):
        raise InputError(f"--json and --md both name {args.md}: give each report its own file")
    # before minutes of work, not after; never onto an input: the model, its sidecar, a checkpoint, a dataset file
    inputs = [args.artifact, args.reference if args.reference and _is_artifact(args.reference) else None,
              args.checkpoint, args.reference_checkpoint,
              os.path.join(args.data, META_FILE),
              *(path for sample in whole.samples for path in (sample.image, sample.label))]
    common.check_outputs(args.force, args.json, args.md, inputs=inputs)
    is_model = args.artifact is None
    if is_model and args.checkpoint is None and dataset.num_classes is not None:
        from segdeploy import models

        classes = models.get_spec(args.model).num_classes  # the recipe weights': refused before any export
        if classes != dataset.num_classes:
            raise class_mismatch(f"{args.model} (recipe weights)", classes, dataset)
    request = EvalRequest(
        target=args.model if is_model else args.artifact, is_model=is_model, backend=args.backend,
        checkpoint=args.checkpoint, model_hint=args.model, threads=args.threads, cache_dir=args.cache_dir,
        reference=args.reference, reference_is_model=bool(args.reference) and not _is_artifact(args.reference),
        reference_backend=args.reference_backend, reference_checkpoint=args.reference_checkpoint)
    report = run_eval(request, dataset, status=common.status, progress=Progress, log=print)

    print_table(f"{dataset.describe()}", SUMMARY_COLUMNS, summary_rows(report))
    if is_model and args.checkpoint is None:
        print("note: no --checkpoint given; the deterministic recipe weights are untrained, so this mIoU checks the "
              "pipeline, not a model")
    if report.reference is not None:
        ref = report.reference
        print(f"mIoU delta (model - reference): {_pct(ref['miou_delta'], sign=True)} points; pixel agreement: "
              f"{_pct(ref['pixel_agreement'])}%")
    per_class = report.metrics.per_class(report.class_names)
    if len(per_class) > 30:
        shown = sorted((r for r in per_class if r["iou"] is not None), key=lambda r: r["iou"])[:10]
        title = "the 10 classes with the lowest IoU"
    else:
        shown, title = per_class, "per class"
    print_table(title, ["class", "IoU", "Acc", "pixels"],
                [[r["name"], _pct(r["iou"]), _pct(r["acc"]), r["pixels"]] for r in shown])
    written = common.write_json(args.json, report.as_dict(), args.force)
    if written:
        print(f"wrote {written}")
    if args.md:
        write_text_atomic(args.md, markdown(report), force=args.force)
        print(f"wrote {args.md}")
    return 0

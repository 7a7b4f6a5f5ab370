"""The accuracy fixtures' validation mIoU on PyTorch, ONNX Runtime FP32 and OpenVINO FP32, with agreement and img/s.

For each fixture (made with ``segdeploy fixtures`` / ``make fixtures``; cached, so this only evaluates): PyTorch
eager with the fixture's checkpoint is the reference; each ONNX backend runs the checkpoint's dynamic FP32 export
(validated against PyTorch when it is made) over the same validation images, and reports its mIoU, the delta to
PyTorch (FP32 must be within 0.1 points) and the pixel agreement of the two masks. img/s is the model alone
(preprocessing, inference, resize and argmax; one image at a time) with the stated thread count. A benchmark, not a
test; numbers depend on the machine and its load: each run writes a new results file (benchmarks/record.py:
results/eval_fixtures-<date>-<host>-<run id>.json and .md) with the command, the commit, the machine and every
image's inference time.

    python benchmarks/eval_fixtures.py                                   # every fixture
    python benchmarks/eval_fixtures.py --fixtures cgrseg_t_lowmargin --backends openvino
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import record  # noqa: E402
from segdeploy.datasets import open_dataset  # noqa: E402
from segdeploy.evaluation.eval import evaluate, evaluate_checkpoint, model_predictor, warm_up  # noqa: E402
from segdeploy.hostinfo import machine_info  # noqa: E402
from segdeploy.runtimes.registry import backend_status  # noqa: E402
from segdeploy.training.fixtures import default_cache_dir, make_fixture, resolve  # noqa: E402

FP32_MIOU_TOLERANCE = 0.1  # points


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fixtures", default="all", help="all, or fixture / model names (comma-separated)")
    p.add_argument("--backends", default="onnxruntime,openvino", help="ONNX backends compared with PyTorch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", help="fixture cache (default: segdeploy's)")
    p.add_argument("--out", default=record.RESULTS, help="folder of the results files (default: benchmarks/results)")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def row_of(report, backend: str, reference=None) -> dict:
    row = {"backend": backend, "miou": report.metrics.miou, "macc": report.metrics.macc, "aacc": report.metrics.aacc,
           "images": report.images, "images_per_s": report.images_per_s, "infer_ms_mean": report.infer_ms_mean}
    if reference is not None:
        row["miou_delta"] = report.reference["miou_delta"]
        row["pixel_agreement"] = report.reference["pixel_agreement"]
        row["within_tolerance"] = abs(row["miou_delta"]) <= FP32_MIOU_TOLERANCE
    return row


class Recorded:
    """PyTorch's masks, recorded on its own pass and replayed as the reference of the ONNX backends' passes (the same
    images in the same order), so PyTorch runs once per fixture."""

    def __init__(self, predictor):
        self.predictor, self.masks, self.replay = predictor, [], None
        self.label, self.num_classes, self.infer_ms = predictor.label, predictor.num_classes, predictor.infer_ms
        self.class_names, self.runner = predictor.class_names, predictor.runner

    def predict(self, image, size):
        if self.replay is None:
            mask = self.predictor.predict(image, size)
            self.masks.append(mask.astype(np.uint8))
            return mask
        return next(self.replay).astype(np.int64)

    def rewind(self) -> None:
        self.replay = iter(self.masks)


def evaluate_fixture(fixture, backends, threads: int) -> list[dict]:
    dataset = open_dataset(fixture.dataset_dir)
    torch_predictor = model_predictor(fixture.model, checkpoint=fixture.checkpoint, backend="torch", threads=threads,
                                      log=log)
    rows = []
    try:
        log(f"{fixture.name}: torch")
        warm_up([torch_predictor], dataset)  # before recording: the recording must hold the dataset's images only
        reference = Recorded(torch_predictor)
        rows.append(row_of(evaluate(reference, dataset, warmup=False), "torch"))
        rows[-1]["infer_ms_samples"] = [round(ms, 4) for ms in torch_predictor.infer_ms]
        for backend in backends:
            status = backend_status(backend)
            if not status.available:
                rows.append({"backend": backend, "skipped": status.reason})
                continue
            log(f"{fixture.name}: {backend} (FP32, dynamic export) against torch")
            predictor = model_predictor(fixture.model, checkpoint=fixture.checkpoint, backend=backend,
                                        threads=threads, log=log)
            try:
                reference.rewind()
                # the recorded reference needs no warm-up: its warm-up call would be replayed as the first image
                warm_up([predictor], dataset)
                report = evaluate(predictor, dataset, reference=reference, warmup=False)
                samples = [round(ms, 4) for ms in predictor.infer_ms]
            finally:
                predictor.close()
            rows.append(dict(row_of(report, backend, reference=True), infer_ms_samples=samples))
    finally:
        torch_predictor.close()
    return rows


def markdown(results: list[dict], machine: dict, threads: int, started: str) -> str:
    cpu = machine["cpu"]
    lines = [f"# Accuracy fixtures: validation mIoU per backend ({started[:10]})", "",
             f"Machine: {cpu['model']}, {cpu['usable_cores']} usable cores, load average at the start "
             f"{machine['load_average']}; torch {machine['versions']['torch']}, onnxruntime "
             f"{machine['versions']['onnxruntime']}, openvino {machine['versions']['openvino']}. Inference with "
             f"{threads} threads, one image at a time (512x512 synthetic images, the test resize keeps them at "
             "512x512). ONNX backends run the checkpoint's dynamic FP32 export; the delta is their mIoU minus "
             f"PyTorch's (FP32 must be within {FP32_MIOU_TOLERANCE} points), agreement is the share of pixels "
             "whose class equals PyTorch's. Percentages throughout.", "",
             "| fixture | classes | train s | iterations | backend | mIoU | mAcc | aAcc | delta | agreement | img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        record = result["record"]
        for row in result["rows"]:
            if "skipped" in row:
                lines.append(f"| {result['name']} | {result['num_classes']} | | | {row['backend']} | skipped: "
                             f"{row['skipped']} | | | | | |")
                continue
            delta = f"{row['miou_delta']:+.3f}" + ("" if row["within_tolerance"] else " (over 0.1)") \
                if "miou_delta" in row else "-"
            agreement = f"{row['pixel_agreement']:.3f}" if "pixel_agreement" in row else "-"
            lines.append(f"| {result['name']} | {result['num_classes']} | {record.get('train_seconds', '-')} | "
                         f"{record['train']['iterations']} | {row['backend']} | {row['miou']:.2f} | {row['macc']:.2f} "
                         f"| {row['aacc']:.2f} | {delta} | {agreement} | {row['images_per_s']:.2f} |")
    lines += ["", "Training: each fixture trains from PyTorch's default initialisation on the synthetic training split "
              "(`segdeploy fixtures`; AdamW, poly schedule, batch 8, 2 threads, seeded); 'train s' is its wall time "
              "on the machine that made it, which was shared with other jobs, so it is an upper bound, not a "
              "speed figure.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    run = record.start("eval_fixtures", args, out_dir=args.out, argv=None if argv is None else [__file__, *argv])
    started = datetime.datetime.now().isoformat(timespec="seconds")
    machine = machine_info()
    cache_dir = args.cache_dir or default_cache_dir()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results = []
    for recipe in resolve(args.fixtures):
        start = time.perf_counter()
        fixture = make_fixture(recipe, evaluate_checkpoint, cache_dir=cache_dir, log=log)
        rows = evaluate_fixture(fixture, backends, args.threads)
        results.append({"name": fixture.name, "model": fixture.model, "num_classes": fixture.num_classes,
                        "checkpoint_key": fixture.record["key"], "record": fixture.record, "rows": rows,
                        "seconds": round(time.perf_counter() - start, 1)})
    text = markdown(results, machine, args.threads, started)
    print(text)
    for path in run.write({"started": started, "threads": args.threads, "results": results}, text):
        log(f"wrote {path}")
    failed = [r["name"] for r in results for row in r["rows"] if row.get("within_tolerance") is False]
    if failed:
        log(f"FP32 mIoU differs from PyTorch's by more than {FP32_MIOU_TOLERANCE} points: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

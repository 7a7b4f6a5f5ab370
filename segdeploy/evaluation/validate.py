"""Does an artifact compute what the PyTorch model computes?

``validate_artifact`` rebuilds the PyTorch reference from the artifact's manifest (evaluation/reference.py), runs
both on seeded inputs and real images (evaluation/feeds.py) through the runner contract, and compares them with
the tolerance of the artifact's precision (evaluation/compare.py). The candidate is built through the runtime
registry, so any runnable artifact can be validated on any backend that consumes it. ``verify_graph`` is the same
check on an in-memory graph, handed to export as its verifier.
"""
from __future__ import annotations

import os
import types
from collections.abc import Sequence

from segdeploy import preprocess
from segdeploy.artifact import manifest as mf
from segdeploy.artifact.formats import format_of
from segdeploy.artifact.onnx_file import graph_edited, load_onnx
from segdeploy.artifact.reader import LoadedArtifact, read_manifest
from segdeploy.errors import InputError
from segdeploy.evaluation.accuracy import agreement_percent, held_out, miou, predict_masks
from segdeploy.evaluation.compare import ValidationReport, compare_runners, confusion
from segdeploy.evaluation.feeds import image_feed, list_images, manifest_image_feed, seeded_feed
from segdeploy.evaluation.reference import build_reference, foreign_reference
from segdeploy.evaluation.tolerances import tolerance_for
from segdeploy.export.onnx import validation_shapes
from segdeploy.export.precision.calibration_images import check_disjoint
from segdeploy.models import footprint
from segdeploy.runtimes.onnxruntime import OnnxRuntimeRunner
from segdeploy.runtimes.registry import backends_for, create_runner, get_backend
from segdeploy.runtimes.torch import TorchRunner

MAX_SEEDED_INPUTS = 100_000


def verify_graph(graph, model_proto, shapes, *, seed: int = 0, threads: int | None = None,
                 precision: str = "fp32", images=None) -> ValidationReport:
    """Compare an in-memory ONNX graph with its eager deploy graph on one seeded input per shape, and on ``images``
    at the first shape (export's verifier), with the tolerance of ``precision``."""
    candidate = OnnxRuntimeRunner(model_proto, threads=threads)
    info = candidate.inputs()[0]
    feeds = [(f"seeded:{seed + i}", seeded_feed(info, shape, seed + i)) for i, shape in enumerate(shapes)]
    if images:
        pre = types.SimpleNamespace(mean=graph.spec.mean, std=graph.spec.std, channel_order=graph.spec.channel_order,
                                    size_multiple=graph.spec.size_multiple)
        batch, height, width = shapes[0]
        feeds += [(path, image_feed(preprocess.read_image(path), info, pre, (height, width), batch))
                  for path in images]
    return compare_runners(TorchRunner(graph), candidate, feeds, num_classes=graph.num_classes,
                           align_corners=graph.spec.align_corners, tolerance=tolerance_for(precision))


def default_shapes(manifest: mf.Manifest) -> list[tuple[int, int, int]]:
    return validation_shapes(*manifest.profile.opt, manifest.dynamic)


def validate_artifact(artifact: str | os.PathLike, *, model: str | None = None, checkpoint=None, images=None,
                      n: int = 8, seed: int = 0, shapes=None, locate: bool = False, threads: int | None = None,
                      backend: str | None = None, providers=None, progress=None, data=None,
                      limit: int | None = None) -> ValidationReport:
    """Compare an artifact with its PyTorch reference on ``n`` seeded inputs (and the images in ``images``); with
    ``data`` (a labelled dataset or a folder of images), also on that held-out set: mIoU of both and its delta, and
    label agreement."""
    say = progress or (lambda step, fraction=0.0: None)
    path = os.fspath(artifact)
    if not 0 <= n <= MAX_SEEDED_INPUTS:
        raise InputError(f"--n takes 0 to {MAX_SEEDED_INPUTS:,} seeded inputs, not {n}")
    kind = format_of(path).kind
    backend = backend or backends_for(kind)[0]
    if get_backend(backend).consumes != kind:
        raise InputError(f"backend {backend} does not run {kind} artifacts; use one of "
                         f"{', '.join(backends_for(kind))}")
    model_proto = load_onnx(path) if kind == "onnx" else None
    manifest = read_manifest(path, model_proto, required=model is None)
    # read once: the runner takes this manifest (an edited graph is measured here, not refused as it is on use)
    opened = LoadedArtifact(path, kind, manifest) if manifest is not None else path
    say("building the PyTorch reference")
    if manifest is None:  # a foreign ONNX file: describe it from the model and the graph itself
        graph, manifest = foreign_reference(model_proto, model, checkpoint)
    else:
        graph = build_reference(manifest, model, checkpoint)
    image_paths = list_images(images) if images else []
    shapes = [tuple(s) for s in shapes] if shapes else default_shapes(manifest)
    for shape in shapes:
        problem = manifest.profile.check(*shape)
        if problem:
            raise InputError(f"shape {'x'.join(map(str, shape))} is outside the artifact's profile ({problem}; it "
                             f"takes {manifest.profile.describe()})")
    largest = max(shapes, key=lambda s: s[0] * s[1] * s[2])
    need = footprint.forward_bytes(graph.spec.name, *largest)
    # the reference and the artifact run side by side
    footprint.check_fits(None if need is None else 2 * need, f"validating at {'x'.join(map(str, largest))}",
                         "pass a smaller --size or --batch")
    say(f"loading the artifact on {backend}")
    options = {"providers": providers} if providers and get_backend(backend).execution_providers else {}
    candidate = create_runner(backend, artifact=opened, threads=threads, **options)
    info = candidate.inputs()[0]
    if not n and not image_paths:
        raise InputError("nothing to validate: --n 0 and no --images")
    feeds = Feeds(n, image_paths, lambda i: seeded_feed(info, shapes[i % len(shapes)], seed + i),
                  lambda p: manifest_image_feed(preprocess.read_image(p), info, manifest), seed)
    held = None
    if data is not None:  # refuse a calibration overlap before minutes of comparisons

        held = held_out(data, limit)
        calibration = manifest.precision.details.get("calibration")
        digests = calibration.get("image_digests") if isinstance(calibration, dict) else None
        if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
            digests = None  # what a manifest records is data, not code: anything but a list of digests is none
        if digests:
            check_disjoint(digests, held.image_paths, "--data")
    reference = TorchRunner(graph)
    with candidate:
        report = compare_runners(reference, candidate, feeds, num_classes=graph.num_classes,
                                 align_corners=graph.spec.align_corners,
                                 tolerance=tolerance_for(manifest.precision.mode, manifest.precision.flavour),
                                 progress=progress)
        if held is not None:
            report.dataset = held_out_comparison(reference, candidate, held, manifest, graph.num_classes,
                                                 graph.spec.align_corners, report, say)
    report.artifact, report.model = path, graph.spec.name
    if model_proto is not None:
        report.graph_unchanged = not graph_edited(model_proto, manifest)
    if locate:
        report.locate = _locate(report, graph, manifest, model_proto, feeds, threads, say)
    return report


class Feeds(Sequence):
    """The inputs of a validation, made when they are compared, not all up front: ``--n 10000`` at 1024x1024 would
    otherwise hold 120 GB of inputs."""

    def __init__(self, n: int, image_paths: list[str], seeded, from_image, seed: int):
        self.n, self.image_paths, self.seeded, self.from_image, self.seed = n, image_paths, seeded, from_image, seed

    def __len__(self) -> int:
        return self.n + len(self.image_paths)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(index)
        if index < self.n:
            return f"seeded:{self.seed + index}", self.seeded(index)
        path = self.image_paths[index - self.n]
        return path, self.from_image(path)


def held_out_comparison(reference, candidate, held, manifest, num_classes: int, align_corners: bool,
                        report: ValidationReport, say) -> dict:
    """The artifact and its PyTorch reference on a held-out set: label agreement, and mIoU of both with the
    delta when the set is labelled; ``passed`` by the precision's tolerance. The held-out masks also count as real
    images for the output's agreement (what INT8's tolerance judges)."""
    tolerance = report.tolerance

    info = candidate.inputs()[0]
    name = candidate.outputs()[0].name

    def feed(image):
        return manifest_image_feed(image, info, manifest)

    expected = predict_masks(lambda f: reference.infer(f)[name], held, feed, align_corners, say,
                             "PyTorch on the held-out images")
    actual = predict_masks(lambda f: candidate.infer(f)[name], held, feed, align_corners, say,
                           "the artifact on the held-out images")
    result = {"data": held.source, "images": len(held.image_paths),
              "agreement": round(agreement_percent(actual, expected), 4)}
    output = report.outputs.get(name)
    if output is not None:
        for e, a in zip(expected, actual):
            output.add_image(confusion(e, a, num_classes))
    passed = result["agreement"] >= 100 * tolerance.min_agreement
    if held.labelled:
        result["miou_reference"] = round(miou(held, expected, num_classes), 3)
        result["miou"] = round(miou(held, actual, num_classes), 3)
        result["miou_delta"] = round(result["miou"] - result["miou_reference"], 3)
        if tolerance.max_miou_drop is not None:
            passed = passed and -result["miou_delta"] <= tolerance.max_miou_drop
    result["passed"] = passed
    return result


def _locate(report: ValidationReport, graph, manifest, model_proto, feeds, threads, say) -> dict:
    if report.passed:
        return {"skipped": "every output is within tolerance; nothing to locate"}
    if model_proto is None:
        return {"skipped": "locate compares ONNX intermediates; this artifact is not an ONNX graph"}
    from segdeploy.evaluation.locate import locate_divergence, reference_onnx

    failing = next(i for i, case in enumerate(report.cases) if not case["passed"])
    say("re-exporting the reference graph to locate the divergence")
    located = locate_divergence(model_proto, reference_onnx(graph, manifest), feeds[failing][1], threads=threads)
    located["case"] = feeds[failing][0]
    return located

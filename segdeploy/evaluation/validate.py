"""Does an artifact compute what the PyTorch model computes?

``validate_artifact`` rebuilds the PyTorch reference from the artifact's manifest (evaluation/reference.py), runs
both on seeded inputs and real images (evaluation/feeds.py) through the runner contract, and compares them with
the tolerance of the artifact's precision (evaluation/compare.py). The candidate is built through the runtime
registry, so any runnable artifact can be validated on any backend that consumes it. ``verify_graph`` is the same
check on an in-memory graph, handed to export as its verifier.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from segdeploy import preprocess
from segdeploy.artifact import manifest as mf
from segdeploy.artifact.formats import format_of
from segdeploy.artifact.onnx_file import graph_edited, load_onnx
from segdeploy.artifact.reader import read_manifest
from segdeploy.errors import InputError
from segdeploy.evaluation.compare import ValidationReport, compare_runners, tolerance_for
from segdeploy.evaluation.feeds import list_images, manifest_image_feed, seeded_feed
from segdeploy.evaluation.reference import build_reference, foreign_reference
from segdeploy.export.onnx import validation_shapes
from segdeploy.models import footprint
from segdeploy.runtimes.onnxruntime import OnnxRuntimeRunner
from segdeploy.runtimes.registry import backends_for, create_runner, get_backend
from segdeploy.runtimes.torch import TorchRunner

MAX_SEEDED_INPUTS = 100_000


def verify_graph(graph, model_proto, shapes, *, seed: int = 0, threads: int | None = None,
                 precision: str = "fp32") -> ValidationReport:
    """Compare an in-memory ONNX graph with its eager deploy graph on one seeded input per shape (export's
    verifier)."""
    candidate = OnnxRuntimeRunner(model_proto, threads=threads)
    info = candidate.inputs()[0]
    feeds = [(f"seeded:{seed + i}", seeded_feed(info, shape, seed + i)) for i, shape in enumerate(shapes)]
    return compare_runners(TorchRunner(graph), candidate, feeds, num_classes=graph.num_classes,
                           align_corners=graph.spec.align_corners, tolerance=tolerance_for(precision))


def default_shapes(manifest: mf.Manifest) -> list[tuple[int, int, int]]:
    return validation_shapes(*manifest.profile.opt, manifest.dynamic)


def validate_artifact(artifact: str | os.PathLike, *, model: str | None = None, checkpoint=None, images=None,
                      n: int = 8, seed: int = 0, shapes=None, locate: bool = False, threads: int | None = None,
                      backend: str | None = None, providers=None, progress=None) -> ValidationReport:
    """Compare an artifact with its PyTorch reference on ``n`` seeded inputs (and the images in ``images``)."""
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
    options = {"providers": providers} if providers and get_backend(backend).name == "onnxruntime" else {}
    candidate = create_runner(backend, artifact=path, threads=threads, **options)
    info = candidate.inputs()[0]
    if not n and not image_paths:
        raise InputError("nothing to validate: --n 0 and no --images")
    feeds = Feeds(n, image_paths, lambda i: seeded_feed(info, shapes[i % len(shapes)], seed + i),
                  lambda p: manifest_image_feed(preprocess.read_image(p), info, manifest), seed)
    with candidate:
        report = compare_runners(TorchRunner(graph), candidate, feeds, num_classes=graph.num_classes,
                                 align_corners=graph.spec.align_corners,
                                 tolerance=tolerance_for(manifest.precision.mode), progress=progress)
    report.artifact, report.model = path, graph.spec.name
    if model_proto is not None and manifest.tool_versions.get("segdeploy"):
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

"""Evaluate a model or an artifact on a labelled dataset, on any backend, written once against the runner contract.

mmseg's test protocol, whole-image inference: each image goes through a Segmenter (evaluation/segment.py: the test
resize policy, or a static artifact's own size, or the policy clamped to a dynamic artifact's profile; the manifest's
preprocessing), and its logits are resized bilinearly to the label's size before the argmax (mmseg resizes to the
network input, then to the original size; one resize straight to the original differs from that on a few boundary
pixels). Mask-output artifacts are resized with nearest neighbour. Metrics: segdeploy.evaluation.metrics (ignore
index 255, ADE20K's reduce_zero_label).

Memory stays bounded: one image's logits at a time, reduced to its mask and then to a confusion matrix.

What runs (a :class:`Predictor`): a registered model on PyTorch, the same model exported to a dynamic ONNX graph for
ONNX Runtime or OpenVINO (from the shared export cache, segdeploy.export.cache), or an existing artifact, which
carries its own preprocessing in its manifest.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from segdeploy import backends
from segdeploy.artifact.formats import format_of
from segdeploy.artifact.reader import read_manifest
from segdeploy.datasets import Dataset, open_dataset
from segdeploy.errors import CheckpointError, InputError, SegdeployError
from segdeploy.evaluation import validate
from segdeploy.evaluation.metrics import ConfusionAccumulator, SegMetrics, confusion_matrix, finite_or_none
from segdeploy.evaluation.segment import Segmenter, open_segmenter, precision_label
from segdeploy.export.cache import DEFAULT_CACHE_DIR
from segdeploy.runtimes import fastest
from segdeploy.runtimes.registry import backends_for, get_backend

# ----------------------------------------------------------------------------------------------------------------
# What runs


@dataclass
class Predictor:
    """A segmenter, named for reports, with the runner's inference time per image."""
    segmenter: Segmenter
    label: str
    infer_ms: list[float] = field(default_factory=list)

    @property
    def runner(self):
        return self.segmenter.runner

    @property
    def num_classes(self) -> int:
        return self.segmenter.num_classes

    @property
    def class_names(self) -> tuple:
        return tuple(self.segmenter.class_names)

    def predict(self, image_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(H, W) int64 class mask at ``size`` (the label's, which the dataset reader checked is the image's)."""
        import cv2

        result = self.segmenter(image_bgr)
        self.infer_ms.append(result.latency_ms)
        labels = result.labels
        if labels.shape != tuple(size):
            labels = cv2.resize(labels.astype(np.int32), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        return labels.astype(np.int64)

    def close(self) -> None:
        self.segmenter.close()


def model_predictor(model: str, *, checkpoint=None, backend: str | None = None, threads: int | None = None,
                    cache_dir: str | None = None, log: Callable[[str], None] | None = None) -> Predictor:
    """A registered model (recipe weights, or ``checkpoint``) on ``backend`` (default: the model backend); artifact
    backends run a dynamic export from the shared export cache."""
    reason = None
    if backend is None:  # the model backend, unless bench measured a faster one for this model on this CPU
        choice = fastest.choose(model, "fp32", ("model", "onnx"), threads, default=backends_for("model")[0])
        backend, reason = choice.backend, choice.reason
    if get_backend(backend).consumes not in ("model", "onnx"):
        usable = backends_for("model") + backends_for("onnx")
        raise InputError(f"--backend must be one of {', '.join(usable)} for a model, not {backend!r}")
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise CheckpointError(f"checkpoint not found: {checkpoint}")

    segmenter = open_segmenter(model=model, checkpoint=checkpoint, backend=backend, threads=threads,
                               cache_dir=cache_dir or DEFAULT_CACHE_DIR, verify=validate.verify_graph, progress=log)
    segmenter.backend_reason = reason
    return Predictor(segmenter, segmenter.description)


def artifact_predictor(path, *, backend: str | None = None, threads: int | None = None, model: str | None = None,
                       label: str | None = None) -> Predictor:
    """An artifact on ``backend`` (default: the first backend that runs its kind), prepared as its manifest says
    (a foreign ONNX file without one needs ``model`` for the preprocessing)."""
    path = os.fspath(path)
    kind = format_of(path).kind
    reason = None
    if backend is None:  # the first backend of its kind, unless bench measured a faster one for it on this CPU

        try:
            found = read_manifest(path, required=False) if kind == "onnx" and os.path.isfile(path) else None
        except SegdeployError:  # a broken artifact: opening it below says what is wrong, in its words
            found = None
        choice = fastest.choose(found.model.name if found else model,
                                precision_label(found.precision) if found else "fp32", (kind,), threads,
                                default=backends_for(kind)[0])
        backend, reason = choice.backend, choice.reason
    segmenter = open_segmenter(artifact=path, backend=backend, threads=threads, model_hint=model)
    segmenter.backend_reason = reason
    return Predictor(segmenter, label or segmenter.description)


# ----------------------------------------------------------------------------------------------------------------
# The evaluation loop


@dataclass
class EvalReport:
    label: str
    dataset: str
    images: int
    metrics: SegMetrics
    class_names: tuple
    seconds: float  # the whole loop: reading files, the model, the reference, the metrics
    predict_seconds: float  # the model alone: preprocessing, inference, resizing and argmax
    infer_ms_mean: float  # the runner's own inference time per image
    runner: dict = field(default_factory=dict)
    reference: dict | None = None

    @property
    def images_per_s(self) -> float:
        """Images per second of the model alone (preprocessing to mask), not counting the reference or file reads."""
        return self.images / self.predict_seconds if self.predict_seconds > 0 else float("nan")

    def as_dict(self) -> dict:
        out = {"model": self.label, "dataset": self.dataset, "images": self.images,
               **self.metrics.as_dict(self.class_names), "images_per_s": self.images_per_s,
               "infer_ms_mean": self.infer_ms_mean, "seconds": self.seconds, "predict_seconds": self.predict_seconds,
               "runner": self.runner,
               "reference": self.reference, "units": "miou, macc, aacc, per-class iou/acc in percent"}
        return out


def check_classes(predictor: Predictor, dataset: Dataset) -> int:
    """The class count both sides agree on (a 150-class model cannot be scored on a 16-class dataset)."""
    if dataset.num_classes is not None and dataset.num_classes != predictor.num_classes:
        raise class_mismatch(predictor.label, predictor.num_classes, dataset)
    return predictor.num_classes


def class_mismatch(label: str, model_classes: int, dataset: Dataset) -> InputError:
    """A model that predicts other classes than the dataset labels cannot be scored on it: say where to get one
    that does."""
    where = "dataset.json" if dataset.meta else f"the {dataset.layout} layout"
    hint = "evaluate weights trained on these classes: --checkpoint FILE (or an artifact exported from it)"
    if model_classes > dataset.num_classes:
        hint += ("; `segdeploy fixtures --quick` trains cgrseg_t on a synthetic 8-class dataset in a couple of "
                 "minutes and prints the commands that export and evaluate it, and `segdeploy fixtures` trains "
                 "every T variant on 16 classes")
    return InputError(f"{label} predicts {model_classes} classes but the dataset has {dataset.num_classes} "
                      f"({where}); {hint}")


def warm_up(predictors, dataset: Dataset) -> None:
    """One untimed, unscored prediction on the first image, so that one-off costs (OpenVINO compiles a model per
    input shape, allocators grow) are not charged to the speed figures."""
    image = dataset.read_image(dataset.samples[0])
    for predictor in predictors:
        predictor.predict(image, image.shape[:2])
        predictor.infer_ms.clear()


def evaluate(predictor: Predictor, dataset: Dataset, *, reference: Predictor | None = None,
             progress: Callable[[int, int, float, float], None] | None = None, warmup: bool = True) -> EvalReport:
    """Score ``predictor`` on every sample of ``dataset`` (and ``reference`` on the same images, if given).

    ``progress(done, total, images_per_s, running_miou)`` is called after each image.
    """
    num_classes = check_classes(predictor, dataset)
    if reference is not None and reference.num_classes != num_classes:
        raise InputError(f"the reference {reference.label} predicts {reference.num_classes} classes, "
                         f"{predictor.label} {num_classes}")
    scores = ConfusionAccumulator(num_classes, dataset.ignore_index)
    ref_scores = ConfusionAccumulator(num_classes, dataset.ignore_index) if reference is not None else None
    between = np.zeros((num_classes, num_classes), np.int64)  # candidate vs reference, every pixel
    if warmup:
        warm_up([predictor] + ([reference] if reference is not None else []), dataset)
    start = time.perf_counter()
    predict_seconds = 0.0
    total = len(dataset)
    for done, sample in enumerate(dataset.samples, 1):
        image = dataset.read_image(sample)
        label = dataset.read_label(sample, num_classes, image_shape=image.shape)
        tick = time.perf_counter()
        pred = predictor.predict(image, label.shape)
        predict_seconds += time.perf_counter() - tick
        scores.update(label, pred)
        if reference is not None:
            ref_pred = reference.predict(image, label.shape)
            ref_scores.update(label, ref_pred)
            between += confusion_matrix(ref_pred, pred, num_classes, ignore_index=None)
        if progress is not None:
            elapsed = time.perf_counter() - start
            progress(done, total, done / elapsed if elapsed > 0 else 0.0, scores.metrics().miou)
    seconds = time.perf_counter() - start
    metrics = scores.metrics()
    ref = None
    if reference is not None:
        ref_metrics = ref_scores.metrics()
        ref = {"model": reference.label, "miou": finite_or_none(ref_metrics.miou),
               "macc": finite_or_none(ref_metrics.macc), "aacc": finite_or_none(ref_metrics.aacc),
               "miou_delta": finite_or_none(metrics.miou - ref_metrics.miou),
               "pixel_agreement": float(np.trace(between) / between.sum() * 100) if between.sum() else None,
               "infer_ms_mean": float(np.mean(reference.infer_ms)) if reference.infer_ms else None}
    names = predictor.class_names or tuple(str(i) for i in range(num_classes))
    if dataset.class_names is not None:
        names = dataset.class_names
    describe = predictor.runner.describe()
    return EvalReport(predictor.label, dataset.describe(), total, metrics, tuple(names), seconds, predict_seconds,
                      float(np.mean(predictor.infer_ms)) if predictor.infer_ms else float("nan"), describe, ref)


@dataclass(frozen=True)
class EvalRequest:
    """What `segdeploy eval` is asked to score: a registered model (exported first for an ONNX backend) or an
    artifact, and optionally a reference scored on the same images."""
    target: str  # a registered model's name, or an artifact's path
    is_model: bool
    backend: str | None = None  # None: the recorded fastest, else the default for the target
    checkpoint: str | None = None  # a model's weights
    model_hint: str | None = None  # an artifact's model, when its manifest does not say
    threads: int | None = None
    cache_dir: str = DEFAULT_CACHE_DIR
    reference: str | None = None  # a model or an artifact
    reference_is_model: bool = False
    reference_backend: str | None = None  # None: PyTorch for a model, ONNX Runtime for an artifact
    reference_checkpoint: str | None = None  # None: the target's checkpoint


@contextlib.contextmanager
def _quiet(message: str):
    yield lambda *_: None


def run_eval(request: EvalRequest, dataset: Dataset, *, status=_quiet, progress=None, log=None) -> EvalReport:
    """Load what ``request`` names, score it (and its reference) on ``dataset`` and close them. ``status(message)``:
    a context manager for a slow step, yielding a callback for its text; ``progress(total, label)``: the per-image
    callback of :func:`evaluate`, with ``close()``; ``log(line)``: what is worth telling (a backend's fallback)."""
    with status(f"loading {request.target}") as say:  # a model on an ONNX backend is exported first (a minute)
        predictor = build_predictor(request.target, is_model=request.is_model, backend=request.backend,
                                    checkpoint=request.checkpoint, threads=request.threads,
                                    cache_dir=request.cache_dir, model_hint=request.model_hint, log=say)
    if predictor.segmenter.backend_reason and log is not None:
        log(f"backend {predictor.segmenter.backend_reason}")
    reference = None
    try:
        if request.reference:
            ref_is_model = request.reference_is_model
            # the reference stays on its documented backend, whatever the recorded fastest one is
            with status(f"loading the reference {request.reference}") as say:
                reference = build_predictor(request.reference, is_model=ref_is_model,
                                            backend=request.reference_backend or (backends.TORCH if ref_is_model
                                                                                  else backends.ONNXRUNTIME),
                                            checkpoint=(request.reference_checkpoint or request.checkpoint)
                                            if ref_is_model else None, threads=request.threads,
                                            cache_dir=request.cache_dir, log=say)
        bar = progress(len(dataset), predictor.label) if progress is not None else None
        try:
            return evaluate(predictor, dataset, reference=reference, progress=bar)
        finally:
            if bar is not None:
                bar.close()
    finally:
        predictor.close()
        if reference is not None:
            reference.close()


def build_predictor(target: str, *, is_model: bool, backend: str | None, checkpoint, threads, cache_dir,
                    model_hint: str | None = None, log=None) -> Predictor:
    if is_model:
        return model_predictor(target, checkpoint=checkpoint, backend=backend, threads=threads, cache_dir=cache_dir,
                               log=log)
    if checkpoint is not None:
        raise InputError("--checkpoint goes with --model; an artifact carries its own weights")
    return artifact_predictor(target, backend=backend, threads=threads, model=model_hint)


def evaluate_checkpoint(checkpoint: str, model: str, data_dir: str, *, backend: str = backends.TORCH,
                        threads: int | None = None, cache_dir: str | None = None) -> dict:
    """``segdeploy eval --model MODEL --checkpoint CHECKPOINT --data DATA_DIR`` as a function (the fixtures' score)."""
    predictor = model_predictor(model, checkpoint=checkpoint, backend=backend, threads=threads, cache_dir=cache_dir,
                                log=None)
    try:
        return evaluate(predictor, open_dataset(data_dir)).as_dict()
    finally:
        predictor.close()

"""Evaluate a model or an artifact on a labelled dataset, on any backend, written once against the runner contract.

mmseg's test protocol, whole-image inference: each image is resized by the model's test policy (keep the aspect
ratio, fit (2048, 512), round to the size multiple; see segdeploy.preprocess), normalised, run, and its logits are
resized bilinearly to the label's size before the argmax (mmseg resizes to the network input, then to the original
size; one resize straight to the original differs from that on a few boundary pixels). Mask-output artifacts are
resized with nearest neighbour. Static artifacts take their own fixed size; dynamic ones the policy's size clamped to
their profile. Metrics: segdeploy.evaluation.metrics (ignore index 255, ADE20K's reduce_zero_label).

Memory stays bounded: one image's logits at a time, reduced to its mask and then to a confusion matrix.

What runs (a :class:`Predictor`): a registered model on PyTorch (``model_predictor``), the same model exported to a
dynamic ONNX graph for ONNX Runtime or OpenVINO (exported once into a cache folder, see :func:`cached_dynamic_onnx`),
or an existing ``.onnx`` artifact (``artifact_predictor``), which carries its own preprocessing in its metadata.
"""
from __future__ import annotations

import hashlib
import os
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from segdeploy import preprocess
from segdeploy.datasets import Dataset
from segdeploy.errors import ArtifactError, InputError
from segdeploy.evaluation.metrics import ConfusionAccumulator, SegMetrics, confusion_matrix, finite_or_none

DEFAULT_SCALE = (2048, 512)  # mmseg's ADE20K test scale, the policy every registered model was evaluated with
ONNX_OPSET = 20  # GELU stays one node, which ONNX Runtime fuses (as predict and bench export)


# ----------------------------------------------------------------------------------------------------------------
# What runs


@dataclass
class Predictor:
    """A runner plus what it takes to turn an image into its input and its output into a mask."""
    runner: object
    label: str  # e.g. "cgrseg_t (checkpoint x.pth) on torch"
    num_classes: int
    mean: tuple
    std: tuple
    channel_order: str
    size_multiple: int
    align_corners: bool = False
    uint8_input: bool = False  # the graph normalises itself: feed uint8 HWC BGR
    output_kind: str = "logits"  # or "mask"
    static_size: tuple[int, int] | None = None
    batch: int = 1  # a static artifact's fixed batch: the image is repeated to fill it
    profile: dict | None = None  # dynamic artifacts: {"height": [lo, hi], "width": [lo, hi], "multiple": m}
    class_names: tuple | None = None
    palette: tuple | None = None
    scale: tuple[int, int] = DEFAULT_SCALE
    infer_ms: list[float] = field(default_factory=list)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        if self.static_size is not None:
            return self.static_size
        h, w = preprocess.fit_size(height, width, scale=self.scale, multiple=self.size_multiple)
        if self.profile is not None:
            h = int(np.clip(h, *self.profile["height"]))
            w = int(np.clip(w, *self.profile["width"]))
        return h, w

    def feed(self, image_bgr: np.ndarray) -> dict[str, np.ndarray]:
        import cv2

        h, w = self.input_size(*image_bgr.shape[:2])
        name = self.runner.inputs()[0].name
        if self.uint8_input:
            x = cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_LINEAR)[None]
        else:
            spec = types.SimpleNamespace(mean=self.mean, std=self.std, channel_order=self.channel_order,
                                         size_multiple=self.size_multiple)
            x = preprocess.prepare(image_bgr, spec, (h, w))
        return {name: np.ascontiguousarray(np.repeat(x, self.batch, axis=0) if self.batch > 1 else x)}

    def predict(self, image_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(H, W) int64 class mask at ``size`` (the label's)."""
        import cv2

        out = self.runner.infer(self.feed(image_bgr))
        self.infer_ms.append(self.runner.last_timing.host_ms)
        value = out[self.runner.outputs()[0].name]
        if self.output_kind == "mask":
            mask = np.asarray(value)[0]
            if mask.shape != tuple(size):
                mask = cv2.resize(mask.astype(np.int32), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
            return mask.astype(np.int64)
        if value.shape[1] != self.num_classes:
            raise ArtifactError(f"{self.label} gave {value.shape[1]} class scores, {self.num_classes} expected")
        return preprocess.logits_to_mask(value, size, self.align_corners)[0].astype(np.int64)

    def close(self) -> None:
        self.runner.close()


def _weights_tag(checkpoint) -> str:
    if checkpoint is None:
        return "recipe"
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def default_cache_dir() -> str:
    return os.path.join(os.environ.get("SEGDEPLOY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                           "segdeploy"), "eval")


def cached_dynamic_onnx(model: str, checkpoint=None, cache_dir: str | None = None, force: bool = False,
                        log: Callable[[str], None] | None = print) -> str:
    """A validated dynamic-shape ONNX export of ``model`` with these weights, made once per weights file.

    (One small function on purpose: the project's shared export cache will take its place.)"""
    from segdeploy.errors import CheckpointError
    from segdeploy.export.onnx import export_onnx

    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, f"{model}_dynamic_{_weights_tag(checkpoint)}.onnx")
    if force or not os.path.isfile(path):
        if log is not None:
            log(f"exporting {model} (dynamic shapes) to {path} (once; validated against PyTorch)")
        export_onnx(model, path, checkpoint=checkpoint, height=512, width=512, dynamic=True, opset=ONNX_OPSET,
                    force=True)
    return path


def model_predictor(model: str, *, checkpoint=None, backend: str = "torch", threads: int | None = None,
                    cache_dir: str | None = None, log: Callable[[str], None] | None = print) -> Predictor:
    """A registered model (recipe weights, or ``checkpoint``) on ``backend``; ONNX backends run a cached export."""
    from segdeploy import models
    from segdeploy.runtimes.registry import BACKEND_INPUT, create_runner

    spec = models.get_spec(model)
    usable = [name for name, consumes in BACKEND_INPUT.items() if consumes in ("model", "onnx")]
    if backend not in usable:
        raise InputError(f"--backend must be one of {', '.join(usable)} for a model, not {backend!r}")
    if BACKEND_INPUT[backend] == "onnx":
        return artifact_predictor(cached_dynamic_onnx(model, checkpoint, cache_dir, log=log), backend=backend,
                                  threads=threads, label=f"{model}{_weights_note(checkpoint)} on {backend} "
                                                         "(dynamic ONNX export)")
    runner = create_runner(backend, model=model, checkpoint=checkpoint, threads=threads)
    num_classes = runner.num_classes
    names = palette = None
    if checkpoint is not None:
        from segdeploy.models.checkpoints import checkpoint_dataset_meta

        found = checkpoint_dataset_meta(checkpoint)
        if found is not None:
            names, palette = found
    return Predictor(runner, f"{model}{_weights_note(checkpoint)} on {backend}", num_classes, tuple(spec.mean),
                     tuple(spec.std), spec.channel_order, spec.size_multiple, spec.align_corners,
                     class_names=tuple(names) if names else tuple(spec.class_names(num_classes)),
                     palette=tuple(map(tuple, palette)) if palette else tuple(spec.palette(num_classes)))


def _weights_note(checkpoint) -> str:
    return f" ({os.path.basename(os.fspath(checkpoint))})" if checkpoint is not None else " (recipe weights)"


def artifact_predictor(path, *, backend: str = "onnxruntime", threads: int | None = None, model: str | None = None,
                       label: str | None = None) -> Predictor:
    """An .onnx artifact on ``backend``: input size, preprocessing and output kind from its metadata (a foreign
    file without metadata needs ``model`` for the preprocessing)."""
    from segdeploy.runtimes.registry import BACKEND_INPUT, create_runner

    path = os.fspath(path)
    if backend not in BACKEND_INPUT or BACKEND_INPUT[backend] != "onnx":
        usable = ", ".join(k for k, v in BACKEND_INPUT.items() if v == "onnx")
        raise InputError(f"an ONNX artifact runs on {usable}, not --backend {backend}")
    contract = artifact_contract(path, model)
    runner = create_runner(backend, artifact=path, threads=threads)
    return Predictor(runner, label or f"{os.path.basename(path)} on {backend}", **contract)


def artifact_contract(path: str, model: str | None = None) -> dict:
    """How to feed ``path`` and read its output, from the metadata export records (or the graph and ``model``)."""
    from segdeploy import models
    from segdeploy.export import metadata as meta

    proto = meta.load_onnx(path)
    info = meta.read(path, proto)
    if info:
        pre = info["preprocessing"]
        profile = info["input_profile"]
        dynamic = bool(info.get("dynamic"))
        return {"num_classes": int(info["num_classes"]), "mean": tuple(pre["mean"]), "std": tuple(pre["std"]),
                "channel_order": pre["channel_order"], "size_multiple": int(pre["size_multiple"]),
                "align_corners": bool(pre.get("align_corners", False)), "uint8_input": bool(pre.get("in_graph")),
                "output_kind": info.get("export_options", {}).get("outputs", "logits"),
                "static_size": None if dynamic else tuple(profile["opt"][1:]),
                "batch": 1 if dynamic else int(profile["opt"][0]),
                "profile": {"height": profile["height"], "width": profile["width"]} if dynamic else None,
                "class_names": tuple(info.get("class_names") or ()) or None,
                "palette": tuple(tuple(c) for c in info.get("palette") or ()) or None}
    if model is None:
        raise ArtifactError(f"{path} carries no segdeploy metadata; pass --model to say how to preprocess its input")
    spec = models.get_spec(model)
    graph_input = proto.graph.input[0].type.tensor_type
    dims = [d.dim_value or None for d in graph_input.shape.dim]
    graph_output = proto.graph.output[0].type.tensor_type
    out_dims = [d.dim_value or None for d in graph_output.shape.dim]
    if len(dims) != 4 or graph_input.elem_type != 1:  # 1 = FLOAT
        raise ArtifactError(f"{path} carries no segdeploy metadata and its input is not a float NCHW tensor; cannot "
                            "tell how to feed it")
    static = tuple(dims[2:]) if None not in dims[2:] else None
    batch = dims[0] if static is not None and dims[0] else 1
    num_classes = out_dims[1] if len(out_dims) == 4 and out_dims[1] else spec.num_classes
    return {"num_classes": num_classes, "mean": tuple(spec.mean), "std": tuple(spec.std),
            "channel_order": spec.channel_order, "size_multiple": spec.size_multiple,
            "align_corners": spec.align_corners, "output_kind": "logits" if len(out_dims) == 4 else "mask",
            "static_size": static, "batch": batch, "class_names": tuple(spec.class_names(num_classes)),
            "palette": tuple(spec.palette(num_classes))}


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
        where = "dataset.json" if dataset.meta else f"the {dataset.layout} layout"
        raise InputError(f"{predictor.label} predicts {predictor.num_classes} classes but the dataset has "
                         f"{dataset.num_classes} ({where}); evaluate a model trained on this dataset")
    return predictor.num_classes


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
    describe = getattr(predictor.runner, "describe", dict)()
    return EvalReport(predictor.label, dataset.describe(), total, metrics, tuple(names), seconds, predict_seconds,
                      float(np.mean(predictor.infer_ms)) if predictor.infer_ms else float("nan"), describe, ref)


def evaluate_checkpoint(checkpoint: str, model: str, data_dir: str, *, backend: str = "torch",
                        threads: int | None = None, cache_dir: str | None = None) -> dict:
    """``segdeploy eval --model MODEL --checkpoint CHECKPOINT --data DATA_DIR`` as a function (the fixtures' score)."""
    from segdeploy.datasets import open_dataset

    predictor = model_predictor(model, checkpoint=checkpoint, backend=backend, threads=threads, cache_dir=cache_dir,
                                log=None)
    try:
        return evaluate(predictor, open_dataset(data_dir)).as_dict()
    finally:
        predictor.close()

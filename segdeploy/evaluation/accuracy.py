"""Accuracy on a held-out set, for precision work: export's evaluator (an in-memory ONNX graph on ONNX Runtime),
validate's mIoU delta and bench's precision comparison (any runner).

A labelled dataset folder (ADE20K, Cityscapes or image/mask pairs layout; its validation split) gives mIoU with
mmseg's semantics (segdeploy.evaluation.metrics); a plain folder of images gives label agreement with the FP32
masks, in percent, since there is no ground truth. Each image is fed at one fixed network size (the artifact's),
prepared as the export prepares calibration images, and its prediction is resized to the image's size as mmseg does
(logits bilinearly, then argmax; masks by nearest neighbour).
"""
from __future__ import annotations

import os
import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from segdeploy import preprocess
from segdeploy.artifact.onnx_file import file_sha256
from segdeploy.datasets import open_dataset
from segdeploy.datasets.layouts import detect_layout
from segdeploy.errors import InputError
from segdeploy.evaluation.metrics import ConfusionAccumulator


@dataclass
class HeldOut:
    """The images accuracy is measured on, and their labels when there are any."""
    source: str
    image_paths: list[str]
    dataset: object | None = None  # a segdeploy.datasets.Dataset when labelled

    @property
    def labelled(self) -> bool:
        return self.dataset is not None

    def sha256(self) -> str:
        """The set's content: its images' bytes and, when labelled, its labels', in order (what an export that
        was judged on it records, so that another set is not mistaken for it)."""
        import hashlib

        files = list(self.image_paths) + ([s.label for s in self.dataset.samples] if self.dataset else [])
        return hashlib.sha256("\n".join(file_sha256(f) for f in files).encode()).hexdigest()

    @property
    def metric(self) -> str:
        return "mIoU" if self.labelled else "agreement"


def held_out(data: str | os.PathLike, limit: int | None = None) -> HeldOut:
    data = os.fspath(data)
    if not os.path.isdir(data):
        raise InputError(f"the held-out data must be a dataset folder or a folder of images: {data}")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, not {limit}")
    try:
        detect_layout(data)
    except InputError:
        from segdeploy.evaluation.feeds import list_images

        paths = list_images(data)[:limit]
        return HeldOut(f"{len(paths)} unlabelled images in {data} (label agreement with FP32)", paths)
    dataset = open_dataset(data).head(limit)
    return HeldOut(dataset.describe(), [s.image for s in dataset.samples], dataset)


def prepared_feed(image: np.ndarray, name: str, size: tuple[int, int], spec, uint8_input: bool,
                  batch: int = 1) -> dict:
    return {name: preprocess.network_input(image, size, spec, uint8_input=uint8_input, batch=batch)}


def to_mask(out: np.ndarray, image_shape, align_corners: bool) -> np.ndarray:
    """The first item of a logits (N, K, h, w) or mask (N, H, W) output as a mask at the image's size."""
    if out.ndim == 4:
        return preprocess.logits_to_mask(out[:1], image_shape[:2], align_corners)[0]
    rows = np.arange(image_shape[0]) * out.shape[1] // image_shape[0]  # nearest, as OpenCV's INTER_NEAREST
    cols = np.arange(image_shape[1]) * out.shape[2] // image_shape[1]
    return out[0][rows[:, None], cols[None, :]]


def predict_masks(infer: Callable[[dict], np.ndarray], held: HeldOut, feed: Callable[[np.ndarray], dict],
                  align_corners: bool, progress=None, label: str = "") -> list[np.ndarray]:
    masks = []
    for i, path in enumerate(held.image_paths):
        if progress is not None:
            progress(f"{label} {i}/{len(held.image_paths)}", i / max(1, len(held.image_paths)))
        image = preprocess.read_image(path)
        masks.append(to_mask(infer(feed(image)), image.shape, align_corners))
    return masks


def agreement_percent(masks: list[np.ndarray], reference: list[np.ndarray]) -> float:
    same = sum(int((a == b).sum()) for a, b in zip(masks, reference))
    return 100.0 * same / max(1, sum(m.size for m in masks))


def miou(held: HeldOut, masks: list[np.ndarray], num_classes: int | None) -> float:
    """mIoU (percent) of ``masks`` against the labels, mmseg's semantics."""
    dataset = held.dataset
    classes = dataset.num_classes or num_classes
    if not classes:
        raise InputError(f"{held.source}: the number of classes is unknown (no dataset.json and mask outputs)")
    accumulator = ConfusionAccumulator(classes, dataset.ignore_index)
    for sample, mask in zip(dataset.samples, masks):
        label = dataset.read_label(sample, classes, mask.shape)
        accumulator.update(label, np.clip(mask, 0, classes - 1))
    return float(accumulator.metrics().miou)


class GraphAccuracy:
    """Export's evaluator: ``reference(fp32_proto)`` once, then ``self(candidate_proto)`` -> points (mIoU %, or
    label agreement % with the FP32 graph when the data has no labels)."""

    def __init__(self, data: str | os.PathLike, *, mean, std, channel_order: str, align_corners: bool,
                 size: tuple[int, int], uint8_input: bool = False, batch: int = 1, threads: int | None = None,
                 limit: int | None = None):
        self.held = held_out(data, limit)
        self.metric = self.held.metric
        self.image_paths = self.held.image_paths
        self.spec = types.SimpleNamespace(mean=tuple(mean), std=tuple(std), channel_order=channel_order)
        self.align_corners = align_corners
        self.size, self.uint8_input, self.batch, self.threads = size, uint8_input, batch, threads
        self._reference: list[np.ndarray] | None = None
        self._classes: int | None = None
        self._sha256: str | None = None
        self.last: dict = {}

    def describe(self) -> dict:
        if self._sha256 is None:
            self._sha256 = self.held.sha256()
        return {"images": len(self.image_paths), "data": self.held.source, "images_sha256": self._sha256}

    def reference(self, model_proto) -> float:
        self._reference = self._predict(model_proto)
        self.last = {"agreement": 100.0}
        return miou(self.held, self._reference, self._classes) if self.held.labelled else 100.0

    def __call__(self, model_proto) -> float:
        if self._reference is None:
            raise RuntimeError("GraphAccuracy: call reference() with the FP32 graph first")
        masks = self._predict(model_proto)
        self.last = {"agreement": agreement_percent(masks, self._reference)}
        return miou(self.held, masks, self._classes) if self.held.labelled else self.last["agreement"]

    def _predict(self, model_proto) -> list[np.ndarray]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        session = ort.InferenceSession(model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        name, output = session.get_inputs()[0].name, session.get_outputs()[0]
        if len(output.shape) == 4 and isinstance(output.shape[1], int):
            self._classes = output.shape[1]

        def infer(feed):
            return session.run([output.name], feed)[0]

        return predict_masks(infer, self.held, lambda image: prepared_feed(image, name, self.size, self.spec,
                                                                           self.uint8_input, self.batch),
                             self.align_corners)

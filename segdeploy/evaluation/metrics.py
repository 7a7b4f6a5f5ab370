"""Segmentation metrics with mmsegmentation's semantics, accumulated as one confusion matrix.

``IoUMetric`` in mmseg sums, over the whole dataset, per-class intersection, prediction area and label area of the
pixels whose label is not the ignore index, then divides once: IoU = intersect / union, Acc = intersect / label area,
aAcc = all intersections / all labelled pixels. A class absent from both the labels and the predictions has 0/0 = NaN
IoU and is left out of the mean (``np.nanmean``); a class predicted but never labelled has IoU 0 and NaN accuracy.
The confusion matrix (rows: label, columns: prediction) holds all of these: intersect is its diagonal, label area its
row sums, prediction area its column sums.

ADE20K's ``reduce_zero_label``: label 0 ("other") becomes the ignore index and every other label k becomes k - 1, so
150 classes are 0..149 (:func:`reduce_zero_label`).

Reported metrics are percentages, as mmseg prints them; :func:`agreement` and :func:`mean_iou` return fractions, for
comparing one model's masks with another's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from segdeploy.datasets.layouts import IGNORE_INDEX, reduce_zero_label

__all__ = ["IGNORE_INDEX", "ConfusionAccumulator", "SegMetrics", "agreement", "confusion_matrix", "mean_iou",
           "finite_or_none", "metrics_from_confusion", "per_class_iou", "reduce_zero_label"]


def confusion_matrix(label: np.ndarray, pred: np.ndarray, num_classes: int,
                     ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """(K, K) int64 counts over the pixels whose label is not ``ignore_index``: rows label, columns prediction.

    Labels and predictions must lie in [0, K) (after leaving out ignored pixels); anything else is a ValueError,
    because mmseg would drop such pixels silently and the metric would no longer say what it claims.
    """
    label = np.asarray(label)
    pred = np.asarray(pred)
    if label.shape != pred.shape:
        raise ValueError(f"label {label.shape} and prediction {pred.shape} differ in shape")
    label = label.astype(np.int64, copy=False).ravel()
    pred = pred.astype(np.int64, copy=False).ravel()
    if ignore_index is not None:
        keep = label != ignore_index
        label, pred = label[keep], pred[keep]
    for what, values in (("label", label), ("prediction", pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            bad = values[(values < 0) | (values >= num_classes)][0]
            raise ValueError(f"{what} value {bad} is outside 0..{num_classes - 1}")
    return np.bincount(label * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def agreement(conf: np.ndarray) -> float:
    """Fraction of pixels on the diagonal (pixel accuracy; pixel agreement when both axes are model outputs)."""
    total = conf.sum()
    return float(np.trace(conf) / total) if total else 1.0


def per_class_iou(conf: np.ndarray) -> np.ndarray:
    """IoU per class as a fraction; NaN for classes absent from both axes."""
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def mean_iou(conf: np.ndarray) -> float:
    """Mean IoU (fraction) over the classes present on either axis; 1.0 when the matrix is empty."""
    iou = per_class_iou(conf)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else 1.0


@dataclass(frozen=True)
class SegMetrics:
    """Dataset-level metrics in percent (NaN where a class never occurs; see the module docstring)."""
    miou: float
    macc: float
    aacc: float
    iou: tuple[float, ...]
    acc: tuple[float, ...]
    label_pixels: tuple[int, ...]
    pixels: int

    def per_class(self, class_names=None) -> list[dict]:
        names = list(class_names) if class_names is not None else [str(i) for i in range(len(self.iou))]
        return [{"index": i, "name": names[i] if i < len(names) else str(i), "iou": finite_or_none(self.iou[i]),
                 "acc": finite_or_none(self.acc[i]), "pixels": self.label_pixels[i]}
                for i in range(len(self.iou))]

    def as_dict(self, class_names=None) -> dict:
        """JSON-ready: NaN becomes None."""
        return {"miou": finite_or_none(self.miou), "macc": finite_or_none(self.macc),
                "aacc": finite_or_none(self.aacc),
                "pixels": self.pixels, "per_class": self.per_class(class_names)}


def finite_or_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def metrics_from_confusion(conf: np.ndarray) -> SegMetrics:
    conf = np.asarray(conf, dtype=np.int64)
    inter = np.diag(conf).astype(np.float64)
    label_area = conf.sum(1)
    iou = per_class_iou(conf) * 100
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(label_area > 0, inter / np.maximum(label_area, 1), np.nan) * 100
    total = int(label_area.sum())
    aacc = float(inter.sum() / total * 100) if total else math.nan
    return SegMetrics(miou=_nanmean(iou), macc=_nanmean(acc), aacc=aacc, iou=tuple(float(v) for v in iou),
                      acc=tuple(float(v) for v in acc), label_pixels=tuple(int(v) for v in label_area), pixels=total)


class ConfusionAccumulator:
    """Sums confusion matrices image by image, so a dataset never has to be held in memory."""

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), np.int64)
        self.images = 0

    def update(self, label: np.ndarray, pred: np.ndarray) -> np.ndarray:
        conf = confusion_matrix(label, pred, self.num_classes, self.ignore_index)
        self.matrix += conf
        self.images += 1
        return conf

    def metrics(self) -> SegMetrics:
        return metrics_from_confusion(self.matrix)

"""Confusion-matrix metrics against mmseg's definitions written out as a direct per-class loop."""
from __future__ import annotations

import math

import numpy as np
import pytest

from segdeploy.evaluation.metrics import (
    ConfusionAccumulator,
    agreement,
    confusion_matrix,
    mean_iou,
    metrics_from_confusion,
    reduce_zero_label,
)


def loop_metrics(pairs, num_classes, ignore_index=255):
    """mmseg's IoUMetric, class by class: areas summed over the dataset, then divided once."""
    inter = np.zeros(num_classes)
    area_pred = np.zeros(num_classes)
    area_label = np.zeros(num_classes)
    for label, pred in pairs:
        valid = label != ignore_index
        for c in range(num_classes):
            inter[c] += np.sum((label == c) & (pred == c) & valid)
            area_pred[c] += np.sum((pred == c) & valid)
            area_label[c] += np.sum((label == c) & valid)
    iou, acc = [], []
    for c in range(num_classes):
        union = area_pred[c] + area_label[c] - inter[c]
        iou.append(inter[c] / union * 100 if union else math.nan)
        acc.append(inter[c] / area_label[c] * 100 if area_label[c] else math.nan)
    present_iou = [v for v in iou if not math.isnan(v)]
    present_acc = [v for v in acc if not math.isnan(v)]
    return {"miou": sum(present_iou) / len(present_iou), "macc": sum(present_acc) / len(present_acc),
            "aacc": inter.sum() / area_label.sum() * 100, "iou": iou, "acc": acc}


def random_pairs(rng, num_classes, count, shape=(23, 31), ignore_share=0.1, absent=()):
    pairs = []
    for _ in range(count):
        label = rng.integers(0, num_classes, shape)
        # predictions agree with the label on about half the pixels, so the IoUs are neither 0 nor 1
        pred = np.where(rng.random(shape) < 0.5, label, rng.integers(0, num_classes, shape))
        for c in absent:
            label[label == c] = (c + 1) % num_classes
            pred[pred == c] = (c + 1) % num_classes
        label[rng.random(shape) < ignore_share] = 255
        pairs.append((label, pred))
    return pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accumulated_metrics_match_the_per_class_loop(seed):
    rng = np.random.default_rng(seed)
    num_classes = 7
    pairs = random_pairs(rng, num_classes, count=5, absent=(3,))
    acc = ConfusionAccumulator(num_classes)
    for label, pred in pairs:
        acc.update(label, pred)
    got = acc.metrics()
    want = loop_metrics(pairs, num_classes)
    assert acc.images == 5
    assert got.miou == pytest.approx(want["miou"]) and got.macc == pytest.approx(want["macc"])
    assert got.aacc == pytest.approx(want["aacc"])
    assert math.isnan(got.iou[3]) and math.isnan(want["iou"][3])
    np.testing.assert_allclose(got.iou, want["iou"], equal_nan=True)
    np.testing.assert_allclose(got.acc, want["acc"], equal_nan=True)
    assert got.pixels == sum(int((label != 255).sum()) for label, _ in pairs)


def test_a_class_predicted_but_never_labelled_has_iou_zero_and_no_accuracy():
    label = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 2], [1, 1]])
    m = metrics_from_confusion(confusion_matrix(label, pred, 3))
    assert m.iou[2] == 0.0 and math.isnan(m.acc[2])
    assert m.miou == pytest.approx((50 + 100 + 0) / 3)
    assert m.macc == pytest.approx((50 + 100) / 2)
    assert m.aacc == pytest.approx(75)
    record = m.as_dict(["a", "b", "c"])
    assert record["per_class"][2] == {"index": 2, "name": "c", "iou": 0.0, "acc": None, "pixels": 0}


def test_ignored_pixels_count_nowhere_whatever_was_predicted_there():
    label = np.array([0, 1, 255, 255])
    conf_a = confusion_matrix(label, np.array([0, 1, 0, 0]), 2)
    conf_b = confusion_matrix(label, np.array([0, 1, 1, 1]), 2)
    assert conf_a.sum() == 2 and np.array_equal(conf_a, conf_b)
    with pytest.raises(ValueError, match="label value 255"):  # without an ignore index, 255 is just out of range
        confusion_matrix(label, np.array([0, 1, 0, 0]), 2, ignore_index=None)


def test_reduce_zero_label_follows_mmseg():
    raw = np.array([0, 1, 2, 150, 255], np.uint8)
    assert reduce_zero_label(raw).tolist() == [255, 0, 1, 149, 255]
    # the same mapping mmseg writes in uint8 arithmetic: 0 -> 255, then -1, then 254 -> 255
    mmseg = raw.copy()
    mmseg[mmseg == 0] = 255
    mmseg = mmseg - 1
    mmseg[mmseg == 254] = 255
    assert reduce_zero_label(raw).tolist() == mmseg.astype(int).tolist()


def test_values_outside_the_classes_are_an_error_not_silently_dropped():
    with pytest.raises(ValueError, match="label value 5 is outside 0..2"):
        confusion_matrix(np.array([0, 5]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="prediction value 3"):
        confusion_matrix(np.array([0, 1]), np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)


def test_agreement_and_mean_iou_between_two_masks():
    a = np.array([0, 0, 1, 1, 2, 2])
    b = np.array([0, 1, 1, 1, 2, 2])
    conf = confusion_matrix(a, b, 3, ignore_index=None)
    assert agreement(conf) == pytest.approx(5 / 6)
    assert mean_iou(conf) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert mean_iou(confusion_matrix(a, a, 3, ignore_index=None)) == 1.0
    assert math.isnan(metrics_from_confusion(np.zeros((3, 3), np.int64)).miou)

"""Dataset evaluation through the runner contract, on runners whose answers are known."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from segdeploy.artifact import manifest as mf
from segdeploy.datasets import open_dataset
from segdeploy.errors import InputError
from segdeploy.evaluation.eval import Predictor, evaluate
from segdeploy.evaluation.segment import Segmenter
from segdeploy.runtimes.base import Runner, TensorInfo, Timing

PREPROCESSING = mf.Preprocessing(in_graph=False, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], channel_order="RGB",
                                 size_multiple=32, align_corners=False)


class HalvesRunner(Runner):
    """Logits at stride 8 that say class ``left`` on the left half of the input and ``right`` on the right half."""

    def __init__(self, num_classes=3, left=0, right=1, mask_output=False):
        super().__init__()
        self.num_classes, self.left, self.right, self.mask_output = num_classes, left, right, mask_output
        self.shapes = []

    def inputs(self):
        return [TensorInfo("input", ("batch", 3, "height", "width"), "float32")]

    def outputs(self):
        return [TensorInfo("mask", ("batch", "height", "width"), "uint8")] if self.mask_output else \
            [TensorInfo("logits", ("batch", self.num_classes, "h", "w"), "float32")]

    def _infer(self, feed):
        x = feed["input"]
        self.shapes.append(x.shape)
        n, _, h, w = x.shape
        if self.mask_output:
            mask = np.full((n, h, w), self.left, np.uint8)
            mask[:, :, w // 2:] = self.right
            self.last_timing = Timing(host_ms=1.0)
            return {"mask": mask}
        logits = np.zeros((n, self.num_classes, h // 8, w // 8), np.float32)
        logits[:, self.left, :, : w // 16] = 5
        logits[:, self.right, :, w // 16:] = 5
        self.last_timing = Timing(host_ms=1.0)
        return {"logits": logits}


def predictor(runner, num_classes=3, profile=None):
    names = [f"c{i}" for i in range(num_classes)]
    segmenter = Segmenter(runner, PREPROCESSING, profile, names, [[i, i, i] for i in range(num_classes)])
    return Predictor(segmenter, "halves")


def static_profile(b, h, w):
    return mf.Profile(mf.Range(b, b, b), mf.Range(h, h, h), mf.Range(w, w, w), 32)


def make_pairs(root, labels, size=(40, 60)):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, label in enumerate(labels):
        cv2.imwrite(str(root / "images" / f"{i}.png"), np.zeros((*size, 3), np.uint8))
        cv2.imwrite(str(root / "masks" / f"{i}.png"), label.astype(np.uint8))
    return open_dataset(root)


def halves_label(h=40, w=60, left=0, right=1):
    label = np.full((h, w), left)
    label[:, w // 2:] = right
    label[:, w // 2 - 2: w // 2 + 2] = 255  # the seam, where a resized step may land either way, is ignored
    return label


@pytest.mark.parametrize("mask_output", [False, True])
def test_predictions_are_resized_to_the_label_and_scored(tmp_path, mask_output):
    wrong = halves_label()
    wrong[:10, :20] = 2  # 200 pixels labelled 2 where the model says 0
    dataset = make_pairs(tmp_path / "d", [halves_label(), wrong])
    runner = HalvesRunner(mask_output=mask_output)
    report = evaluate(predictor(runner), dataset)
    # the test policy: a 40x60 image is scaled so its short side is 512, each side rounded to 32; one untimed
    # warm-up call on the first image, then one call per image
    assert runner.shapes == [(1, 3, 512, 768)] * 3
    valid = 2 * 40 * 56
    inter0, inter1 = 2 * 40 * 28 - 200, 2 * 40 * 28
    assert report.metrics.aacc == pytest.approx((inter0 + inter1) / valid * 100)
    assert report.metrics.iou[0] == pytest.approx(inter0 / (2 * 40 * 28) * 100)
    assert report.metrics.iou[1] == 100 and report.metrics.iou[2] == 0
    assert report.metrics.miou == pytest.approx((inter0 / (2 * 40 * 28) * 100 + 100 + 0) / 3)
    record = report.as_dict()
    assert record["images"] == 2 and {"miou", "macc", "aacc", "per_class"} <= set(record)
    assert record["per_class"][2]["acc"] == 0.0 and record["infer_ms_mean"] == 1.0


def test_a_reference_gives_the_delta_and_the_pixel_agreement(tmp_path):
    dataset = make_pairs(tmp_path / "d", [halves_label()])
    candidate = predictor(HalvesRunner(left=0, right=1))
    reference = predictor(HalvesRunner(left=0, right=0))  # agrees on the left half only
    report = evaluate(candidate, dataset, reference=reference)
    ref = report.reference
    assert ref["pixel_agreement"] == pytest.approx(50.0)
    assert ref["miou"] == pytest.approx((28 / 56 * 100 + 0) / 2)
    assert ref["miou_delta"] == pytest.approx(report.metrics.miou - ref["miou"])


def test_static_inputs_take_their_own_size_and_dynamic_ones_are_clamped(tmp_path):
    dataset = make_pairs(tmp_path / "d", [halves_label(40, 200)], size=(40, 200))
    static = predictor(HalvesRunner(), profile=static_profile(1, 256, 256))
    evaluate(static, dataset)
    assert static.runner.shapes == [(1, 3, 256, 256)] * 2
    batched = predictor(HalvesRunner(), profile=static_profile(2, 256, 256))
    evaluate(batched, dataset)
    assert batched.runner.shapes == [(2, 3, 256, 256)] * 2  # a fixed batch gets the image repeated
    dynamic = predictor(HalvesRunner(), profile=mf.Profile(mf.Range(1, 1, 4), mf.Range(256, 512, 1024),
                                                           mf.Range(256, 512, 1024), 32))
    evaluate(dynamic, dataset)
    # the policy fits 40x200 into (2048, 512): 410x2048, rounded to 416x2048; the profile caps the width
    assert dynamic.runner.shapes == [(1, 3, 416, 1024)] * 2


def test_class_counts_must_agree(tmp_path):
    dataset = make_pairs(tmp_path / "d", [halves_label()])
    (tmp_path / "d" / "dataset.json").write_text('{"classes": ["a", "b"]}')
    with pytest.raises(InputError, match="predicts 3 classes but the dataset has 2"):
        evaluate(predictor(HalvesRunner()), open_dataset(tmp_path / "d"))
    with pytest.raises(InputError, match="the reference halves predicts 4 classes"):
        evaluate(predictor(HalvesRunner()), dataset, reference=predictor(HalvesRunner(4), 4))

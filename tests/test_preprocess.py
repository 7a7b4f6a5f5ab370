"""Host-side post-processing: logits to a mask at the image's size, resizing only the classes that can win."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from segdeploy import preprocess


def resize_every_class(logits: np.ndarray, size, align_corners: bool) -> np.ndarray:
    """The reference: every class resized (torch's bilinear sampling, the same float32 operations), then argmax."""
    t = torch.from_numpy(logits)
    y0, y1, wy0, wy1 = preprocess._source_index(size[0], t.shape[2], align_corners)
    x0, x1, wx0, wx1 = preprocess._source_index(size[1], t.shape[3], align_corners)
    classes_last = t.permute(0, 2, 3, 1)
    horizontal = classes_last[:, :, x0] * wx0[None, None, :, None] + classes_last[:, :, x1] * wx1[None, None, :, None]
    values = horizontal[:, y0] * wy0[None, :, None, None] + horizontal[:, y1] * wy1[None, :, None, None]
    return values.argmax(-1).numpy()


def regions(rng, classes: int, present: int, h: int, w: int) -> np.ndarray:
    """Logits of a segmentation-like output: a few classes well ahead of the rest, each leading in its own region
    (nearest to its centre), with noise."""
    logits = rng.normal(0, 1, (1, classes, h, w)).astype(np.float32)
    centres = rng.uniform(0, 1, (present, 2)) * (h, w)
    yy, xx = np.mgrid[:h, :w]
    chosen = rng.choice(classes, present, replace=False)
    for c, (cy, cx) in zip(chosen, centres):
        logits[0, c] += 10.0 + 10.0 * (1 - np.hypot(yy - cy, xx - cx) / np.hypot(h, w))
    return logits


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("classes,h,w,size", [(1, 4, 4, (9, 9)), (2, 5, 7, (40, 33)), (16, 32, 32, (257, 131)),
                                              (150, 19, 16, (150, 128)), (300, 8, 8, (31, 17)),
                                              (150, 16, 12, (12, 10))])
@pytest.mark.parametrize("select_above", [0, preprocess.SELECT_CLASSES_ABOVE])  # rule classes out always, or by K
def test_the_mask_is_what_resizing_every_class_gives(classes, h, w, size, align_corners, select_above, monkeypatch):
    monkeypatch.setattr(preprocess, "SELECT_CLASSES_ABOVE", select_above)
    rng = np.random.default_rng(classes * 1000 + h)
    for logits in (rng.standard_normal((2, classes, h, w)).astype(np.float32), regions(rng, classes, min(classes, 4),
                                                                                      h, w)):
        got = preprocess.logits_to_mask(logits, size, align_corners)
        np.testing.assert_array_equal(got, resize_every_class(logits, size, align_corners))
        assert got.dtype == (np.uint8 if classes <= 255 else np.int32)
    # bands of a few rows give the same mask
    np.testing.assert_array_equal(preprocess.logits_to_mask(logits, size, align_corners, max_chunk_bytes=1),
                                  resize_every_class(logits, size, align_corners))


def test_only_the_classes_that_can_win_are_resized():
    rng = np.random.default_rng(0)
    logits = regions(rng, 150, 5, 24, 20)
    candidates = preprocess.candidate_classes(torch.from_numpy(logits[0]))
    winners = set(np.unique(resize_every_class(logits, (200, 160), False)).tolist())
    assert winners <= set(candidates.tolist()) and len(candidates) < 30
    assert candidates.tolist() == sorted(candidates.tolist())  # class order, so ties still go to the lowest class
    ties = np.zeros((1, 5, 4, 4), np.float32)
    assert (preprocess.logits_to_mask(ties, (9, 9)) == 0).all()


def test_network_input_is_the_one_image_to_tensor_path():
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    spec = types.SimpleNamespace(mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0), channel_order="RGB")
    x = preprocess.network_input(image, (32, 64), spec, uint8_input=False, batch=2, dtype="float16")
    assert x.shape == (2, 3, 32, 64) and x.dtype == np.float16 and x.flags.c_contiguous
    np.testing.assert_array_equal(x[1], preprocess.prepare(image, spec, (32, 64))[0].astype(np.float16))
    raw = preprocess.network_input(image, (32, 64), spec, uint8_input=True)
    assert raw.shape == (1, 32, 64, 3) and raw.dtype == np.uint8

"""Image in, network input out, and back: the mmseg ADE20K test pipeline without mmseg.

Policy (recorded in artifacts as ``resize_policy``): keep the aspect ratio and scale so the image fits (2048, 512)
(long side <= 2048, short side <= 512, as mmseg's ``Resize(scale=(2048, 512), keep_ratio=True)``), then round each
side to the nearest multiple of the model's size multiple (32). Normalise with the model's mean/std after BGR->RGB.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from segdeploy.errors import InputError

RESIZE_POLICY = "keep-ratio fit to (2048, 512), then each side rounded to the size multiple; bilinear"
TEST_SCALE = (2048, 512)
# Label maps are uint8 while every class index fits below 255, which stays free as the "ignore" value of label PNGs
# (mmseg's ignore_index); larger class counts get int64 (graph masks) or int32 (host masks).
UINT8_MASK_MAX_CLASSES = 255
MAX_IMAGE_PIXELS = 1 << 30  # OpenCV's default CV_IO_MAX_IMAGE_PIXELS


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as uint8 HWC BGR (OpenCV's order)."""
    import cv2

    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder, not an image")
    if not os.path.isfile(path):
        raise InputError(f"image not found: {path}")
    try:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. beyond OpenCV's pixel limit (CV_IO_MAX_IMAGE_PIXELS, 2^30)
        detail = " ".join(str(exc).split())[:160]
        raise InputError(f"cannot decode image {path}: {detail}") from None
    if image is None:
        raise InputError(f"cannot decode image {path}: not an image OpenCV can read (or larger than its limit of "
                         f"{MAX_IMAGE_PIXELS:,} pixels)")
    return image


def fit_size(height: int, width: int, scale=TEST_SCALE, multiple: int = 32) -> tuple[int, int]:
    long_max, short_max = max(scale), min(scale)
    factor = min(long_max / max(height, width), short_max / min(height, width))
    h, w = int(height * factor + 0.5), int(width * factor + 0.5)
    return (max(multiple, int(round(h / multiple)) * multiple), max(multiple, int(round(w / multiple)) * multiple))


def prepare(image_bgr: np.ndarray, spec, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 HWC BGR image -> float32 (1, 3, H, W) normalised network input at ``size`` (default: fit_size)."""
    import cv2

    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise InputError(f"expected a colour image (H, W, 3), got shape {image_bgr.shape}")
    h, w = size or fit_size(*image_bgr.shape[:2], multiple=spec.size_multiple)
    resized = cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    if spec.channel_order == "RGB":
        resized = resized[:, :, ::-1]
    x = (resized.astype(np.float32) - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def logits_to_mask(logits, size: tuple[int, int], align_corners: bool = False,
                   max_chunk_bytes: int = 64 << 20) -> np.ndarray:
    """(N, K, h, w) logits -> (N, H, W) class indices (uint8 when K <= 255): bilinear resize to ``size``, then
    argmax over classes, exactly as resizing all K channels first would give (ties go to the lowest class).

    The resize runs a few classes at a time against a running maximum, so memory stays bounded by the output size
    (a few H x W maps), not by K x H x W: all 150 upsampled channels of a 24 MP photo would take 14 GB.
    """
    t = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    n, k = t.shape[:2]
    height, width = int(size[0]), int(size[1])
    chunk = int(max(1, min(k, max_chunk_bytes // max(1, 4 * height * width))))
    dtype = np.uint8 if k <= UINT8_MASK_MAX_CLASSES else np.int32
    out = np.empty((n, height, width), dtype=dtype)
    for i in range(n):
        best = torch.full((height, width), float("-inf"))
        index = torch.zeros((height, width), dtype=torch.int64)
        for start in range(0, k, chunk):
            up = F.interpolate(t[i:i + 1, start:start + chunk], size=(height, width), mode="bilinear",
                               align_corners=align_corners)[0]
            value, arg = up.max(dim=0)
            better = value > best
            best = torch.where(better, value, best)
            index = torch.where(better, arg + start, index)
        out[i] = index.numpy().astype(dtype)
    return out


def colorize(mask: np.ndarray, palette) -> np.ndarray:
    """(H, W) class mask -> uint8 HWC BGR image."""
    lut = np.asarray(palette, dtype=np.uint8)[:, ::-1]
    return lut[np.clip(mask, 0, len(lut) - 1)]


def class_histogram(mask: np.ndarray, class_names, top: int = 10) -> list[tuple[str, float]]:
    counts = np.bincount(mask.ravel().astype(np.int64), minlength=len(class_names))
    order = np.argsort(-counts, kind="stable")[:top]
    total = counts.sum()
    return [(class_names[i], 100.0 * counts[i] / total) for i in order if counts[i] > 0]

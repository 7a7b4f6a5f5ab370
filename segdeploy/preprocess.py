"""Image in, network input out, and back: the mmseg ADE20K test pipeline without mmseg.

Policy (recorded in artifacts as ``resize_policy``): keep the aspect ratio and scale so the image fits (2048, 512)
(long side <= 2048, short side <= 512, as mmseg's ``Resize(scale=(2048, 512), keep_ratio=True)``), then round each
side to the nearest multiple of the model's size multiple (32). Normalise with the model's mean/std after BGR->RGB.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import TYPE_CHECKING

import numpy as np

from segdeploy.errors import InputError

if TYPE_CHECKING:  # imported where it runs: reading an image needs no PyTorch
    import torch

RESIZE_POLICY = "keep-ratio fit to (2048, 512), then each side rounded to the size multiple; bilinear"
TEST_SCALE = (2048, 512)
# Label maps are uint8 while every class index fits below 255, which stays free as the "ignore" value of label PNGs
# (mmseg's ignore_index); larger class counts get int64 (graph masks) or int32 (host masks).
UINT8_MASK_MAX_CLASSES = 255
MAX_IMAGE_PIXELS = 1 << 30  # OpenCV's default CV_IO_MAX_IMAGE_PIXELS
# segdeploy's own cap, well below OpenCV's: a 20000x20000 scan would decode to 1.2 GB and take minutes to segment
# and colour at full size; a 108 MP phone photo (12000x9000) still fits. The C++ library keeps the same cap.
MAX_SEGMENT_PIXELS = 1 << 27
# What libjpeg says (on stderr, while OpenCV returns an image anyway) about a file it could not decode whole: the
# rest of the image is grey filler, so such a file is refused, not segmented.
_DECODER_DAMAGE = ("Premature end of JPEG file", "Corrupt JPEG data", "JPEG datastream contains no image",
                   "Invalid SOS parameters", "Bogus marker length", "libpng error")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as uint8 HWC BGR (OpenCV's order); one InputError line for anything that is not a whole,
    decodable image: missing, a folder, beyond OpenCV's pixel limit (checked from the header before decoding where
    the format allows), truncated or corrupt (libjpeg's complaints are caught, not printed), or not an image."""
    import cv2

    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder, not an image")
    if not os.path.isfile(path):
        raise InputError(f"image not found: {path}")
    dims = image_dimensions(path)
    if dims is not None:
        check_image_size(*dims, path)
    with captured_c_stderr() as said:
        try:
            image = cv2.imread(path, cv2.IMREAD_COLOR)
        except cv2.error as exc:  # e.g. beyond OpenCV's pixel limit (CV_IO_MAX_IMAGE_PIXELS, 2^30)
            image, said.error = None, " ".join(str(exc).split())[:160]
    damage = next((line.strip() for line in said.text.splitlines() if line.strip().startswith(_DECODER_DAMAGE)),
                  None)
    if damage:
        raise InputError(f"cannot decode image {path}: truncated or corrupt ({damage.rstrip('.')})")
    if image is None:
        reason = said.error or (f"not an image OpenCV can read (or larger than its limit of {MAX_IMAGE_PIXELS:,} "
                                "pixels)")
        raise InputError(f"cannot decode image {path}: {reason}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"cannot use image {path}: decoded as {image.dtype} {image.shape}, not 8-bit colour")
    check_image_size(*image.shape[:2], path)  # formats whose header was not read before decoding
    return image


def check_image_size(height: int, width: int, path) -> None:
    """Refuse, with one line, an image beyond segdeploy's size cap (checked from the header before decoding where
    the format allows)."""
    if height * width > MAX_SEGMENT_PIXELS:
        raise InputError(f"{path} is {height}x{width} ({height * width / 1e6:.0f} MP); segdeploy segments images of "
                         f"up to {MAX_SEGMENT_PIXELS / 1e6:.0f} MP (e.g. 12000x11000): downscale it first")


class _Said:
    text = ""
    error = None


@contextlib.contextmanager
def captured_c_stderr():
    """What C libraries (libjpeg, libpng) write to file descriptor 2 while the block runs, kept instead of printed:
    they report damage there while OpenCV still returns an image, and their lines are not segdeploy's output."""
    said = _Said()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to redirect
        yield said
        return
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            said.text = sink.read(64 << 10).decode("utf-8", "replace")


def image_dimensions(path: str | os.PathLike) -> tuple[int, int] | None:
    """(height, width) from a PNG or JPEG header without decoding the image; None for other formats or a header
    that cannot be read (the decoder then has the last word)."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
            if head.startswith(b"\xff\xd8"):
                return _jpeg_dimensions(f)
            if head.startswith(b"BM") and len(head) >= 26:  # BITMAPINFOHEADER: width, height (negative: top-down)
                return (abs(int.from_bytes(head[22:26], "little", signed=True)),
                        abs(int.from_bytes(head[18:22], "little", signed=True)))
    except OSError:
        return None
    return None


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_dimensions(f, max_segments: int = 1000) -> tuple[int, int] | None:
    f.seek(2)
    for _ in range(max_segments):
        byte = f.read(1)
        while byte == b"\xff":  # fill bytes before a marker
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue  # markers without a length
        length = f.read(2)
        if len(length) < 2:
            return None
        size = int.from_bytes(length, "big")
        if marker in _SOF_MARKERS:
            frame = f.read(5)
            if len(frame) < 5:
                return None
            return int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
        if size < 2:
            return None
        f.seek(size - 2, 1)
        if f.read(1) != b"\xff":
            return None
    return None


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


def network_input(image_bgr: np.ndarray, size: tuple[int, int], spec, *, uint8_input: bool, batch: int = 1,
                  dtype: str = "float32") -> np.ndarray:
    """The one image-to-tensor path (calibration, validation feeds, accuracy): ``image_bgr`` as a network input at
    ``size`` (HxW), repeated to ``batch``. A graph that preprocesses itself takes the resized uint8 BGR image (NHWC);
    any other takes it normalised as ``spec`` says (mean, std, channel order), NCHW in ``dtype``."""
    import cv2

    height, width = size
    if uint8_input:
        x = cv2.resize(image_bgr, (width, height), interpolation=cv2.INTER_LINEAR)[None]
    else:
        x = prepare(image_bgr, spec, (height, width)).astype(dtype, copy=False)
    return np.ascontiguousarray(np.repeat(x, batch, axis=0))


def _source_index(out_size: int, in_size: int, align_corners: bool):
    """torch's bilinear sampling along one axis (upsample_bilinear2d on the CPU): for each output index the two
    source indices and their weights, computed in float32 as torch computes them."""
    import torch

    dst = np.arange(out_size, dtype=np.float32)
    if align_corners:
        scale = np.float32((in_size - 1) / (out_size - 1)) if out_size > 1 else np.float32(0)
        src = scale * dst
    else:
        src = np.maximum(np.float32(in_size / out_size) * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
    return torch.from_numpy(i0), torch.from_numpy(i1), torch.from_numpy(np.float32(1) - w1), torch.from_numpy(w1)


# Rounding slack when ruling classes out: far above float32 rounding of an interpolated logit (~1e-7 relative), far
# below the gaps between real logits.
RULE_OUT_SLACK = 1e-4


def logits_to_mask(logits, size: tuple[int, int], align_corners: bool = False,
                   max_chunk_bytes: int = 128 << 20) -> np.ndarray:
    """(N, K, h, w) logits -> (N, H, W) class indices (uint8 when K <= 255): bilinear resize to ``size`` with
    torch's sampling, then argmax over classes (ties go to the lowest class), as resizing all K channels first
    would give, up to float rounding at exact ties.

    With many classes (more than ``SELECT_CLASSES_ABOVE``) only those that can win somewhere are resized
    (``candidate_classes``): an image shows a few of a dataset's 150 classes, and resizing the rest was most of the
    end-to-end time of a photo (a 600x512 image with ADE20K's 150 classes took longer to upsample than to segment on
    a 2-core EPYC); with few, ruling them out costs more than it saves.

    Memory stays bounded by ``max_chunk_bytes`` and the network's output, not by K x H x W (all 150 upsampled
    channels of a 24 MP photo would take 14 GB): the output is made a band of rows at a time, with the classes
    innermost so that the argmax reads contiguous memory; each band interpolates horizontally only the source rows
    it needs, then vertically.
    """
    import torch

    t = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    n, k, h, w = t.shape
    height, width = int(size[0]), int(size[1])
    y0, y1, wy0, wy1 = _source_index(height, h, align_corners)
    x0, x1, wx0, wx1 = _source_index(width, w, align_corners)
    wx0, wx1 = wx0[None, :, None], wx1[None, :, None]
    dtype = np.uint8 if k <= UINT8_MASK_MAX_CLASSES else np.int32
    out = np.empty((n, height, width), dtype=dtype)
    for i in range(n):
        # ruling classes out costs a pass over the logits: worth it where there are many classes to rule out
        classes = candidate_classes(t[i]) if k > SELECT_CLASSES_ABOVE else None
        kept = k if classes is None else len(classes)
        band = int(max(1, min(height, max_chunk_bytes // max(1, 4 * kept * width * 4))))
        chosen = t[i] if classes is None else t[i, classes]
        classes_last = chosen.permute(1, 2, 0).contiguous()  # (h, w, classes kept), in class order
        for start in range(0, height, band):
            stop = min(height, start + band)
            lo, hi = int(y0[start]), int(y1[stop - 1]) + 1
            rows = classes_last[lo:hi]
            horizontal = rows[:, x0] * wx0 + rows[:, x1] * wx1  # (rows, W, classes kept)
            values = horizontal[y0[start:stop] - lo] * wy0[start:stop, None, None] + \
                horizontal[y1[start:stop] - lo] * wy1[start:stop, None, None]
            labels = values.argmax(-1)
            out[i, start:stop] = (labels if classes is None else classes[labels]).numpy().astype(dtype, copy=False)
    return out


SELECT_CLASSES_ABOVE = 32  # class counts up to this are resized whole


def candidate_classes(logits: torch.Tensor) -> torch.Tensor:
    """The classes of (K, h, w) logits that can be the argmax anywhere in their bilinear resize, in class order.

    An output pixel's value of class k is a convex combination of k's logits at the four source pixels around it
    (its cell), so it lies between their minimum and maximum. In every cell some class j guarantees at least the
    largest of the per-class minima; a class whose maximum over the cell is below that cannot win there. A class
    is kept if it can win in some cell (with ``RULE_OUT_SLACK`` for rounding)."""
    import torch

    k, h, w = logits.shape
    if k == 1:
        return torch.zeros(1, dtype=torch.long)
    below = torch.cat([logits[:, 1:], logits[:, -1:]], dim=1)  # the cell's other row (the last row is its own)
    column = torch.stack([logits, below])
    right = torch.cat([column[..., 1:], column[..., -1:]], dim=-1)
    corners = torch.cat([column, right])  # (4, K, h, w): the four corners of every cell
    highest, lowest = corners.amax(0), corners.amin(0)
    guaranteed = lowest.amax(0)  # (h, w): what the best class reaches at least, per cell
    possible = (highest >= guaranteed - RULE_OUT_SLACK * (1.0 + guaranteed.abs())).flatten(1).any(1)
    return torch.nonzero(possible, as_tuple=True)[0]


def colorize(mask: np.ndarray, palette) -> np.ndarray:
    """(H, W) class mask -> uint8 HWC BGR image."""
    lut = np.asarray(palette, dtype=np.uint8)[:, ::-1]
    return lut[np.clip(mask, 0, len(lut) - 1)]


def class_histogram(mask: np.ndarray, class_names, top: int = 10) -> list[tuple[str, float]]:
    counts = np.bincount(mask.ravel().astype(np.int64), minlength=len(class_names))
    order = np.argsort(-counts, kind="stable")[:top]
    total = counts.sum()
    return [(class_names[i], 100.0 * counts[i] / total) for i in order if counts[i] > 0]

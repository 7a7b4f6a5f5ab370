"""Find image/label pairs in the usual folder layouts and read them with mmsegmentation's conventions.

- ``ade20k``: ``images/<split>/*.jpg`` + ``annotations/<split>/<stem>.png``; labels 1..K, 0 is "other", read with
  ``reduce_zero_label`` (0 -> ignore, k -> k - 1). Default split ``validation``.
- ``cityscapes``: ``leftImg8bit/<split>/<city>/<x>_leftImg8bit.png`` + ``gtFine/<split>/<city>/<x>_gtFine_labelTrainIds
  .png``; 19 train ids, 255 ignored. Default split ``val``.
- ``pairs``: ``images/<stem>.<ext>`` + ``masks/<stem>.png``; labels are class indices, 255 ignored.

A ``dataset.json`` at the root (the synthetic dataset writes one) names the classes and their palette; without it
ADE20K has 150 classes, Cityscapes 19 and pairs as many as the model predicts.

Every defect a user can fix (no folder, no images, a missing mask, a mask of another size or with labels outside the
classes, an unreadable file) is an InputError naming the file, raised when the layout is opened where that can be
checked cheaply (files and pairs), else when the pair is read.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from segdeploy.errors import InputError
from segdeploy.files.untrusted_json import read_untrusted_json
from segdeploy.preprocess import read_image

LAYOUTS = ("ade20k", "cityscapes", "pairs")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
IGNORE_INDEX = 255
META_FILE = "dataset.json"

CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")
CITYSCAPES_PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
                      (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
                      (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32))

_DESCRIPTIONS = {
    "ade20k": "ADE20K (images/validation/*.jpg + annotations/validation/*.png)",
    "cityscapes": "Cityscapes (leftImg8bit/val/<city>/ + gtFine/val/<city>/*_gtFine_labelTrainIds.png)",
    "pairs": "pairs (images/ + masks/ with the same file stems)",
}
_DEFAULT_SPLIT = {"ade20k": "validation", "cityscapes": "val", "pairs": None}


@dataclass(frozen=True)
class Sample:
    name: str  # the image's path relative to the dataset root, for messages and reports
    image: str
    label: str


@dataclass
class Dataset:
    layout: str
    root: str
    split: str | None
    samples: list[Sample]
    reduce_zero_label: bool
    num_classes: int | None = None  # None: as many as the model predicts (pairs without a dataset.json)
    class_names: tuple[str, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    ignore_index: int = IGNORE_INDEX
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self) -> str:
        split = f" {self.split}" if self.split else ""
        return f"{self.layout}{split} at {self.root} ({len(self.samples)} images)"

    def read_image(self, sample: Sample) -> np.ndarray:
        """uint8 HWC BGR, as segdeploy.preprocess.read_image (and mmseg's cv2 loader) reads it."""
        return read_image(sample.image)

    def read_label(self, sample: Sample, num_classes: int | None = None, image_shape=None) -> np.ndarray:
        """The label map as int64 class indices in [0, K) or the ignore index, after reduce_zero_label.

        ``num_classes`` (default: the dataset's) bounds the values; ``image_shape`` is checked against the mask's.
        """
        label = read_label_file(sample.label)
        if image_shape is not None and tuple(label.shape) != tuple(image_shape[:2]):
            raise InputError(f"mask {sample.label} is {label.shape[0]}x{label.shape[1]} (HxW) but its image "
                             f"{sample.image} is {image_shape[0]}x{image_shape[1]}")
        classes = num_classes or self.num_classes
        return check_label_values(label, sample.label, classes, self.reduce_zero_label, self.ignore_index)

    def head(self, limit: int | None) -> Dataset:
        """The first ``limit`` samples (all when None)."""
        if limit is None:
            return self
        if limit < 1:
            raise InputError(f"--limit must be at least 1, not {limit}")
        return Dataset(**{**self.__dict__, "samples": self.samples[:limit]})


# ----------------------------------------------------------------------------------------------------------------
# Labels


def reduce_zero_label(label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """mmseg's ``reduce_zero_label``: 0 -> ignore, k -> k - 1, the ignore index stays the ignore index."""
    label = label.astype(np.int64)
    out = label - 1
    out[(label == 0) | (label == ignore_index)] = ignore_index
    return out


def read_label_file(path: str) -> np.ndarray:
    """A single-channel label image as stored (8 or 16 bit); a 3-channel file is accepted when it is grey."""
    import cv2

    if not os.path.isfile(path):
        raise InputError(f"mask not found: {path}")
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise InputError(f"cannot decode mask {path}: not an image OpenCV can read")
    if label.ndim == 3:
        if label.shape[2] >= 3 and (label[..., 0] == label[..., 1]).all() and (label[..., 0] == label[..., 2]).all():
            label = label[..., 0]
        else:
            raise InputError(f"mask {path} is a colour image; expected one channel of class indices (a colour-coded "
                             "mask must be converted to indices first)")
    if label.dtype.kind not in "ui":
        raise InputError(f"mask {path} holds {label.dtype} values; expected integer class indices")
    return label


def check_label_values(label: np.ndarray, path: str, num_classes: int | None, reduce_zero: bool,
                       ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Apply reduce_zero_label, then insist that every value is a class in [0, K) or the ignore index."""
    out = reduce_zero_label(label, ignore_index) if reduce_zero else label.astype(np.int64)
    if num_classes is not None:
        bad = (out != ignore_index) & ((out < 0) | (out >= num_classes))
        if bad.any():
            raw = int(label[bad].flat[0])
            allowed = (f"1..{num_classes} (0 is ignored: reduce_zero_label)" if reduce_zero
                       else f"0..{num_classes - 1}")
            raise InputError(f"mask {path} holds label value {raw}, outside the {num_classes} classes ({allowed}) and "
                             f"not the ignore index {ignore_index}")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Layouts


def _images_in(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith("."))


def _rel(path: str, root: str) -> str:
    return os.path.relpath(path, root)


def _pair_up(root: str, images: list[str], label_for, expected_note: str = "") -> list[Sample]:
    samples, missing = [], []
    for image in images:
        label = label_for(image)
        if os.path.isfile(label):
            samples.append(Sample(_rel(image, root), image, label))
        else:
            missing.append((image, label))
    if missing:
        image, label = missing[0]
        raise InputError(f"{len(missing)} of {len(images)} images have no mask (first: {_rel(image, root)}, expected "
                         f"{_rel(label, root)}){expected_note}")
    return samples


def _need_folder(path: str, root: str, layout: str) -> str:
    if not os.path.isdir(path):
        raise InputError(f"{root} is not a {layout} dataset: {_rel(path, root)}/ not found (expected "
                         f"{_DESCRIPTIONS[layout]})")
    return path


def _no_images(folder: str) -> InputError:
    return InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")


def _ade20k(root: str, split: str) -> list[Sample]:
    image_dir = _need_folder(os.path.join(root, "images", split), root, "ade20k")
    label_dir = _need_folder(os.path.join(root, "annotations", split), root, "ade20k")
    images = [os.path.join(image_dir, f) for f in _images_in(image_dir)]
    if not images:
        raise _no_images(image_dir)
    return _pair_up(root, images, lambda p: os.path.join(label_dir, os.path.splitext(os.path.basename(p))[0] +
                                                         ".png"))


def _cityscapes(root: str, split: str) -> list[Sample]:
    image_dir = _need_folder(os.path.join(root, "leftImg8bit", split), root, "cityscapes")
    label_dir = _need_folder(os.path.join(root, "gtFine", split), root, "cityscapes")
    images = []
    for city in sorted(d for d in os.listdir(image_dir) if os.path.isdir(os.path.join(image_dir, d))):
        folder = os.path.join(image_dir, city)
        images += [os.path.join(folder, f) for f in _images_in(folder) if f.endswith("_leftImg8bit.png")]
    if not images:
        raise InputError(f"no *_leftImg8bit.png images in the city folders of {image_dir}")

    def label_for(path: str) -> str:
        city = os.path.basename(os.path.dirname(path))
        stem = os.path.basename(path)[: -len("_leftImg8bit.png")]
        return os.path.join(label_dir, city, f"{stem}_gtFine_labelTrainIds.png")

    return _pair_up(root, images, label_for, "; the *_labelTrainIds.png files are made from the polygons by "
                                             "cityscapesscripts' createTrainIdLabelImgs")


def _pairs(root: str) -> list[Sample]:
    image_dir = _need_folder(os.path.join(root, "images"), root, "pairs")
    mask_dir = _need_folder(os.path.join(root, "masks"), root, "pairs")
    names = _images_in(image_dir)
    if not names:
        raise _no_images(image_dir)
    stems: dict[str, str] = {}
    for name in names:
        stem = os.path.splitext(name)[0]
        if stem in stems:
            raise InputError(f"images/{stems[stem]} and images/{name} share the stem {stem!r}; which one does "
                             f"masks/{stem}.* belong to?")
        stems[stem] = name
    masks: dict[str, str] = {}
    for name in _images_in(mask_dir):
        stem = os.path.splitext(name)[0]
        if stem not in masks or name.endswith(".png"):  # PNG wins: lossless, as masks must be
            masks[stem] = name

    def label_for(path: str) -> str:
        stem = os.path.splitext(os.path.basename(path))[0]
        return os.path.join(mask_dir, masks.get(stem, stem + ".png"))

    return _pair_up(root, [os.path.join(image_dir, n) for n in names], label_for)


def detect_layout(root: str) -> str:
    def has(*parts):
        return os.path.isdir(os.path.join(root, *parts))

    if has("images") and has("annotations"):
        return "ade20k"
    if has("leftImg8bit") and has("gtFine"):
        return "cityscapes"
    if has("images") and has("masks"):
        return "pairs"
    raise InputError(f"{root} does not look like a dataset; expected one of: "
                     + "; ".join(_DESCRIPTIONS[k] for k in LAYOUTS))


MAX_CLASSES = 65535  # label PNGs are at most 16-bit
MAX_META_BYTES = 16 << 20


def read_meta(root: str) -> dict:
    """The dataset's own description (dataset.json): its class names and palette, checked as data nobody vouches
    for (any JSON, any size, any types: one InputError line). Nothing else in it is used: no path it names."""
    path = os.path.join(root, META_FILE)
    if not os.path.isfile(path):
        return {}
    meta = read_untrusted_json(path, "a dataset description", MAX_META_BYTES, InputError)
    classes = meta.get("classes") if isinstance(meta, dict) else None
    if not isinstance(classes, list) or not 0 < len(classes) <= MAX_CLASSES or \
            not all(isinstance(c, str) and len(c) <= 256 for c in classes):
        raise InputError(f"{path} must hold a non-empty list of class names (at most {MAX_CLASSES}, each a short "
                         "string) under 'classes'")
    palette = meta.get("palette")
    if palette is not None and not (isinstance(palette, list) and len(palette) == len(classes) and all(
            isinstance(c, list) and len(c) == 3 and all(type(v) is int and 0 <= v <= 255 for v in c)
            for c in palette)):
        raise InputError(f"{path}: 'palette' must hold one [r, g, b] (0-255 each) per class")
    return {"classes": classes, "palette": palette}


def open_dataset(root: str | os.PathLike, layout: str = "auto", split: str | None = None) -> Dataset:
    """The image/label pairs under ``root``: every image paired with its mask, sorted by path, checked up front."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise InputError(f"dataset folder not found: {root}")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise InputError(f"--layout must be auto or one of {', '.join(LAYOUTS)}, not {layout!r}")
    split = split or _DEFAULT_SPLIT[layout]
    meta = read_meta(root)
    if layout == "ade20k":
        samples = _ade20k(root, split)
        num_classes, names, palette = 150, None, None
    elif layout == "cityscapes":
        samples = _cityscapes(root, split)
        num_classes, names, palette = len(CITYSCAPES_CLASSES), CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
    else:
        samples = _pairs(root)
        num_classes, names, palette = None, None, None
    if meta:
        names = tuple(meta["classes"])
        num_classes = len(names)
        palette = tuple(tuple(int(v) for v in c) for c in meta["palette"]) if meta.get("palette") else None
    return Dataset(layout=layout, root=root, split=split, samples=samples, reduce_zero_label=layout == "ade20k",
                   num_classes=num_classes, class_names=names, palette=palette, meta=meta)

"""The calibration images: a folder of images or a dataset's training split, taken evenly spaced in name order,
with their digests (the provenance the manifest records) and the check that none of them is also an evaluation image.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

from segdeploy.errors import InputError

DEFAULT_COUNT = 32
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class CalibrationImages:
    folder: str
    split: str  # what part of the folder: "images", "ade20k training", ...
    paths: tuple[str, ...]
    digests: tuple[str, ...]  # SHA-256 of each file's bytes, in order

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.digests).encode()).hexdigest()

    def provenance(self) -> dict:
        return {"images_sha256": self.sha256, "count": len(self.paths), "source": self.split,
                "image_digests": [d[:16] for d in self.digests]}


def image_files(folder: str | os.PathLike) -> tuple[list[str], str]:
    """The calibration candidates under ``folder`` (sorted) and what they are."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputError(f"--calib must be a folder of images or a dataset folder: {folder}")
    for parts, what in ((("images", "training"), "ade20k training split"),
                        (("leftImg8bit", "train"), "cityscapes train split"),
                        (("images",), "images/ of an image/mask dataset")):
        sub = os.path.join(folder, *parts)
        if os.path.isdir(sub):
            files = _images_under(sub)
            if files:
                return files, what
    files = _images_under(folder, recursive=False)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder} (nor a dataset's training split)")
    return files, "images"


def _images_under(folder: str, recursive: bool = True) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files)
                  if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")]
        if not recursive:
            break
    return sorted(found)


def evenly_spaced(paths: list[str], count: int) -> list[str]:
    """``count`` of ``paths`` (all when there are fewer), evenly spaced: a fixed choice that spans them."""
    return [paths[(i * len(paths)) // count] for i in range(count)] if count < len(paths) else list(paths)


def select_images(folder: str | os.PathLike, count: int = DEFAULT_COUNT) -> CalibrationImages:
    if count < 1:
        raise InputError(f"--calib-count must be at least 1, not {count}")
    files, what = image_files(folder)
    files = evenly_spaced(files, count)
    return CalibrationImages(os.path.abspath(os.fspath(folder)), what, tuple(files),
                             tuple(file_digest(f) for f in files))


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_disjoint(calibration_digests: Iterable[str], evaluation_paths: Iterable[str], what: str) -> None:
    """Refuse an evaluation set that shares an image (by content) with the calibration images."""
    calibration = {d[:16] for d in calibration_digests}
    shared = [p for p in evaluation_paths if file_digest(p)[:16] in calibration]
    if shared:
        raise InputError(f"{len(shared)} of the images {what} is measured on were used for calibration (first: "
                         f"{shared[0]}); calibrate on other images (a dataset folder's training split) so the "
                         "accuracy is not measured on what the ranges were fitted to")

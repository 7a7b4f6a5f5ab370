"""Inputs to compare and evaluate on: seeded tensors, and real images prepared the way an artifact's manifest says
(its own fixed size for static artifacts, the test resize policy clamped to the profile for dynamic ones)."""
from __future__ import annotations

import os
import types

import numpy as np

from segdeploy import preprocess, recipe
from segdeploy.errors import InputError
from segdeploy.runtimes.base import TensorInfo

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def seeded_feed(info: TensorInfo, shape: tuple[int, int, int], seed: int) -> dict:
    """A deterministic input: normal(0, 1) 'normalised images' for float inputs, uniform uint8 for image inputs."""
    batch, height, width = shape
    if info.dtype == "uint8":
        rng = np.random.default_rng([seed, recipe.INPUT_STREAM])
        return {info.name: rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)}
    return {info.name: recipe.seeded_input((batch, 3, height, width), seed).astype(info.dtype)}


def network_size(image_bgr: np.ndarray, preprocessing, profile=None) -> tuple[int, int]:
    """The network input size for a real image: a static artifact's own size; else the test resize policy
    (``preprocessing.resize``), clamped to the profile's range when there is one."""
    if profile is not None and profile.static:
        return profile.height.opt, profile.width.opt
    h, w = preprocess.fit_size(*image_bgr.shape[:2], scale=tuple(preprocessing.resize.scale),
                               multiple=preprocessing.resize.round_to)
    if profile is None:
        return h, w
    return (int(np.clip(h, profile.height.min, profile.height.max)),
            int(np.clip(w, profile.width.min, profile.width.max)))


def image_feed(image_bgr: np.ndarray, info: TensorInfo, preprocessing, size: tuple[int, int],
               batch: int = 1) -> dict:
    """A real image prepared as ``preprocessing`` (a manifest's) says, at ``size``, repeated to ``batch``."""
    pre = preprocessing
    spec = types.SimpleNamespace(mean=pre.mean, std=pre.std, channel_order=pre.channel_order,
                                 size_multiple=pre.size_multiple)
    return {info.name: preprocess.network_input(image_bgr, size, spec, uint8_input=info.dtype == "uint8", batch=batch,
                                                dtype=info.dtype)}


def manifest_image_feed(image_bgr: np.ndarray, info: TensorInfo, manifest) -> dict:
    """A real image prepared as an artifact's manifest says: its size policy, the batch a static artifact takes."""
    profile = manifest.profile
    return image_feed(image_bgr, info, manifest.preprocessing, network_size(image_bgr, manifest.preprocessing, profile),
                      profile.batch.opt if profile.static else 1)


def list_images(folder: str | os.PathLike) -> list[str]:
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputError(f"--images must be a folder of images: {folder}")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files

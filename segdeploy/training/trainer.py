"""Train a registered model on a labelled dataset on the CPU: seeded, bounded by an iteration count.

mmseg's recipe in small: each training image is first resized by the model's test policy (so training sees the
scale evaluation sees), then each sample is a random rescale, a random crop (padded with the ignore index where the
image is smaller) and a random horizontal flip, normalised as the model expects. AdamW with a linear warm-up and a
poly decay; cross-entropy with the ignore index on logits resized (bilinearly) to the crop. The weights start from
PyTorch's default initialisation: no pretrained backbone exists offline, and the deterministic recipe weights (unit-
scale layer scales, random BN statistics) train slower.

Determinism: torch and NumPy are seeded from ``TrainConfig.seed`` and the batch order and augmentation come from one
NumPy generator, so a rerun on the same machine and library versions gives the same weights up to the order of
floating-point reductions in multi-threaded kernels.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from segdeploy import preprocess
from segdeploy.datasets import Dataset

if TYPE_CHECKING:  # PyTorch is imported by train(), not with the configs the fixture recipes (and --help) read
    import torch

IGNORE_INDEX = 255


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 500
    batch: int = 8
    crop: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 30
    poly_power: float = 1.0
    scale_range: tuple[float, float] = (0.75, 1.5)
    threads: int = 2
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: torch.nn.Module
    iterations: int
    seconds: float
    final_loss: float
    losses: list[float]


class CropSampler:
    """The training split in memory at the test policy's scale; draws augmented (image, label) crops."""

    def __init__(self, dataset: Dataset, spec, crop: int, scale_range, rng: np.random.Generator):
        import cv2

        self.spec, self.crop, self.scale_range, self.rng = spec, crop, scale_range, rng
        self.images, self.labels = [], []
        for sample in dataset.samples:
            image = dataset.read_image(sample)
            label = dataset.read_label(sample, image_shape=image.shape).astype(np.uint8)
            h, w = preprocess.fit_size(*image.shape[:2], multiple=spec.size_multiple)
            self.images.append(cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR))
            self.labels.append(cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST))
        mean = np.asarray(spec.mean, np.float32)
        std = np.asarray(spec.std, np.float32)
        self._mean, self._std = mean, std

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        i = int(self.rng.integers(len(self.images)))
        image, label = self.images[i], self.labels[i]
        scale = self.rng.uniform(*self.scale_range)
        h, w = max(1, int(image.shape[0] * scale + 0.5)), max(1, int(image.shape[1] * scale + 0.5))
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
        c = self.crop
        if h < c or w < c:  # pad: image with zeros (after normalisation: the mean), label with the ignore index
            image = cv2.copyMakeBorder(image, 0, max(0, c - h), 0, max(0, c - w), cv2.BORDER_CONSTANT,
                                       value=tuple(float(v) for v in self._mean[::-1]))
            label = cv2.copyMakeBorder(label, 0, max(0, c - h), 0, max(0, c - w), cv2.BORDER_CONSTANT,
                                       value=IGNORE_INDEX)
            h, w = label.shape
        y, x = int(self.rng.integers(h - c + 1)), int(self.rng.integers(w - c + 1))
        image, label = image[y:y + c, x:x + c], label[y:y + c, x:x + c]
        if self.rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        if self.spec.channel_order == "RGB":
            image = image[:, :, ::-1]
        x_norm = (image.astype(np.float32) - self._mean) / self._std
        return x_norm.transpose(2, 0, 1), label.astype(np.int64)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        xs, ys = zip(*(self.sample() for _ in range(size)))
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def learning_rate(config: TrainConfig, step: int) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.iterations - config.warmup)
    return config.lr * (1 - progress) ** config.poly_power


def train(model_name: str, dataset: Dataset, config: TrainConfig, *, num_classes: int | None = None,
          log: Callable[[str], None] | None = None, log_every: int = 25) -> TrainResult:
    """Train ``model_name`` from PyTorch's default initialisation on ``dataset`` (its training split)."""
    import torch
    import torch.nn.functional as F

    from segdeploy import models

    torch.manual_seed(config.seed)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        rng = np.random.default_rng(config.seed)
        spec = models.get_spec(model_name)
        num_classes = num_classes or dataset.num_classes
        model = models.create(model_name, num_classes=num_classes).train()
        sampler = CropSampler(dataset, spec, config.crop, config.scale_range, rng)
        decay = [p for n, p in model.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
        losses: list[float] = []
        start = time.perf_counter()
        for step in range(config.iterations):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            x, y = sampler.batch(config.batch)
            logits = model(x)
            logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=spec.align_corners)
            loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise RuntimeError(f"training {model_name} diverged at iteration {step} (loss {value})")
            losses.append(value)
            if log is not None and ((step + 1) % log_every == 0 or step + 1 == config.iterations):
                recent = np.mean(losses[-log_every:])
                elapsed = time.perf_counter() - start
                log(f"{model_name} iter {step + 1}/{config.iterations} loss {recent:.4f} lr "
                    f"{learning_rate(config, step):.2e} {elapsed:.0f} s ({elapsed / (step + 1):.2f} s/iter)")
        model.eval()
        return TrainResult(model, config.iterations, time.perf_counter() - start,
                           float(np.mean(losses[-log_every:])) if losses else math.nan, losses)
    finally:
        torch.set_num_threads(threads_before)

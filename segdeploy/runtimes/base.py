"""The runner contract every backend implements (Polygraphy's idea: named tensors in, named tensors out).

A runner is built from a model or an artifact, describes its inputs and outputs by name, and runs one batch with
``infer(feed)``. Timing is measured by the runner itself (``last_timing``) so that a backend that can split host
and device time (TensorRT, CUDA) reports the split, and one that cannot reports the host wall time only.
Comparison (validate) and benchmarking (bench) are written once against this contract, never per backend.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple  # ints for static dims, strings for named dynamic dims
    dtype: str  # numpy dtype name: "float32", "float16", "uint8", "int64"


@dataclass
class Timing:
    """Milliseconds of the last ``infer`` call; device-side parts are None where the backend cannot tell."""
    host_ms: float = 0.0
    h2d_ms: float | None = None
    compute_ms: float | None = None
    d2h_ms: float | None = None
    extra: dict = field(default_factory=dict)


class Runner(ABC):
    backend: str = "?"

    def __init__(self):
        self.last_timing = Timing()

    @abstractmethod
    def inputs(self) -> list[TensorInfo]: ...

    @abstractmethod
    def outputs(self) -> list[TensorInfo]: ...

    @abstractmethod
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Keys of ``feed`` are input names; returns host arrays keyed by output name."""

    def describe(self) -> dict:
        """Backend, device, precision and versions, for reports."""
        return {"backend": self.backend}

    def peak_device_memory(self, reset: bool = False) -> int | None:
        """Peak bytes the backend allocated on its accelerator since the last reset; None on the host or when the
        backend cannot tell (host memory is measured from outside, as the process RSS)."""
        return None

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release sessions, engines and device buffers."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def resolve_shape(info: TensorInfo, batch: int, height: int, width: int) -> tuple[int, ...]:
    """Concrete shape for an NCHW image input: named dims take the batch (first) and the spatial size (last two)."""
    shape = list(info.shape)
    wanted = {0: batch, len(shape) - 2: height, len(shape) - 1: width}
    for i, dim in enumerate(shape):
        if not isinstance(dim, int) or dim < 0:
            if i not in wanted:
                raise ValueError(f"input {info.name!r} has a dynamic dimension {i} ({dim!r}) that is neither the "
                                 "batch nor the spatial size")
            shape[i] = wanted[i]
    return tuple(shape)


def random_feed(runner: Runner, batch: int, height: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A synthetic batch for every input of ``runner``: normal(0, 1) values, i.e. already-normalised images.

    Static input dims win over the requested ones, so an artifact exported at a fixed size is fed that size.
    """
    rng = np.random.default_rng(seed)
    feed = {}
    for info in runner.inputs():
        shape = resolve_shape(info, batch, height, width)
        dtype = np.dtype(info.dtype)
        if dtype.kind == "f":
            feed[info.name] = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        else:  # e.g. uint8 images for artifacts with the preprocessing built in
            feed[info.name] = rng.integers(0, 256, shape).astype(dtype)
    return feed

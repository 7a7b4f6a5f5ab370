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

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release sessions, engines and device buffers."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

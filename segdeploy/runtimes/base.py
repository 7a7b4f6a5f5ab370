"""The runner contract every backend implements (Polygraphy's idea: named tensors in, named tensors out).

A runner is built from a model or an artifact, describes its inputs and outputs by name, and runs one batch with
``infer(feed)``. ``infer`` checks the feed once, here, against the runner's inputs (names, dtypes, ranks, static
dims) and, for an artifact, against the input profile its manifest promises; then it calls the backend's
``_infer``. A backend therefore never sees a feed it was not built for, and a wrong feed is one InputError line
whatever the backend.

Timing is measured by the runner itself (``last_timing``) so that a backend that can split host and device time
(TensorRT, CUDA) reports the split, and one that cannot reports the host wall time only. Comparison (validate),
evaluation (eval) and benchmarking (bench) are written once against this contract, never per backend.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from segdeploy.errors import InputError, SegdeployError


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple  # ints for static dims, strings for named dynamic dims
    dtype: str  # numpy dtype name: "float32", "float16", "uint8", "int64"
    layout: str | None = None  # "NCHW" | "NHWC" for images; None when unknown

    @property
    def image_layout(self) -> str:
        """NCHW or NHWC: the layout given, else read off the channel dimension (3)."""
        if self.layout:
            return self.layout
        if len(self.shape) == 4 and self.shape[3] == 3 and self.shape[1] != 3:
            return "NHWC"
        return "NCHW"


@dataclass
class Timing:
    """Milliseconds of the last ``infer`` call; device-side parts are None where the backend cannot tell."""
    host_ms: float = 0.0
    h2d_ms: float | None = None
    compute_ms: float | None = None
    d2h_ms: float | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LayerTime:
    """One layer as a backend's profiler saw it: its name, operator and mean milliseconds per profiled run.

    ``sources``: the names of the graph nodes the layer computes (several for a fused layer), as the artifact's ONNX
    graph or the backend's own graph spells them; they carry the PyTorch module scope the exporter recorded.
    ``neighbours``: the layers next to it in the backend's graph (consumers first), which place a layer the backend
    added itself (a layout reorder) beside the module it serves. ``samples``: its milliseconds in each profiled run
    (0 where a run did not report it); ``ms`` is their mean."""
    name: str
    op: str
    ms: float
    sources: tuple[str, ...] = ()
    neighbours: tuple[str, ...] = ()
    kernel: str = ""
    samples: tuple[float, ...] = ()


@dataclass
class LayerProfile:
    """A backend's per-layer times over ``len(run_ms)`` profiled runs (after warm-up): ``layers`` in execution order
    with their mean times, the wall time of each profiled run as the backend measured it, and notes on what the
    profiler could not see."""
    backend: str
    layers: list[LayerTime]
    run_ms: list[float]
    notes: list[str] = field(default_factory=list)

    @property
    def layer_ms(self) -> float:
        return sum(layer.ms for layer in self.layers)


class Runner(ABC):
    backend: str = "?"
    manifest = None  # the artifact's segdeploy.artifact.Manifest, where the runner runs a segdeploy artifact

    def __init__(self):
        self.last_timing = Timing()

    @abstractmethod
    def inputs(self) -> list[TensorInfo]: ...

    @abstractmethod
    def outputs(self) -> list[TensorInfo]: ...

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Keys of ``feed`` are input names; returns host arrays keyed by output name."""
        self.check_feed(feed)
        return self._infer(feed)

    @abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The backend's run of a feed that ``check_feed`` accepted."""

    def check_feed(self, feed: dict[str, np.ndarray]) -> None:
        expected = {i.name: i for i in self.inputs()}
        if not isinstance(feed, dict) or set(feed) != set(expected):
            names = sorted(feed) if isinstance(feed, dict) else type(feed).__name__
            raise InputError(f"{self.backend}: the feed has inputs {names}, the model takes {sorted(expected)}")
        for name, array in feed.items():
            info = expected[name]
            if not isinstance(array, np.ndarray):
                raise InputError(f"{self.backend}: input {name!r} must be a numpy array, not {type(array).__name__}")
            if str(array.dtype) != info.dtype:
                raise InputError(f"{self.backend}: input {name!r} must be {info.dtype}, not {array.dtype}")
            if array.ndim != len(info.shape) or any(isinstance(d, int) and d >= 0 and d != s
                                                    for d, s in zip(info.shape, array.shape)):
                raise InputError(f"{self.backend}: input {name!r} must have shape {shape_text(info.shape)}, not "
                                 f"{tuple(array.shape)}")
        if self.manifest is not None and len(expected) == 1:
            info = next(iter(expected.values()))
            batch, height, width = image_dims(info, feed[info.name].shape)
            problem = self.manifest.profile.check(batch, height, width)
            if problem:
                raise InputError(f"{self.backend}: input {batch}x{height}x{width} is outside the artifact's profile "
                                 f"({problem}; it takes {self.manifest.profile.describe()})")

    def layer_profile(self, feed: dict[str, np.ndarray], runs: int = 10, warmup: int = 2) -> LayerProfile:
        """Per-layer times of ``runs`` calls on ``feed`` after ``warmup`` calls, from the backend's own profiler
        (ONNX Runtime's, OpenVINO's performance counters, TensorRT's layer profiler)."""
        raise SegdeployError(f"the {self.backend} backend has no per-layer profiler; profile an exported artifact on "
                             "onnxruntime or openvino (or an engine on tensorrt)")

    def stream_calls(self, streams: int) -> list:
        """``streams`` callables (feed -> outputs), each meant for its own thread, that run this runner's artifact
        concurrently with this runner's threads shared among them: the backend's throughput mode (OpenVINO's
        THROUGHPUT hint with that many streams, parallel ONNX Runtime sessions)."""
        raise SegdeployError(f"the {self.backend} backend has no parallel streams here; time it with one stream (its "
                             "own threads), or use onnxruntime or openvino")

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


def shape_text(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def image_dims(info: TensorInfo, shape) -> tuple[int, int, int]:
    """(batch, height, width) of an image tensor's concrete ``shape`` in ``info``'s layout."""
    if info.image_layout == "NHWC":
        return int(shape[0]), int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[-2]), int(shape[-1])


def resolve_shape(info: TensorInfo, batch: int, height: int, width: int) -> tuple[int, ...]:
    """Concrete shape for an image input: named dims take the batch and the spatial size where the layout puts them
    (NCHW: 0, 2, 3; NHWC: 0, 1, 2)."""
    shape = list(info.shape)
    if info.image_layout == "NHWC":
        wanted = {0: batch, 1: height, 2: width}
    else:
        wanted = {0: batch, len(shape) - 2: height, len(shape) - 1: width}
    for i, dim in enumerate(shape):
        if not isinstance(dim, int) or dim < 0:
            if i not in wanted:
                raise InputError(f"input {info.name!r} has a dynamic dimension {i} ({dim!r}) that is neither the "
                                 "batch nor the spatial size")
            shape[i] = wanted[i]
    return tuple(shape)


def random_feed(runner: Runner, batch: int, height: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A synthetic batch for every input of ``runner``: normal(0, 1) values, i.e. already-normalised images, or
    uniform uint8 images for artifacts with the preprocessing in the graph.

    Static input dims win over the requested ones, so an artifact exported at a fixed size is fed that size.
    """
    rng = np.random.default_rng(seed)
    feed = {}
    for info in runner.inputs():
        shape = resolve_shape(info, batch, height, width)
        dtype = np.dtype(info.dtype)
        if dtype.kind == "f":
            feed[info.name] = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        else:
            feed[info.name] = rng.integers(0, 256, shape).astype(dtype)
    return feed

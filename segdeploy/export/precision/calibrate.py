"""Calibration: which images, what the FP32 graph computes on them, and the ranges the quantizers take.

Images: ``--calib DIR`` is a folder of images or a dataset folder (its training split: ADE20K ``images/training``,
Cityscapes ``leftImg8bit/train``, pairs ``images/``), so the validation split stays free for the accuracy that is
reported. ``count`` images are taken in a fixed order (evenly spaced over the sorted file list, so a count below the
folder's size still spans it); their content hashes are the calibration's provenance, and an evaluation set that
shares an image with them is refused (:func:`check_disjoint`): accuracy measured on the calibration images flatters.

Statistics: one pass of ONNX Runtime over the images with every computed float tensor as an extra output (in chunks
that fit a memory budget), accumulating per tensor its min, max and a signed histogram whose range doubles as larger
values arrive (the bins merge exactly). Movement operators (Reshape, Slice, Concat ...) are not collected: their
ranges are their input's. From one collection every method is derived: ``minmax`` (the extremes), ``percentile``
(the central ``percentile`` % of values), ``entropy`` (TensorRT's KL-divergence threshold over 128 levels). The
statistics are cached on disk under a key of the graph, the input size and the images, so the FP16, INT8-cpu and
INT8-tensorrt exports of one model share one calibration run.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from segdeploy.errors import InputError
from segdeploy.export.precision.calibration_images import CalibrationImages
from segdeploy.files.atomic import write_bytes_atomic

METHODS = ("minmax", "percentile", "entropy")
DEFAULT_METHOD = "minmax"
DEFAULT_PERCENTILE = 99.99
BINS = 4096  # signed histogram over [-R, R]; 2048 bins per sign, as TensorRT's entropy calibrator uses
MEMORY_BUDGET = 1 << 30  # bytes of extra outputs per ONNX Runtime run
STATS_VERSION = 1
# Operators whose output values are a subset (or a rearrangement) of their first input's.
PASS_THROUGH_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Slice", "Gather",
                              "GatherElements", "GatherND", "Split", "Expand", "Tile", "DepthToSpace", "SpaceToDepth",
                              "MaxPool", "ReduceMax", "ReduceMin", "Pad", "Concat", "Resize", "Upsample"})
Progress = Callable[..., None]


class TensorStats:
    """min, max and a signed histogram of one tensor's values over every calibration input."""

    __slots__ = ("low", "high", "radius", "hist")

    def __init__(self):
        self.low, self.high, self.radius = math.inf, -math.inf, 0.0
        self.hist = np.zeros(BINS, np.float64)

    def add(self, values: np.ndarray) -> None:
        values = values.reshape(-1)
        if not values.size:
            return
        finite = values[np.isfinite(values)] if not np.isfinite(values).all() else values
        if not finite.size:
            return
        low, high = float(finite.min()), float(finite.max())
        self.low, self.high = min(self.low, low), max(self.high, high)
        peak = max(abs(low), abs(high))
        if peak > self.radius:
            self._grow(peak)
        counts, _ = np.histogram(finite, bins=BINS, range=(-self.radius, self.radius))
        self.hist += counts

    def _grow(self, peak: float) -> None:
        if self.radius == 0.0:
            self.radius = 2.0 ** math.ceil(math.log2(peak)) if peak > 0 else 2.0 ** -24
            return
        k = math.ceil(math.log2(peak / self.radius))
        if k <= 0:
            return
        factor = 2 ** k
        merged = np.zeros(BINS, np.float64)
        if factor < BINS:  # old bins fall into the centre of the new range, factor at a time: exact
            width = BINS // factor
            merged[(BINS - width) // 2:(BINS + width) // 2] = self.hist.reshape(width, factor).sum(1)
        else:
            merged[BINS // 2 - 1:BINS // 2 + 1] = self.hist.sum() / 2
        self.hist, self.radius = merged, self.radius * factor


@dataclass
class RangeTable:
    """Calibration statistics of one graph: per collected tensor min/max/radius and histogram."""
    names: list[str]
    low: np.ndarray
    high: np.ndarray
    radius: np.ndarray
    hist: np.ndarray  # (tensors, BINS)
    aliases: dict[str, str]  # movement outputs -> the collected tensor whose values they carry
    provenance: dict

    def __post_init__(self):
        self._row = {name: i for i, name in enumerate(self.names)}

    def source(self, name: str) -> str | None:
        seen = set()
        while name not in self._row and name in self.aliases and name not in seen:
            seen.add(name)
            name = self.aliases[name]
        return name if name in self._row else None

    def minmax(self, name: str) -> tuple[float, float] | None:
        row = self._row.get(self.source(name) or "")
        return None if row is None else (float(self.low[row]), float(self.high[row]))

    def range(self, name: str, method: str = DEFAULT_METHOD, percentile: float = DEFAULT_PERCENTILE,
              symmetric: bool = False) -> tuple[float, float] | None:
        """The range (low, high) ``method`` gives ``name``; ``symmetric``: (-t, t) with one threshold t."""
        row = self._row.get(self.source(name) or "")
        if row is None:
            return None
        low, high = float(self.low[row]), float(self.high[row])
        if not math.isfinite(low):
            return None
        if method == "minmax":
            t = max(abs(low), abs(high))
            return (-t, t) if symmetric else (low, high)
        hist, radius = self.hist[row], float(self.radius[row])
        if method == "percentile":
            if symmetric:
                t = _abs_quantile(hist, radius, percentile / 100)
                return -t, t
            return (max(low, _signed_quantile(hist, radius, 1 - percentile / 100)),
                    min(high, _signed_quantile(hist, radius, percentile / 100)))
        if method == "entropy":
            t = _entropy_threshold(hist, radius)
            return (-t, t) if symmetric else (max(low, -t), min(high, t))
        raise InputError(f"--calib-method must be one of {', '.join(METHODS)}, not {method!r}")

    def all_minmax(self) -> dict[str, tuple[float, float]]:
        return {name: (float(self.low[i]), float(self.high[i])) for i, name in enumerate(self.names)
                if math.isfinite(self.low[i])}

    # -- cache ---------------------------------------------------------------------------------------------------
    def save(self, path: str) -> None:
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, names=np.array(self.names), low=self.low, high=self.high, radius=self.radius,
                            hist=self.hist.astype(np.float32),
                            meta=np.array(json.dumps({"aliases": self.aliases, "provenance": self.provenance,
                                                      "version": STATS_VERSION})))
        write_bytes_atomic(path, buffer.getvalue(), force=True)

    @classmethod
    def load(cls, path: str) -> RangeTable | None:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("version") != STATS_VERSION:
                    return None
                names, low, high, radius = [str(n) for n in data["names"]], data["low"], data["high"], data["radius"]
                hist = data["hist"].astype(np.float64)
                if not (len(names) == len(low) == len(high) == len(radius) == len(hist)) or hist.ndim != 2 or \
                        not isinstance(meta["aliases"], dict) or not isinstance(meta["provenance"], dict):
                    return None
                return cls(names, low, high, radius, hist, meta["aliases"], meta["provenance"])
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, RecursionError,
                zipfile.BadZipFile):
            return None  # a damaged cache entry is made again


def _signed_quantile(hist: np.ndarray, radius: float, q: float) -> float:
    cdf = np.cumsum(hist)
    if cdf[-1] <= 0:
        return 0.0
    i = int(np.searchsorted(cdf, q * cdf[-1]))
    return -radius + (min(i, BINS - 1) + 0.5) * (2 * radius / BINS)


def _folded(hist: np.ndarray) -> np.ndarray:
    half = BINS // 2
    return hist[half:] + hist[:half][::-1]


def _abs_quantile(hist: np.ndarray, radius: float, q: float) -> float:
    folded = _folded(hist)
    cdf = np.cumsum(folded)
    if cdf[-1] <= 0:
        return 0.0
    i = int(np.searchsorted(cdf, q * cdf[-1]))
    return (min(i, len(folded) - 1) + 1) * (radius / len(folded))


def _entropy_threshold(hist: np.ndarray, radius: float, levels: int = 128, step: int = 16) -> float:
    """TensorRT's entropy calibration: the |x| threshold whose 128-level quantization of the clipped distribution
    loses the least information (KL divergence), searched over bin edges from 128 to all 2048 bins."""
    folded = _folded(hist)
    n = len(folded)
    width = radius / n
    if folded.sum() <= 0:
        return radius
    last_nonzero = int(np.flatnonzero(folded)[-1]) + 1
    best, best_i = math.inf, n
    for i in range(levels, max(levels, last_nonzero) + 1, step):
        reference = folded[:i].copy()
        reference[i - 1] += folded[i:].sum()
        chunks = np.array_split(folded[:i], levels)
        expanded = []
        for chunk in chunks:
            nonzero = chunk > 0
            mean = chunk.sum() / max(1, nonzero.sum())
            expanded.append(np.where(nonzero, mean, 0.0))
        candidate = np.concatenate(expanded)
        p = reference / reference.sum()
        q = candidate / max(candidate.sum(), 1e-30)
        mask = p > 0
        divergence = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if divergence < best:
            best, best_i = divergence, i
    return (best_i + 0.5) * width


def collected_tensors(model) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """(name, estimated bytes) of the float tensors to collect, and the aliases of movement outputs."""
    from segdeploy.export.passes.graph_index import GraphIndex

    index = GraphIndex(model)
    wanted, aliases = [], {}
    for name in index.graph_inputs:
        if index.is_float(name):
            wanted.append((name, _nbytes(index.shapes.get(name))))
    for node in index.nodes:
        for name in node.output:
            if not index.is_float(name) or node.op_type == "Constant":
                continue
            first = next((i for i in node.input if index.is_float(i) and not index.is_constant(i)), None)
            if node.op_type in PASS_THROUGH_OPS and first is not None and node.op_type != "Concat":
                aliases[name] = first
            else:
                wanted.append((name, _nbytes(index.shapes.get(name))))
    return wanted, aliases


def _nbytes(shape) -> int:
    if not shape or any(d is None or d <= 0 for d in shape):
        return 4 << 20
    return 4 * int(np.prod(shape))


def chunks(tensors: list[tuple[str, int]], budget: int = MEMORY_BUDGET) -> list[list[str]]:
    out, current, size = [], [], 0
    for name, nbytes in tensors:
        if current and size + nbytes > budget:
            out.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    return out + ([current] if current else [])


def collect(model, feeds: Iterable[dict], *, total: int, threads: int | None = None,
            progress: Progress | None = None, label: str = "calibrating") -> RangeTable:
    """Run ``model`` (float32) on every feed and accumulate the statistics of its float tensors."""
    import onnx
    import onnxruntime as ort

    tensors, aliases = collected_tensors(model)
    groups = chunks(tensors)
    sessions = []
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # the graph as it is: ONNX Runtime's fusions would hide the very tensors the quantizers place Q/DQ on
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    for group in groups:
        augmented = onnx.ModelProto()
        augmented.CopyFrom(model)
        existing = {o.name for o in augmented.graph.output}
        for name in group:
            if name not in existing:
                augmented.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
        sessions.append((ort.InferenceSession(augmented.SerializeToString(), options,
                                              providers=["CPUExecutionProvider"]), group))
    stats = {name: TensorStats() for name, _ in tensors}
    for done, feed in enumerate(feeds):
        if progress is not None:
            progress(f"{label} {done}/{total}", done / max(1, total))
        for session, group in sessions:
            for name, value in zip(group, session.run(group, feed)):
                stats[name].add(np.asarray(value, dtype=np.float32))
    if progress is not None:
        progress(f"{label} {total}/{total}", 1.0)
    names = [name for name, _ in tensors]
    return RangeTable(names, np.array([stats[n].low for n in names]), np.array([stats[n].high for n in names]),
                      np.array([stats[n].radius for n in names]), np.stack([stats[n].hist for n in names]) if names
                      else np.zeros((0, BINS)), aliases, {})


def cache_key(graph_sha256: str, input_shape, images: CalibrationImages) -> str:
    payload = {"graph": graph_sha256, "input": list(input_shape), "images": images.sha256, "bins": BINS,
               "version": STATS_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def calibrate(model, images: CalibrationImages, prepare: Callable[[str], dict], *, input_shape, graph_sha256: str,
              cache_dir: str | None = None, threads: int | None = None, progress: Progress | None = None,
              label: str = "calibrating") -> tuple[RangeTable, bool]:
    """The statistics of ``model`` over ``images`` (``prepare(path)`` -> feed), from the cache when it has them.
    Returns (table, whether it came from the cache)."""
    path = None
    if cache_dir:
        path = os.path.join(cache_dir, f"{cache_key(graph_sha256, input_shape, images)}.npz")
        cached = RangeTable.load(path) if os.path.isfile(path) else None
        if cached is not None:
            return cached, True
    feeds = (prepare(p) for p in images.paths)
    table = collect(model, feeds, total=len(images.paths), threads=threads, progress=progress, label=label)
    table.provenance = images.provenance()
    if path:
        table.save(path)
    return table, False

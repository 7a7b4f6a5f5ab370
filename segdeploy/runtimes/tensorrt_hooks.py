"""The objects the TensorRT runner hands to TensorRT or wraps around it: the guard against use from two threads, the
layer profiler (with each layer's ONNX sources) and the output allocator of data-dependent outputs.
"""
from __future__ import annotations

import re
import threading

import numpy as np

from segdeploy.errors import SegdeployError
from segdeploy.runtimes.base import LayerTime


class ThreadGuard:
    """Refuses a second thread while one is inside: an execution context holds per-call state (shapes, addresses,
    the stream), so two threads sharing one would corrupt each other's results silently."""

    def __init__(self):
        self._lock = threading.Lock()

    def __enter__(self):
        if not self._lock.acquire(blocking=False):
            raise SegdeployError("this TensorRT runner is already running on another thread; an execution context "
                                 "is not thread-safe: create one runner per thread")
        return self

    def __exit__(self, *exc):
        self._lock.release()


_TRT_NODE_NAME = re.compile(r"/[^\s,()\[\]{}+]+")


def tensorrt_layer_sources(layer_name: str) -> tuple[str, ...]:
    """The ONNX node names a TensorRT layer name holds: fused layers join them with " + " or wrap them in PWN(...),
    Myelin regions read "{ForeignNode[first...last]}", reformatting layers end "... to <node>"."""
    parts = re.split(r"\.\.\.(?=/)", layer_name)  # ForeignNode[first...last]: the ellipsis is no part of a name
    names = [m.group(0) for part in parts for m in _TRT_NODE_NAME.finditer(part)]
    return tuple(dict.fromkeys(n.rstrip(".") for n in names))


def make_layer_profiler(trt):
    """A TensorRT IProfiler that keeps each layer's reported time per run, in first-seen order."""

    class LayerProfiler(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)
            self.samples: dict[str, list[float]] = {}

        def report_layer_time(self, layer_name, ms):
            self.samples.setdefault(layer_name, []).append(float(ms))  # once per layer per run

        def layers(self, runs: int) -> list[LayerTime]:
            out = []
            for name, values in self.samples.items():
                values = (values + [0.0] * runs)[:max(runs, len(values))]
                out.append(LayerTime(name, "TensorRT layer", sum(values) / max(runs, 1),
                                     tensorrt_layer_sources(name), samples=tuple(values)))
            return out

    return LayerProfiler()


def make_output_allocator(trt, torch, device):
    """A TensorRT IOutputAllocator backed by torch CUDA tensors, for outputs whose shape depends on the data."""

    class TorchOutputAllocator(trt.IOutputAllocator):
        def __init__(self):
            trt.IOutputAllocator.__init__(self)
            self.buffers, self.shapes = {}, {}

        def reallocate_output(self, tensor_name, memory, size, alignment):
            buf = self.buffers.get(tensor_name)
            if buf is None or buf.numel() < size:
                buf = torch.empty(max(int(size), 1), dtype=torch.uint8, device=device)
                self.buffers[tensor_name] = buf
            return buf.data_ptr()

        def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):
            return self.reallocate_output(tensor_name, memory, size, alignment)

        def notify_shape(self, tensor_name, shape):
            self.shapes[tensor_name] = tuple(int(d) for d in shape)

        def fetch(self, tensor_name, dtype):
            shape = self.shapes[tensor_name]
            count = int(np.prod(shape)) * np.dtype(dtype).itemsize
            raw = self.buffers[tensor_name][:count].cpu().numpy()
            return raw.view(np.dtype(dtype)).reshape(shape)

    return TorchOutputAllocator()

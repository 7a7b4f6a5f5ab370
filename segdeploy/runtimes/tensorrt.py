"""A thin TensorRT 10/11 runner: a serialized engine behind the runner contract, by tensor name.

TensorRT 10 removed the binding-index API, so everything here goes through names: ``set_input_shape``,
``set_tensor_address`` and ``execute_async_v3``. Device buffers are torch CUDA tensors owned by the runner (no
pycuda, no cuda-python needed), reused while the shapes stay the same. Timing follows trtexec: H2D, GPU compute and
D2H from CUDA events, host wall time around the whole call.

Imported only when the tensorrt backend is asked for; needs the ``tensorrt`` package, a CUDA build of torch and a GPU.
"""
from __future__ import annotations

import os
import time

import numpy as np

from segdeploy.errors import ArtifactError, InputError, SegdeployError
from segdeploy.runtimes.base import Runner, TensorInfo, Timing


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise SegdeployError("TensorRT is not installed (pip install tensorrt; needs an NVIDIA GPU)") from None
    return tensorrt


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, path: str | os.PathLike, *, device: int = 0):
        super().__init__()
        trt = _import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise SegdeployError(f"TensorRT needs a CUDA GPU, and torch {torch.__version__} sees none")
        self.trt, self.torch = trt, torch
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ArtifactError(f"engine not found: {self.path}")
        self.device = torch.device("cuda", device)
        torch.cuda.set_device(self.device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with open(self.path, "rb") as f:
            self.engine = self.runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:  # TensorRT logs the reason (version or GPU mismatch) and returns None
            raise ArtifactError(f"TensorRT {trt.__version__} cannot deserialize {self.path}: built by another "
                                "TensorRT version or for another GPU? Rebuild the engine on this machine")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(self.device)
        self._inputs, self._outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(d if d >= 0 else "?" for d in self.engine.get_tensor_shape(name))
            info = TensorInfo(name, shape, np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))).name)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs).append(info)
        self._buffers: dict = {}  # tensor name -> torch CUDA tensor, reallocated when its shape changes

    def inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    def outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    def _buffer(self, name: str, shape: tuple, dtype: str):
        torch = self.torch
        buf = self._buffers.get(name)
        if buf is None or tuple(buf.shape) != tuple(shape):
            torch_dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
            buf = torch.empty(tuple(shape), dtype=torch_dtype, device=self.device)
            self._buffers[name] = buf
            self.context.set_tensor_address(name, buf.data_ptr())
        return buf

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        names = [info.name for info in self._inputs]
        if set(feed) != set(names):
            raise InputError(f"tensorrt runner needs inputs {names}, got {sorted(feed)}")
        events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        start = time.perf_counter()
        with torch.cuda.stream(self.stream):
            events[0].record()
            for info in self._inputs:
                x = np.ascontiguousarray(feed[info.name])
                if x.dtype != np.dtype(info.dtype):
                    raise InputError(f"input {info.name!r} must be {info.dtype}, got {x.dtype}")
                if not self.context.set_input_shape(info.name, x.shape):
                    raise InputError(f"input {info.name!r}: shape {x.shape} is outside the engine's profile "
                                     f"{self.engine.get_tensor_profile_shape(info.name, 0)}")
                self._buffer(info.name, x.shape, info.dtype).copy_(torch.from_numpy(x), non_blocking=True)
            outputs = {info.name: self._buffer(info.name, tuple(self.context.get_tensor_shape(info.name)), info.dtype)
                       for info in self._outputs}
            events[1].record()
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise SegdeployError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
            events[2].record()
            host = {name: buf.cpu() for name, buf in outputs.items()}
            events[3].record()
        self.stream.synchronize()
        host_ms = (time.perf_counter() - start) * 1e3
        h2d, compute, d2h = (events[i].elapsed_time(events[i + 1]) for i in range(3))
        self.last_timing = Timing(host_ms=host_ms, h2d_ms=h2d, compute_ms=compute, d2h_ms=d2h)
        return {name: t.numpy() for name, t in host.items()}

    def peak_device_memory(self, reset: bool = False) -> int | None:
        # The engine's activation memory is allocated by TensorRT itself, outside torch's allocator; report what
        # the engine says it needs on top of the I/O buffers torch holds.
        torch = self.torch
        peak = torch.cuda.max_memory_allocated(self.device)
        if reset:
            torch.cuda.reset_peak_memory_stats(self.device)
        size = getattr(self.engine, "device_memory_size_v2", None) or getattr(self.engine, "device_memory_size", 0)
        return peak + int(size)

    def describe(self) -> dict:
        torch = self.torch
        return {"backend": self.backend, "artifact": self.path,
                "device": f"{self.device} ({torch.cuda.get_device_name(self.device)})",
                "precision": "as built", "versions": {"tensorrt": self.trt.__version__, "torch": torch.__version__}}

    def close(self) -> None:
        self._buffers.clear()
        self.context = None
        self.engine = None

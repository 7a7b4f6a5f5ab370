"""The PyTorch reference model behind the runner contract: CPU or CUDA, fp32 or fp16, NCHW or channels_last,
optionally ``torch.compile``-d, and on CUDA optionally replayed from a captured CUDA graph.

Tensor names match the ONNX export (``input`` -> ``logits``) so the same feed drives every backend.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from segdeploy.errors import InputError, SegdeployError
from segdeploy.runtimes.base import Runner, TensorInfo, Timing

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
LAYOUTS = ("nchw", "channels_last")


def build_model(name: str, checkpoint=None) -> nn.Module:
    """A registered model with the authors' checkpoint, else the deterministic golden-recipe weights.

    Random-init weights would do for timing, but recipe weights keep activations in a realistic range (no
    denormals) and make outputs comparable across backends. Stochastic options are pinned (SegNeXt's NMF bases)
    because an exported graph cannot draw random numbers either.
    """
    from segdeploy import models
    from segdeploy.export.onnx import export_options

    # the same pinned, static-shape form an exported graph has, so torch and ONNX rows time the same model
    model = models.create(name, checkpoint=checkpoint, **export_options(models.get_spec(name), dynamic=False))
    if checkpoint is None:
        models.load_recipe_weights(model, seed=0)
    return model


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, model: nn.Module | str, *, device: str = "cpu", precision: str = "fp32",
                 layout: str = "nchw", compile: bool = False, cuda_graphs: bool = False,
                 threads: int | None = None, checkpoint=None):
        super().__init__()
        if precision not in PRECISIONS:
            raise SegdeployError(f"torch precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if layout not in LAYOUTS:
            raise SegdeployError(f"torch layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise SegdeployError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA GPU")
        if self.device.type not in ("cpu", "cuda"):
            raise SegdeployError(f"torch device must be cpu or cuda[:N], not {device!r}")
        if precision == "fp16" and self.device.type != "cuda":
            raise SegdeployError("fp16 needs a CUDA device: PyTorch's CPU kernels for half are slow reference code")
        if cuda_graphs and self.device.type != "cuda":
            raise SegdeployError("CUDA graphs need a CUDA device")
        self._threads_before = None
        if threads is not None:
            # Process-wide in PyTorch: the runner sets it while it lives and close() puts the old value back.
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(threads)
        self.name = model if isinstance(model, str) else type(model).__name__
        module = build_model(model, checkpoint) if isinstance(model, str) else model
        self.num_classes = getattr(module, "num_classes", None)
        self.output_stride = getattr(getattr(module, "spec", None), "output_stride", None)
        self.precision, self.layout = precision, layout
        self.dtype = PRECISIONS[precision]
        self.memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        module = module.eval().to(self.device, self.dtype, memory_format=self.memory_format)
        self.compiled = compile
        self.module = torch.compile(module, dynamic=False) if compile else module
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple, tuple] = {}  # input shape -> (graph, static input, static output)
        self._pinned: dict[tuple, torch.Tensor] = {}  # input shape -> pinned host staging buffer (CUDA only)

    def inputs(self) -> list[TensorInfo]:
        return [TensorInfo(INPUT_NAME, ("batch", 3, "height", "width"), "float32")]

    def outputs(self) -> list[TensorInfo]:
        stride = self.output_stride
        h, w = (f"height/{stride}", f"width/{stride}") if stride else ("h", "w")
        return [TensorInfo(OUTPUT_NAME, ("batch", self.num_classes or "classes", h, w), "float32")]

    def _check_feed(self, feed: dict) -> np.ndarray:
        if set(feed) != {INPUT_NAME}:
            raise InputError(f"torch runner takes exactly one input named {INPUT_NAME!r}, got {sorted(feed)}")
        x = feed[INPUT_NAME]
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            raise InputError(f"input {INPUT_NAME!r} must be a float32 numpy array, got "
                             f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"input {INPUT_NAME!r} must have shape (N, 3, H, W), got {x.shape}")
        return x

    def _staged(self, x: np.ndarray) -> torch.Tensor:
        """``x`` copied into a pinned host buffer kept per shape, so the H2D copy is one async DMA (pinning a
        fresh buffer every call would be timed as transfer)."""
        buf = self._pinned.get(x.shape)
        if buf is None:
            buf = self._pinned[x.shape] = torch.empty(x.shape, dtype=torch.float32).pin_memory()
        buf.copy_(torch.from_numpy(x))
        return buf

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            t = t.to(self.device, non_blocking=True)
        return t.to(self.dtype).contiguous(memory_format=self.memory_format)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cuda_graphs:
            return self.module(x)
        key = tuple(x.shape)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out

    def _capture(self, x: torch.Tensor):
        # Warm up on a side stream first (lazy inits and cuDNN autotuning cannot be captured), then capture once
        # per input shape; replays reuse the captured addresses, so inputs are copied into ``static_in``.
        static_in = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.module(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.module(static_in)
        return graph, static_in, static_out

    @torch.inference_mode()
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = self._check_feed(feed)
        if self.device.type == "cuda":
            return self._infer_cuda(x)
        start = time.perf_counter()
        out = np.ascontiguousarray(self._forward(self._to_device(torch.from_numpy(x))).float().numpy())
        self.last_timing = Timing(host_ms=(time.perf_counter() - start) * 1e3)
        return {OUTPUT_NAME: out}

    def _infer_cuda(self, x: np.ndarray) -> dict[str, np.ndarray]:
        # CUDA events split the call like trtexec: H2D, compute, D2H; host_ms is the caller's wall time.
        events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        start = time.perf_counter()
        staged = self._staged(x)
        events[0].record()
        t = self._to_device(staged)
        events[1].record()
        y = self._forward(t)
        events[2].record()
        out = np.ascontiguousarray(y.float().cpu().numpy())
        events[3].record()
        torch.cuda.synchronize(self.device)
        host_ms = (time.perf_counter() - start) * 1e3
        h2d, compute, d2h = (events[i].elapsed_time(events[i + 1]) for i in range(3))
        self.last_timing = Timing(host_ms=host_ms, h2d_ms=h2d, compute_ms=compute, d2h_ms=d2h)
        return {OUTPUT_NAME: out}

    def peak_device_memory(self, reset: bool = False) -> int | None:
        if self.device.type != "cuda":
            return None
        peak = torch.cuda.max_memory_allocated(self.device)
        if reset:
            torch.cuda.reset_peak_memory_stats(self.device)
        return peak

    def describe(self) -> dict:
        device = str(self.device)
        if self.device.type == "cuda":
            device = f"{device} ({torch.cuda.get_device_name(self.device)})"
        return {"backend": self.backend, "model": self.name, "device": device, "precision": self.precision,
                "layout": self.layout, "compile": self.compiled, "cuda_graphs": self.cuda_graphs,
                "threads": torch.get_num_threads(), "versions": {"torch": torch.__version__}}

    def close(self) -> None:
        self._graphs.clear()
        self._pinned.clear()
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None
        self.module = None

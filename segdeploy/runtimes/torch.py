"""The PyTorch reference model behind the runner contract: CPU or CUDA, fp32 or fp16, NCHW or channels_last,
optionally ``torch.compile``-d, and on CUDA optionally replayed from a captured CUDA graph.

It runs the model in its deploy form (segdeploy.models.deploy): the same export switches and graph options (mask
output, uint8 image input) an exported artifact has, with the same tensor names (``input`` -> ``logits``), so the
same feed drives every backend and validate compares like with like.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from segdeploy.errors import SegdeployError
from segdeploy.models.deploy import DeployGraph, build_deploy_graph
from segdeploy.runtimes.base import Runner, TensorInfo, Timing

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
LAYOUTS = ("nchw", "channels_last")


def build_graph(name: str, checkpoint=None, outputs: str = "logits", preprocess: bool = False) -> DeployGraph:
    """A registered model in the static deploy form of an exported artifact, with the authors' checkpoint, else
    the deterministic golden-recipe weights (activations in a realistic range, outputs comparable across backends;
    stochastic options such as SegNeXt's NMF bases pinned, as an exported graph pins them)."""
    graph, _ = build_deploy_graph(name, checkpoint=checkpoint, outputs=outputs, preprocess=preprocess)
    return graph


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, model: DeployGraph | nn.Module | str, *, device: str = "cpu", precision: str = "fp32",
                 layout: str = "nchw", compile: bool = False, cuda_graphs: bool = False,
                 threads: int | None = None, checkpoint=None, outputs: str = "logits", preprocess: bool = False):
        """``model``: a registered name (built in its deploy form), a DeployGraph, or a bare segmentor (wrapped
        in a DeployGraph with logits output)."""
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
        if isinstance(model, str):
            module = build_graph(model, checkpoint, outputs, preprocess)
        elif isinstance(model, DeployGraph):
            module = model
        else:
            module = DeployGraph(model, outputs=outputs, preprocess=preprocess)
        self.graph = module
        self.name = module.spec.name
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
        g = self.graph
        if g.normalize is not None:
            return [TensorInfo(g.input_name, ("batch", "height", "width", 3), g.input_dtype, "NHWC")]
        return [TensorInfo(g.input_name, ("batch", 3, "height", "width"), g.input_dtype, "NCHW")]

    def outputs(self) -> list[TensorInfo]:
        g = self.graph
        if g.to_mask is not None:
            return [TensorInfo(g.output_name, ("batch", "height", "width"), g.output_dtype)]
        stride = g.spec.output_stride
        return [TensorInfo(g.output_name, ("batch", g.num_classes, f"height/{stride}", f"width/{stride}"),
                           g.output_dtype)]

    def _staged(self, x: np.ndarray) -> torch.Tensor:
        """``x`` copied into a pinned host buffer kept per shape, so the H2D copy is one async DMA (pinning a
        fresh buffer every call would be timed as transfer)."""
        buf = self._pinned.get(x.shape)
        if buf is None:
            buf = self._pinned[x.shape] = torch.from_numpy(np.empty_like(x)).pin_memory()
        buf.copy_(torch.from_numpy(x))
        return buf

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            t = t.to(self.device, non_blocking=True)
        if t.is_floating_point():  # uint8 images stay uint8: the graph normalises them itself
            t = t.to(self.dtype)
        return t.contiguous(memory_format=self.memory_format)

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
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed[self.graph.input_name]
        if self.device.type == "cuda":
            return self._infer_cuda(x)
        start = time.perf_counter()
        out = _to_host(self._forward(self._to_device(torch.from_numpy(np.ascontiguousarray(x)))))
        self.last_timing = Timing(host_ms=(time.perf_counter() - start) * 1e3)
        return {self.graph.output_name: out}

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
        out = _to_host(y)
        events[3].record()
        torch.cuda.synchronize(self.device)
        host_ms = (time.perf_counter() - start) * 1e3
        h2d, compute, d2h = (events[i].elapsed_time(events[i + 1]) for i in range(3))
        self.last_timing = Timing(host_ms=host_ms, h2d_ms=h2d, compute_ms=compute, d2h_ms=d2h)
        return {self.graph.output_name: out}

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


def _to_host(y: torch.Tensor) -> np.ndarray:
    """float32 logits (fp16 runs are widened, as every backend reports float32) or the mask as it is."""
    return np.ascontiguousarray((y.float() if y.is_floating_point() else y).cpu().numpy())

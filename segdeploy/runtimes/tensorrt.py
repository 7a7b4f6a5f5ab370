"""The TensorRT runner (10.x and 11.x): a segdeploy engine (or a bare trtexec plan) behind the runner contract.

What it does, in the order it does it:
- refuses a TensorRT older than 10 (JetPack 6.0's 8.6) with what to do;
- reads the engine's segdeploy header without TensorRT and refuses a foreign engine (another TensorRT release
  unless built version-compatible, another compute capability unless hardware-compatible, a Jetson engine on a
  discrete GPU or the reverse) with one line, before TensorRT tries to deserialize it; a headerless plan (trtexec,
  build_engine.sh) loads with a warning, with host code allowed since it may be version-compatible;
- loads TensorRT's plugins, sets the runtime's DLA core and, for version-compatible engines, allows the engine's
  embedded host code (the lean runtime), then checks every step (engine, execution context) for None;
- maps I/O dtypes through a table (TensorRT's ``nptype`` raises on bf16/fp8) and refuses what numpy cannot hold,
  non-linear formats and host (shape) tensors, each with one line;
- picks the optimization profile that takes the input shapes; resolves shapes with ``infer_shapes`` and hands
  data-dependent outputs an output allocator;
- stages through pinned host buffers, so the H2D/D2H events time the DMA and not a pageable copy; owns the
  engine's activation memory (a USER_MANAGED context backed by a torch tensor) so peak memory sees it, and adds
  what TensorRT itself allocated at load (weights, measured around deserialization);
- keeps the device with ``torch.cuda.device(...)`` blocks instead of changing the process-wide current device;
- warms up each new input shape, optionally replays it as a CUDA graph (not for DLA engines: a graph cannot
  capture DLA work), refuses concurrent use from two threads, and synchronizes on close.

torch CUDA tensors are the buffer layer (no pycuda, no cuda-python needed). Everything that decides something
(header check, dtype table, profile choice, refusals, runtime settings) is a function of tensorrt_checks.py, and
what TensorRT calls back (layer profiler, output allocator) is in tensorrt_hooks.py, all tested on the CPU
(tests/runtimes/test_tensorrt.py); only this module's class touches TensorRT and CUDA. The class itself runs
on the CPU in the tests too: NVIDIA's real bindings with recorders for the engine and a torch whose CUDA API works
on host memory are passed in (``trt=``, ``torch_module=``), so its inference path is the one that runs on a GPU.
"""
from __future__ import annotations

import contextlib
import os
import time
import warnings

import numpy as np

from segdeploy.errors import ArtifactError, InputError, SegdeployError
from segdeploy.runtimes.base import LayerProfile, Runner, TensorInfo, Timing
from segdeploy.runtimes.tensorrt_checks import (
    choose_profile,
    data_dependent,
    dimension_names,
    import_tensorrt,
    io_problem,
    numpy_dtype,
    preflight,
    runtime_settings,
)
from segdeploy.runtimes.tensorrt_hooks import ThreadGuard, make_layer_profiler, make_output_allocator
from segdeploy.tensorrt_host import host_platform, unsupported_release, version_tuple


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, path: str | os.PathLike, *, device: int = 0, cuda_graphs: bool = False, warmup: int = 2,
                 trt=None, torch_module=None, platform: str | None = None):
        super().__init__()
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ArtifactError(f"engine not found: {self.path}")
        trt = trt or import_tensorrt()
        if (version_tuple(trt.__version__) or (0,))[0] < 10:
            raise SegdeployError(unsupported_release(trt.__version__))
        if torch_module is None:
            import torch
        else:
            torch = torch_module
        if not torch.cuda.is_available():
            raise SegdeployError(f"TensorRT needs a CUDA GPU, and torch {torch.__version__} sees none")
        self.trt, self.torch = trt, torch
        self.device = torch.device("cuda", device)
        major, minor = torch.cuda.get_device_capability(self.device)
        self.manifest, offset, notes = preflight(self.path, trt.__version__, f"{major}.{minor}",
                                                 platform or host_platform().name)
        for note in notes:
            warnings.warn(note, stacklevel=2)
        if cuda_graphs and self.manifest is not None and self.manifest.engine.dla_core is not None:
            raise SegdeployError(f"{self.path} runs on DLA core {self.manifest.engine.dla_core}, and a CUDA graph "
                                 "cannot capture DLA work: run it without CUDA graphs")
        self.cuda_graphs, self.warmup = cuda_graphs, max(0, int(warmup))
        self._guard = ThreadGuard()
        self._closed = False
        with torch.cuda.device(self.device):
            self._load(offset)

    # -- loading -------------------------------------------------------------------------------------------------
    def _load(self, offset: int) -> None:
        trt, torch = self.trt, self.torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self.logger, "")
        self.runtime = trt.Runtime(self.logger)
        settings = runtime_settings(self.manifest.engine if self.manifest else None,
                                    int(getattr(self.runtime, "num_DLA_cores", 0)))
        if settings.dla_core is not None:
            self.runtime.DLA_core = settings.dla_core
        if settings.engine_host_code_allowed:
            self.runtime.engine_host_code_allowed = True
        with open(self.path, "rb") as f:
            f.seek(offset)
            plan = f.read()
        torch.cuda.synchronize(self.device)
        free_before = torch.cuda.mem_get_info(self.device)[0]
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:  # TensorRT logs the reason and returns None
            raise ArtifactError(f"TensorRT {trt.__version__} could not deserialize {self.path} (its log above says "
                                "why); rebuild the engine on this machine")
        del plan
        # The context's activation memory comes from torch, so the caching allocator's peak includes it.
        self.context = self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if self.context is None:
            raise SegdeployError("TensorRT could not create an execution context (out of GPU memory?)")
        torch.cuda.synchronize(self.device)
        self.engine_bytes = max(0, free_before - torch.cuda.mem_get_info(self.device)[0])
        size = int(self.engine.device_memory_size_v2)
        self._activations = torch.empty(max(size, 1), dtype=torch.uint8, device=self.device)
        self.context.set_device_memory(self._activations.data_ptr(), size)
        self.stream = torch.cuda.Stream(self.device)
        self._inputs, self._outputs = self._io_table()
        self.profiles = [{info.name: tuple(tuple(int(d) for d in s)
                                           for s in self.engine.get_tensor_profile_shape(info.name, i))
                          for info in self._inputs} for i in range(self.engine.num_optimization_profiles)]
        self._profile = 0
        self._device_buffers: dict = {}  # (name, shape) -> CUDA tensor; addresses stay fixed per shape (graphs)
        self._host_buffers: dict = {}  # (name, shape) -> pinned CPU tensor
        self._graphs: dict = {}  # (profile, input shapes) -> torch.cuda.CUDAGraph
        self._warm: set = set()
        self._allocator = None

    def _io_table(self):
        trt, engine = self.trt, self.engine
        declared = {t.name: t for t in ((self.manifest.inputs + self.manifest.outputs) if self.manifest else [])}
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape_io = bool(getattr(engine, "is_shape_inference_io", lambda n: False)(name))
            problem = io_problem(name, engine.get_tensor_format(name), engine.get_tensor_location(name), shape_io)
            if problem:
                raise ArtifactError(f"{self.path}: {problem}")
            dtype = numpy_dtype(engine.get_tensor_dtype(name).name, name)
            spec = declared.get(name)
            info = TensorInfo(name, dimension_names(engine.get_tensor_shape(name), spec.shape if spec else None),
                              dtype)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(info)
        return inputs, outputs

    # -- the runner contract -------------------------------------------------------------------------------------
    def inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    def outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise SegdeployError("this TensorRT runner is closed")
        with self._guard, self.torch.cuda.device(self.device):
            return self._run(feed)

    def _run(self, feed):
        torch, context = self.torch, self.context
        start = time.perf_counter()
        arrays = {info.name: np.ascontiguousarray(feed[info.name]) for info in self._inputs}
        shapes = {name: tuple(a.shape) for name, a in arrays.items()}
        profile = choose_profile(self.profiles, shapes)
        if profile != self._profile:
            context.set_optimization_profile_async(profile, self.stream.cuda_stream)
            self._profile = profile
        for name, shape in shapes.items():
            if not context.set_input_shape(name, shape):
                raise InputError(f"TensorRT refused input {name!r} shape {list(shape)} for profile {profile}")
        unresolved = context.infer_shapes()
        if unresolved:
            raise InputError(f"TensorRT cannot infer the shapes of {list(unresolved)} from the inputs given")
        key = (profile, tuple(sorted(shapes.items())))
        for name, array in arrays.items():
            pinned = self._host(name, array.shape, array.dtype)
            pinned.numpy()[...] = array
            context.set_tensor_address(name, self._device(name, array.shape, array.dtype).data_ptr())
        fixed, dynamic = [], []
        for info in self._outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(info.name))
            if data_dependent(shape):
                dynamic.append(info)
                context.set_output_allocator(info.name, self._output_allocator())
            else:
                fixed.append((info, shape))
                context.set_tensor_address(info.name, self._device(info.name, shape, info.dtype).data_ptr())
        events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        with torch.cuda.stream(self.stream):
            events[0].record(self.stream)
            for name, array in arrays.items():
                self._device(name, array.shape, array.dtype).copy_(self._host(name, array.shape, array.dtype),
                                                                   non_blocking=True)
            events[1].record(self.stream)
            self._execute(key, graphable=not dynamic)
            events[2].record(self.stream)
            for info, shape in fixed:
                self._host(info.name, shape, info.dtype).copy_(self._device(info.name, shape, info.dtype),
                                                               non_blocking=True)
            events[3].record(self.stream)
        self.stream.synchronize()
        results = {info.name: self._host(info.name, shape, info.dtype).numpy().copy() for info, shape in fixed}
        for info in dynamic:  # shapes known only now: copy synchronously after the run
            results[info.name] = self._allocator.fetch(info.name, info.dtype)
        h2d, compute, d2h = (events[i].elapsed_time(events[i + 1]) for i in range(3))
        self.last_timing = Timing(host_ms=(time.perf_counter() - start) * 1e3, h2d_ms=h2d, compute_ms=compute,
                                  d2h_ms=d2h, extra={"profile": profile, "cuda_graph": key in self._graphs})
        return {info.name: results[info.name] for info in self._outputs}

    def _execute(self, key, graphable: bool) -> None:
        """One enqueue; the first time a shape is seen, warm-up enqueues first (TensorRT initializes lazily, and a
        graph may be captured only after one run at the shape); with CUDA graphs, capture once and replay."""
        torch, handle = self.torch, self.stream.cuda_stream
        if key not in self._warm:
            for _ in range(self.warmup):
                self._enqueue(handle)
            self._warm.add(key)
        if not (self.cuda_graphs and graphable):
            self._enqueue(handle)
            return
        graph = self._graphs.get(key)
        if graph is None:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                self._enqueue(handle)
            self._graphs[key] = graph
        graph.replay()

    def _enqueue(self, handle) -> None:
        if not self.context.execute_async_v3(handle):
            raise SegdeployError("TensorRT execute_async_v3 failed (its log above says why)")

    def _device(self, name, shape, dtype):
        key = (name, tuple(shape))
        buf = self._device_buffers.get(key)
        if buf is None:
            buf = self.torch.empty(tuple(shape), dtype=self._torch_dtype(dtype), device=self.device)
            self._device_buffers[key] = buf
        return buf

    def _host(self, name, shape, dtype):
        key = (name, tuple(shape))
        buf = self._host_buffers.get(key)
        if buf is None:
            buf = self.torch.empty(tuple(shape), dtype=self._torch_dtype(dtype), pin_memory=True)
            self._host_buffers[key] = buf
        return buf

    def _torch_dtype(self, dtype):
        return self.torch.from_numpy(np.empty(0, dtype=np.dtype(dtype))).dtype

    def _output_allocator(self):
        if self._allocator is None:
            self._allocator = make_output_allocator(self.trt, self.torch, self.device)
        return self._allocator

    def layer_profile(self, feed: dict[str, np.ndarray], runs: int = 10, warmup: int = 2) -> LayerProfile:
        """TensorRT's layer profiler (IProfiler) on ``runs`` calls after ``warmup`` unprofiled ones, without CUDA
        graphs (a replayed graph reports no layers); layer names are the ONNX nodes TensorRT fused into each."""
        self.check_feed(feed)
        for _ in range(warmup):
            self._infer(feed)
        profiler = make_layer_profiler(self.trt)
        graphs, self.cuda_graphs = self.cuda_graphs, False
        previous = getattr(self.context, "profiler", None)
        wall = []
        try:
            self.context.profiler = profiler
            for _ in range(runs):
                self._infer(feed)
                wall.append(self.last_timing.compute_ms if self.last_timing.compute_ms is not None
                            else self.last_timing.host_ms)
        finally:
            self.cuda_graphs = graphs
            with contextlib.suppress(Exception):  # bindings that refuse None keep the profiler: later runs report
                self.context.profiler = previous  # to it, which costs a synchronization per layer, nothing more
        return LayerProfile("tensorrt", profiler.layers(runs), wall,
                            notes=["run times are the GPU compute time between CUDA events; TensorRT's profiler "
                                   "adds a synchronization per layer"])

    # -- reports and teardown -----------------------------------------------------------------------------------
    def peak_device_memory(self, reset: bool = False) -> int | None:
        """torch's peak (I/O buffers and the engine's activation memory, which this runner allocates) plus what
        TensorRT allocated itself when loading the engine (weights, measured as the drop in free memory)."""
        torch = self.torch
        peak = torch.cuda.max_memory_allocated(self.device)
        if reset:
            torch.cuda.reset_peak_memory_stats(self.device)
        return int(peak + self.engine_bytes)

    def describe(self) -> dict:
        torch, e = self.torch, (self.manifest.engine if self.manifest else None)
        return {"backend": self.backend, "artifact": self.path,
                "device": f"{self.device} ({torch.cuda.get_device_name(self.device)})",
                "precision": self.manifest.precision.mode if self.manifest else "as built (no header)",
                "engine": {"built_with": e.tensorrt_version if e else None, "gpu": e.gpu_name if e else None,
                           "profiles": len(self.profiles), "dla_core": e.dla_core if e else None,
                           "loaded_bytes": self.engine_bytes, "cuda_graphs": self.cuda_graphs},
                "versions": {"tensorrt": self.trt.__version__, "torch": torch.__version__}}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        stream = getattr(self, "stream", None)
        if stream is not None:
            stream.synchronize()  # nothing TensorRT enqueued may outlive its buffers
        self._graphs.clear()
        self._device_buffers.clear()
        self._host_buffers.clear()
        self.context = None
        self._activations = None
        self.engine = None
        self.runtime = None

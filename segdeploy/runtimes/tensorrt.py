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
(header check, dtype table, profile choice, refusals, runtime settings) is a module-level function tested on the
CPU (tests/runtimes/test_tensorrt.py); only this module's class touches TensorRT and CUDA. The class itself runs
on the CPU in the tests too: NVIDIA's real bindings with recorders for the engine and a torch whose CUDA API works
on host memory are passed in (``trt=``, ``torch_module=``), so its inference path is the one that runs on a GPU.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np

from segdeploy.artifact.engine_header import compatibility_problem, read_header
from segdeploy.artifact.reader import caveats
from segdeploy.errors import ArtifactError, InputError, SegdeployError
from segdeploy.runtimes.base import LayerProfile, LayerTime, Runner, TensorInfo, Timing
from segdeploy.tensorrt_host import host_platform, unsupported_release, version_tuple

BARE_PLAN_WARNING = ("has no segdeploy header (a bare plan from trtexec or build_engine.sh?): its TensorRT version and "
                     "GPU cannot be checked before TensorRT deserializes it, and its host code is allowed (a "
                     "version-compatible plan needs it)")

# TensorRT DataType member name -> numpy dtype name; None: TensorRT has it, numpy does not.
TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
              "BOOL": "bool", "UINT8": "uint8", "BF16": None, "FP8": None, "INT4": None, "FP4": None, "E8M0": None}


def numpy_dtype(trt_dtype_name: str, tensor: str) -> str:
    """The numpy dtype of a TensorRT I/O tensor, or one ArtifactError line for a type numpy cannot hold."""
    name = str(trt_dtype_name).rsplit(".", 1)[-1]
    if name not in TRT_DTYPES:
        raise ArtifactError(f"I/O tensor {tensor!r} has TensorRT type {name}, which this runner does not know")
    dtype = TRT_DTYPES[name]
    if dtype is None:
        raise ArtifactError(f"I/O tensor {tensor!r} is {name}, which has no numpy type: build the engine from an "
                            "artifact with float32/float16 I/O (the precision passes keep I/O types)")
    return dtype


def io_problem(tensor: str, format_name: str, location_name: str, shape_tensor: bool = False) -> str | None:
    """Why an I/O tensor cannot go through this runner's linear device buffers, or None."""
    if shape_tensor:
        return f"I/O tensor {tensor!r} is a shape tensor (host memory); this runner feeds image tensors only"
    if str(location_name).rsplit(".", 1)[-1] != "DEVICE":
        return f"I/O tensor {tensor!r} lives in host memory; this runner passes device buffers only"
    if str(format_name).rsplit(".", 1)[-1] != "LINEAR":
        return (f"I/O tensor {tensor!r} has the vectorized format {str(format_name).rsplit('.', 1)[-1]}; build the "
                "engine with linear I/O (segdeploy's builders do)")
    return None


def preflight(path: str, tensorrt_version: str, compute_capability: str, platform: str | None = None):
    """(manifest or None, plan offset, warnings) for an engine file, refusing a foreign one with one line before
    TensorRT sees it."""
    manifest, offset = read_header(path)
    if manifest is None:
        return None, 0, [f"{path} {BARE_PLAN_WARNING}"]
    problem = compatibility_problem(manifest.engine, tensorrt_version, compute_capability, platform)
    if problem:
        raise ArtifactError(f"{path}: {problem}")
    return manifest, offset, [f"{path} {note}" for note in caveats(manifest)]


@dataclass(frozen=True)
class RuntimeSettings:
    dla_core: int | None = None
    engine_host_code_allowed: bool = False


def runtime_settings(engine_info, dla_cores: int) -> RuntimeSettings:
    """What the TensorRT runtime must be told before deserializing: the DLA core an engine was built for (checked
    against the cores present), and host code for version-compatible engines (their embedded lean runtime). A bare
    plan (``engine_info`` None) says neither, so host code is allowed in case it is version-compatible (the
    warning says so)."""
    if engine_info is None:
        return RuntimeSettings(engine_host_code_allowed=True)
    if engine_info.dla_core is not None and engine_info.dla_core >= dla_cores:
        raise ArtifactError(f"the engine was built for DLA core {engine_info.dla_core}; this machine has "
                            f"{dla_cores} DLA core{'s' * (dla_cores != 1)}")
    return RuntimeSettings(engine_info.dla_core, bool(engine_info.version_compatible))


def choose_profile(profiles: list[dict], shapes: dict[str, tuple]) -> int:
    """The optimization profile for ``shapes`` (input name -> shape). ``profiles`` holds, per profile, input name
    -> (min, opt, max). Among those that take the shapes, the one whose opt is nearest (log-ratio) wins, so
    kernels tuned near the size run; one InputError line names the ranges when none takes them."""
    best, best_distance = None, math.inf
    for index, profile in enumerate(profiles):
        if not all(_inside(shapes[n], profile[n]) for n in shapes if n in profile):
            continue
        distance = sum(abs(math.log(max(d, 1) / max(o, 1))) for n, s in shapes.items() if n in profile
                       for d, o in zip(s, profile[n][1]))
        if distance < best_distance:
            best, best_distance = index, distance
    if best is None:
        ranges = " | ".join(", ".join(f"{n} {list(r[0])}..{list(r[2])}" for n, r in profile.items())
                            for profile in profiles)
        given = ", ".join(f"{n} {list(s)}" for n, s in shapes.items())
        raise InputError(f"no optimization profile of this engine takes {given}; it takes {ranges}")
    return best


def _inside(shape, profile_range) -> bool:
    lo, _, hi = profile_range
    return len(shape) == len(lo) and all(a <= d <= b for d, a, b in zip(shape, lo, hi))


def data_dependent(shape) -> bool:
    """An output whose shape is still unknown after every input shape is set (e.g. NonZero's)."""
    return any(int(d) < 0 for d in shape)


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


def dimension_names(engine_shape, manifest_shape) -> tuple:
    """The runner contract's shape: ints where static, the manifest's names (else "?") where dynamic."""
    names = list(manifest_shape) if manifest_shape is not None and len(manifest_shape) == len(engine_shape) else None
    return tuple(int(d) if int(d) >= 0 else (names[i] if names and isinstance(names[i], str) else "?")
                 for i, d in enumerate(engine_shape))


def import_tensorrt():
    try:
        import tensorrt
    except Exception as exc:  # ImportError, or an OSError when libnvinfer is missing behind the bindings
        raise SegdeployError(f"TensorRT does not load here ({type(exc).__name__}: {exc}); install it (pip install "
                             "tensorrt, or JetPack's python3-libnvinfer) on a machine with an NVIDIA GPU") from None
    return tensorrt


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

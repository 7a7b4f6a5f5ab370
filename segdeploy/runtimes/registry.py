"""Which backends exist on this machine, why the others do not, and one way to build a runner for any of them.

``doctor`` prints this; ``bench`` uses it to pick defaults and to fail with the reason instead of an ImportError.
Nothing here imports a backend's heavy package unless asked for its status (TensorRT only when probed).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import socket
from dataclasses import asdict, dataclass, field

from segdeploy.errors import SegdeployError

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
# What each backend consumes: the PyTorch model itself, or an exported artifact.
BACKEND_INPUT = {"torch": "model", "onnxruntime": "onnx", "openvino": "onnx", "tensorrt": "engine"}
# Fastest first, from the CPU matrix (benchmarks/results/vm-2026-11-21.md, FP32, 512x512, batch 1, 2 threads):
# OpenVINO was fastest on 10 of 14 models and within 3 % on the other four; both are 1.2-2.5x ahead of eager.
# OpenVINO is an optional extra, so without it ONNX Runtime (always installed) is the default.
CPU_PREFERENCE = ("openvino", "onnxruntime", "torch")

ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")


@dataclass
class BackendStatus:
    name: str
    available: bool
    version: str | None = None
    devices: list[str] = field(default_factory=list)
    reason: str = ""  # why it is unavailable, or a caveat when it is available
    consumes: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def package_version(*distributions: str) -> str | None:
    """Installed version of the first distribution found (e.g. onnxruntime or onnxruntime-gpu), without importing."""
    for dist in distributions:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _torch_status() -> BackendStatus:
    import torch

    devices = ["cpu"]
    reason = ""
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    elif torch.version.cuda is None:
        reason = f"CPU-only build of torch {torch.__version__}: no CUDA, no fp16, no CUDA graphs"
    else:
        reason = f"torch built with CUDA {torch.version.cuda} but no GPU is visible"
    return BackendStatus("torch", True, torch.__version__, devices, reason)


def _onnxruntime_status() -> BackendStatus:
    version = package_version("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")
    if version is None:
        return BackendStatus("onnxruntime", False, reason="onnxruntime is not installed (pip install onnxruntime)")
    try:
        import onnxruntime
    except ImportError as exc:
        return BackendStatus("onnxruntime", False, version, reason=f"import onnxruntime failed: {exc}")
    providers = onnxruntime.get_available_providers()
    try:
        importlib.import_module("segdeploy.runtimes.onnxruntime")
    except ImportError as exc:
        return BackendStatus("onnxruntime", False, version, providers,
                             reason=f"segdeploy's ONNX Runtime runner is missing from this install: {exc}")
    return BackendStatus("onnxruntime", True, version, providers)


def _openvino_status() -> BackendStatus:
    version = package_version("openvino")
    if version is None:
        return BackendStatus("openvino", False,
                             reason="OpenVINO is not installed (optional: pip install 'segdeploy[openvino]')")
    try:
        import openvino
        devices = openvino.Core().available_devices
    except Exception as exc:  # a broken install must not take doctor down with it
        return BackendStatus("openvino", False, version, reason=f"OpenVINO fails to start: {exc}")
    return BackendStatus("openvino", True, version, list(devices))


def _tensorrt_status() -> BackendStatus:
    # found without importing it: pip wheels by their metadata, JetPack's apt install (no pip metadata) by module
    from segdeploy import tensorrt_host

    install = tensorrt_host.find_tensorrt()
    if not install.installed:
        return BackendStatus("tensorrt", False, reason="TensorRT is not installed (pip install tensorrt, or JetPack's "
                                                       "python3-libnvinfer; needs an NVIDIA GPU with a CUDA build of "
                                                       "torch for the buffers)")
    version = install.version
    import torch

    if not torch.cuda.is_available():
        return BackendStatus("tensorrt", False, version, reason=f"TensorRT {version} ({install.source}) is installed "
                                                                f"but torch {torch.__version__} sees no CUDA GPU")
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:
        return BackendStatus("tensorrt", False, version, reason=f"import tensorrt failed: {exc}")
    devices = [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    note = "" if install.source.startswith("pip") else f"installed without pip metadata ({install.location})"
    return BackendStatus("tensorrt", True, version, devices, reason=note)


_PROBES = {"torch": _torch_status, "onnxruntime": _onnxruntime_status, "openvino": _openvino_status,
           "tensorrt": _tensorrt_status}


def backend_status(name: str) -> BackendStatus:
    if name not in _PROBES:
        raise SegdeployError(f"unknown backend {name!r}; backends: {', '.join(BACKENDS)}")
    status = _PROBES[name]()
    status.consumes = BACKEND_INPUT[name]
    return status


def all_backends() -> list[BackendStatus]:
    return [backend_status(name) for name in BACKENDS]


def require_backend(name: str) -> BackendStatus:
    status = backend_status(name)
    if not status.available:
        raise SegdeployError(f"backend {name} is not usable here: {status.reason}")
    return status


def fastest_cpu_backend() -> str:
    """The CPU backend to use by default: the fastest that is usable here (see CPU_PREFERENCE)."""
    for name in CPU_PREFERENCE:
        if backend_status(name).available:
            return name
    return "torch"


def create_runner(backend: str, *, model=None, artifact=None, device: str = "cpu", precision: str = "fp32",
                  threads: int | None = None, **options):
    """Build a runner: ``model`` (a registered name or nn.Module) for torch, ``artifact`` (a file) for the others.

    ``options`` are backend-specific (torch: layout, compile, cuda_graphs; onnxruntime: graph_optimization,
    providers; openvino: hint).
    """
    require_backend(backend)
    if BACKEND_INPUT[backend] == "model":
        if model is None:
            raise SegdeployError("the torch backend runs a registered model: pass --model, not an artifact")
        from segdeploy.runtimes.torch import TorchRunner

        return TorchRunner(model, device=device, precision=precision, threads=threads, **options)
    if artifact is None:
        raise SegdeployError(f"the {backend} backend runs an exported artifact; export it first")
    if device not in ("cpu", "CPU") and backend != "tensorrt":
        raise SegdeployError(f"{backend} runs on the CPU here, not {device!r}")
    if backend == "onnxruntime":
        if precision != "fp32":
            raise SegdeployError("onnxruntime runs the artifact's own precision; export an fp16 model for fp16")
        from segdeploy.runtimes.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(artifact, threads=threads, **options)
    if backend == "openvino":
        from segdeploy.runtimes.openvino import OpenVinoRunner

        return OpenVinoRunner(artifact, precision=precision, threads=threads, **options)
    from segdeploy.runtimes.tensorrt import TensorRTRunner

    index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    return TensorRTRunner(artifact, device=index, **options)


# ----------------------------------------------------------------------------------------------------------------
# The machine the backends run on


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def cpu_info() -> dict:
    """CPU model, logical/physical/usable cores and the ISA extensions that decide which kernels run."""
    cpuinfo = _read("/proc/cpuinfo")
    model, flags, cores = None, set(), set()
    physical_id = core_id = None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Model") and model is None:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
            cores.add((physical_id, core_id))
    logical = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    return {"model": model or platform.processor() or platform.machine(), "arch": platform.machine(),
            "logical_cores": logical, "physical_cores": len(cores) or None, "usable_cores": usable,
            "isa": [f for f in ISA_FLAGS if f in flags]}


def memory_total_mb() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024
    return None


def library_versions() -> dict:
    names = {"segdeploy": ("segdeploy",), "torch": ("torch",), "numpy": ("numpy",), "onnx": ("onnx",),
             "onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "openvino": ("openvino",),
             "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"), "onnxsim": ("onnxsim", "onnx-simplifier"),
             "onnxslim": ("onnxslim",), "matplotlib": ("matplotlib",)}
    return {key: package_version(*dists) for key, dists in names.items()}


def machine_info() -> dict:
    """Everything a benchmark number depends on besides the model: host, CPU, memory, load, libraries, GPUs."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []
    return {"host": socket.gethostname(), "os": platform.platform(), "python": platform.python_version(),
            "cpu": cpu_info(), "memory_mb": memory_total_mb(),
            "load_average": None if load is None else [round(v, 2) for v in load],
            "torch_threads": torch.get_num_threads(), "gpus": gpus, "versions": library_versions()}

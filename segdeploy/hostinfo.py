"""The machine segdeploy runs on: CPU model, cores and ISA, memory, load, GPUs and library versions.

Benchmarks record these next to every number (a figure means little without the CPU and its load), doctor prints
them, and artifacts record the tool versions that made them.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import sys

from segdeploy import __version__, backends, flavours
from segdeploy.backends import ONNXRUNTIME, OPENVINO, TENSORRT, TORCH

ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimddp", "i8mm", "sve", "sve2")
# CPU features with int8 dot-product instructions: without one of them, int8 GEMMs emulate the dot product with
# widening multiplies and run no faster than float32 (measured on an AVX2-only CPU: INT8 no faster than FP32).
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")

# distribution names that provide each importable module (onnxruntime has several builds under one module name)
_BACKEND = {name: b.distributions for name, b in backends.BACKENDS.items()}
DISTRIBUTIONS = {
    "segdeploy": ("segdeploy",), TORCH: _BACKEND[TORCH], "numpy": ("numpy",), "onnx": ("onnx",),
    ONNXRUNTIME: _BACKEND[ONNXRUNTIME], OPENVINO: _BACKEND[OPENVINO], TENSORRT: _BACKEND[TENSORRT],
    "onnxsim": ("onnxsim", "onnx-simplifier"), "onnxslim": ("onnxslim",), "matplotlib": ("matplotlib",),
}
DISTRIBUTIONS.update({name: found for name, found in _BACKEND.items() if name not in DISTRIBUTIONS})  # a new backend


def installed_distributions(module: str) -> dict[str, str]:
    """Every installed distribution that provides ``module``, with its version (two onnxruntime builds clash)."""
    found = {}
    for dist in DISTRIBUTIONS.get(module, (module,)):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def package_version(module: str) -> str | None:
    """The installed version of ``module``'s distribution (the first found), without importing it."""
    found = installed_distributions(module)
    return next(iter(found.values()), None)


def library_versions() -> dict[str, str | None]:
    return {module: package_version(module) for module in DISTRIBUTIONS}


def tool_versions() -> dict[str, str | None]:
    """The versions recorded in an artifact's manifest: what made it, nothing about the host."""
    versions = {"segdeploy": __version__, "python": ".".join(map(str, sys.version_info[:3]))}
    for module in (TORCH, "onnx", ONNXRUNTIME, "numpy", "onnxsim", "onnxslim"):
        versions[module] = package_version(module)
    return versions


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def cpu_info() -> dict:
    """CPU model, logical/physical/usable cores and the ISA extensions that decide which kernels run."""
    model, flags, cores = None, set(), set()
    physical_id = None
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Model") and model is None:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            cores.add((physical_id, value))
    logical = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    isa = [f for f in ISA_FLAGS if f in flags]
    return {"model": model or platform.processor() or platform.machine(), "arch": platform.machine(),
            "logical_cores": logical, "physical_cores": len(cores) or None, "usable_cores": usable, "isa": isa,
            "int8_dot_product": [f for f in INT8_DOT_PRODUCT_FLAGS if f in flags]}


def int8_speed_note(cpu: dict) -> str:
    """Whether INT8 can be expected to beat FP32 on this CPU, in one sentence."""
    if cpu.get("int8_dot_product"):
        cpu_flavours = ", ".join(f"--target {f.name} for {backends.label(f.fast_on[0])}"
                                 for f in flavours.FLAVOURS.values() if not f.builds_engine)
        return (f"int8 dot-product instructions present ({', '.join(cpu['int8_dot_product'])}): INT8 can be faster "
                f"in the flavour made for the runtime ({cpu_flavours})")
    return ("no int8 dot-product instructions (no AVX-512 VNNI, AVX-VNNI, AMX or Arm dot product): INT8 runs no "
            "faster than FP32 here; use it for size, not speed")


def memory_total_mb() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024
    return None


def memory_available_bytes() -> int | None:
    """Memory this process can still use: the kernel's MemAvailable, or less where a cgroup (a container's memory
    limit) leaves less."""
    available = None
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
    room = _cgroup_room()
    if room is not None:
        available = room if available is None else min(available, room)
    return available


def _cgroup_room() -> int | None:
    """limit - usage of this process's memory cgroup (v2, else v1); None without a limit."""
    lines = _read("/proc/self/cgroup").splitlines()
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[0] == "0" and parts[1] == "":  # v2
            base = "/sys/fs/cgroup" + parts[2].rstrip("/")
            limit, usage = _read(base + "/memory.max").strip(), _read(base + "/memory.current").strip()
            if limit.isdigit() and usage.isdigit():
                return max(0, int(limit) - int(usage))
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and "memory" in parts[1].split(","):  # v1
            base = "/sys/fs/cgroup/memory" + parts[2].rstrip("/")
            limit = _read(base + "/memory.limit_in_bytes").strip()
            usage = _read(base + "/memory.usage_in_bytes").strip()
            if limit.isdigit() and usage.isdigit() and int(limit) < (1 << 60):
                return max(0, int(limit) - int(usage))
    return None


def gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def machine_info() -> dict:
    """Everything a benchmark number depends on besides the model: host, CPU, memory, load, libraries, GPUs."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"host": socket.gethostname(), "os": platform.platform(), "python": platform.python_version(),
            "cpu": cpu_info(), "memory_mb": memory_total_mb(),
            "load_average": None if load is None else [round(v, 2) for v in load],
            "torch_threads": torch.get_num_threads(), "gpus": gpus(), "versions": library_versions()}

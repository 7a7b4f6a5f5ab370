"""What TensorRT and which NVIDIA GPU this machine has, found without importing TensorRT or touching the GPU.

Both the engine builder (export) and the TensorRT runner (runtimes) need these facts, so they live in the core
layer. Every probe takes its system calls as parameters (metadata lookup, module search, file reads, subprocess),
so the decisions, including JetPack's apt-installed TensorRT that has no pip metadata, are tested on any machine.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform as _platform
import re
import shutil
import subprocess
from dataclasses import dataclass

# pip distributions that install the ``tensorrt`` module (the meta package, the CUDA-specific wheels and the
# bindings-only wheels); the first one found names the installed version.
TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13-bindings",
                          "tensorrt-cu12-bindings", "tensorrt-cu11-bindings", "tensorrt_lean", "tensorrt_dispatch")
# JetPack puts trtexec here and not on PATH.
JETSON_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
# Jetson SoCs (the last entry of /proc/device-tree/compatible) and their GPU's compute capability.
TEGRA_COMPUTE_CAPABILITY = {"tegra194": "7.2", "tegra234": "8.7", "tegra264": "11.0"}


def version_tuple(text: str | None) -> tuple[int, ...]:
    """(10, 3, 0) for "10.3.0.26"; digits only, so "11.4.1.post1" reads as (11, 4, 1); () for None or junk."""
    parts = []
    for piece in str(text or "").split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def unsupported_release(tensorrt_version: str) -> str:
    """One line for a TensorRT older than 10 (JetPack 6.0 ships 8.6.2) saying what to do."""
    text = f"segdeploy builds and runs engines with TensorRT 10 or 11, not {tensorrt_version}"
    if version_tuple(tensorrt_version)[:2] == (8, 6):
        text += (": JetPack 6.0 ships TensorRT 8.6; upgrade the Jetson to JetPack 6.1 or 6.2 (TensorRT 10.3), or run "
                 "the ONNX artifact with ONNX Runtime there")
    return text


@dataclass(frozen=True)
class TensorRTInstall:
    version: str | None  # None: not installed
    source: str  # "pip:<distribution>", "system" (no pip metadata, e.g. JetPack's apt packages) or "absent"
    location: str | None = None

    @property
    def installed(self) -> bool:
        return self.version is not None

    @property
    def major(self) -> int | None:
        return (version_tuple(self.version) or (None,))[0]


_VERSION_LINE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)


def find_tensorrt(metadata_version=importlib.metadata.version, find_spec=importlib.util.find_spec,
                  read_text=None) -> TensorRTInstall:
    """The TensorRT Python package installed here, without importing it (an import needs libnvinfer and may abort
    on a machine without a GPU).

    pip wheels carry metadata. JetPack's ``python3-libnvinfer`` apt package installs the module into dist-packages
    without any, so a module found on the path is read for its ``__version__`` line instead of being reported as
    absent.
    """
    read_text = read_text or _read_text
    for dist in TENSORRT_DISTRIBUTIONS:
        try:
            return TensorRTInstall(metadata_version(dist), f"pip:{dist}")
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        spec = find_spec("tensorrt")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return TensorRTInstall(None, "absent")
    match = _VERSION_LINE.search(read_text(spec.origin) or "")
    return TensorRTInstall(match.group(1) if match else "unknown", "system", os.path.dirname(spec.origin))


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(1 << 16)
    except OSError:
        return ""


def find_trtexec(which=shutil.which, isfile=os.path.isfile) -> str | None:
    """trtexec on PATH, else where JetPack installs it."""
    found = which("trtexec")
    if found:
        return found
    return JETSON_TRTEXEC if isfile(JETSON_TRTEXEC) else None


_TRTEXEC_BANNER = re.compile(r"\[TensorRT v(\d+)\]")


def trtexec_version_from_banner(text: str) -> str | None:
    """The TensorRT version in trtexec's first line, ``&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # ...``.

    The number is NV_TENSORRT_VERSION: major * 10000 + minor * 100 + patch since TensorRT 10 (8.x printed
    major * 1000 + minor * 100 + patch, e.g. v8601)."""
    match = _TRTEXEC_BANNER.search(text or "")
    if not match:
        return None
    n = int(match.group(1))
    if n >= 100000:
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"


def trtexec_version(path: str, run=subprocess.run) -> str | None:
    """Ask trtexec for its version (``--help`` prints the banner first and needs no GPU)."""
    try:
        done = run([path, "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return trtexec_version_from_banner((done.stdout or "") + (done.stderr or ""))


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7"


def jetson_gpu(compatible: str, model: str = "") -> GpuInfo | None:
    """A Jetson's GPU from its device tree (``/proc/device-tree/compatible`` is NUL-separated, SoC last), for
    machines where neither torch nor nvidia-smi can tell."""
    for entry in reversed([e for e in compatible.replace("\x00", "\n").split("\n") if e.strip()]):
        soc = entry.strip().split(",")[-1]
        if soc in TEGRA_COMPUTE_CAPABILITY:
            return GpuInfo(model.strip("\x00 \n") or f"NVIDIA Jetson ({soc})", TEGRA_COMPUTE_CAPABILITY[soc])
    return None


def parse_nvidia_smi(text: str, index: int = 0) -> GpuInfo | None:
    """One GPU from ``nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader``."""
    rows = [line.rsplit(",", 1) for line in (text or "").strip().splitlines() if "," in line]
    if index >= len(rows):
        return None
    name, cc = (part.strip() for part in rows[index])
    return GpuInfo(name, cc) if re.fullmatch(r"\d+\.\d+", cc) else None


def gpu_info(index: int = 0, *, torch_module=None, run=subprocess.run, read_text=None) -> GpuInfo | None:
    """Name and compute capability of GPU ``index``: from torch when it sees CUDA, else nvidia-smi, else a
    Jetson's device tree; None when none of them can tell."""
    read_text = read_text or _read_text
    torch = torch_module
    if torch is None:
        try:
            import torch
        except ImportError:
            torch = None
    if torch is not None and torch.cuda.is_available() and index < torch.cuda.device_count():
        major, minor = torch.cuda.get_device_capability(index)
        return GpuInfo(torch.cuda.get_device_name(index), f"{major}.{minor}")
    try:
        done = run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True,
                   text=True, timeout=30)
        found = parse_nvidia_smi(done.stdout, index) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        found = None
    if found is not None:
        return found
    if index == 0:
        return jetson_gpu(read_text("/proc/device-tree/compatible"), read_text("/proc/device-tree/model"))
    return None


@dataclass(frozen=True)
class Platform:
    """Where an engine is built or run: the CPU architecture and whether it is a Jetson (an integrated Tegra GPU,
    which runs neither hardware-compatible engines nor engines built for discrete GPUs)."""
    machine: str  # "x86_64", "aarch64", ...
    jetson: bool = False

    @property
    def name(self) -> str:
        """What the engine header records: "jetson", else the architecture."""
        return "jetson" if self.jetson else self.machine


def host_platform(machine=_platform.machine, read_text=None, isfile=os.path.isfile) -> Platform:
    """This machine's platform; a Jetson is told by L4T's release file or a Tegra SoC in its device tree."""
    read_text = read_text or _read_text
    arch = (machine() or "unknown").lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    jetson = arch == "aarch64" and (isfile("/etc/nv_tegra_release") or
                                    jetson_gpu(read_text("/proc/device-tree/compatible")) is not None)
    return Platform(arch, jetson)

"""The backends segdeploy knows, one record each: the facts every layer may ask without running anything.

A record says what the backend consumes (the PyTorch model, an ONNX graph or an engine), which precisions it can be
asked for, where it runs, how it is installed and what it can do (capabilities as fields, so that callers ask
``get(name).execution_providers`` instead of comparing names). This is the one module besides the flavour table
and the backends' own modules that spells a backend's name; ``runtimes/registry.py`` adds each one's probe and
runner factory. Nothing here imports a backend's package: the command line's help and argument checks read it.
"""
from __future__ import annotations

from dataclasses import dataclass

TORCH = "torch"
ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"
TENSORRT = "tensorrt"


@dataclass(frozen=True)
class Backend:
    name: str  # --backend, and the Python module it imports
    label: str  # how its makers write it
    consumes: str  # "model" | "onnx" | "engine" (artifact kinds, as in segdeploy.artifact.formats)
    # the precisions it can be asked to compute in; artifacts run the precision their graph carries
    precisions: tuple[str, ...]
    devices: str  # what --device takes, for messages
    cpu_rank: int | None = None  # order among the CPU backends, fastest first (None: not a CPU backend)
    install_hint: str = ""
    distributions: tuple[str, ...] = ()  # the pip distributions that provide its module
    precision_hint: bool = False  # an ONNX artifact runs in an inference precision it is asked for (bf16, fp16)
    execution_providers: bool = False  # takes a list of execution providers
    streams: bool = False  # runs parallel streams of one artifact (bench --streams)
    triton_platform: str | None = None  # Triton's platform name for what it consumes
    plot_marker: str = "D"  # its marker in bench's plots

    @property
    def on_gpu(self) -> bool:
        return self.devices.startswith("cuda")


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend(TORCH, "PyTorch", "model", ("fp32", "fp16"), "cpu or cuda[:N]", cpu_rank=2, distributions=("torch",),
            plot_marker="^"),
    Backend(ONNXRUNTIME, "ONNX Runtime", "onnx", ("fp32",), "cpu", cpu_rank=1,
            install_hint="pip install onnxruntime (onnxruntime-gpu on NVIDIA machines)",
            distributions=("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                           "onnxruntime-rocm", "onnxruntime-silicon"),
            execution_providers=True, streams=True, triton_platform="onnxruntime_onnx", plot_marker="o"),
    # OpenVINO's inference precision hint: fp32 by default (its CPU default is bf16 where the CPU has it)
    Backend(OPENVINO, "OpenVINO", "onnx", ("fp32", "bf16", "fp16"), "cpu", cpu_rank=0,
            install_hint="pip install 'segdeploy[openvino]'", distributions=("openvino",), precision_hint=True,
            streams=True, plot_marker="s"),
    Backend(TENSORRT, "TensorRT", "engine", ("fp32",), "cuda[:N]", install_hint="pip install tensorrt (NVIDIA GPU)",
            distributions=("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"),
            triton_platform="tensorrt_plan"),
)}
TRITON_PLATFORMS = tuple(b.name for b in BACKENDS.values() if b.triton_platform)  # --platform's choices


def get(name: str) -> Backend:
    """The record of ``name``; KeyError for an unknown name (runtimes.registry.get_backend says it in one line)."""
    return BACKENDS[name]


def label(name: str) -> str:
    return BACKENDS[name].label if name in BACKENDS else name

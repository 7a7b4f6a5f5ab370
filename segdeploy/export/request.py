"""What an export is asked to make, as one typed value: `segdeploy export` turns its flags into an ExportRequest and
hands it to export.run, which carries it out; nothing below the command reads the flags themselves.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from segdeploy import backends
from segdeploy.export.precision import PrecisionOptions
from segdeploy.export.tensorrt import BUILDERS
from segdeploy.export.tensorrt.plan import BuildOptions
from segdeploy.export.trace import DEFAULT_OPSET

DEFAULT_REPOSITORY = os.path.join("artifacts", "triton")


@dataclass(frozen=True)
class ExportRequest:
    model: str | None  # a registered model; None with from_onnx
    fmt: str = "onnx"  # a key of artifact.formats.FORMATS
    output: str | None = None  # onnx: the artifact; trt: the engine or bundle; triton: the repository folder
    from_onnx: str | None = None  # trt/triton: build on this ONNX artifact instead of exporting one
    # the ONNX export
    checkpoint: str | None = None
    height: int = 512
    width: int = 512
    batch: int = 1
    dynamic: bool = False
    opset: int = DEFAULT_OPSET
    simplify: bool = True
    outputs: str = "logits"  # "logits" | "mask"
    preprocess: bool = False
    precision: PrecisionOptions = field(default_factory=PrecisionOptions)
    force: bool = False
    validate: bool = True
    threads: int | None = None
    # TensorRT (--fmt trt; --fmt triton on tensorrt_plan)
    build: BuildOptions = field(default_factory=BuildOptions)
    builders: tuple[str, ...] = BUILDERS
    engine_format: str | None = None  # "engine" | "plan"; None: from the output's suffix
    # Triton (--fmt triton)
    platform: str = backends.ONNXRUNTIME  # one of backends.TRITON_PLATFORMS
    instance_kind: str = "auto"
    instances: int = 1

    @property
    def repository(self) -> str:
        """--fmt triton's model repository folder."""
        return self.output or DEFAULT_REPOSITORY

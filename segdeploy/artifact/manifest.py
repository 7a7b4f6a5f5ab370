"""The artifact manifest: what an exported artifact is, typed and versioned, in one definition.

Every consumer (runtimes, validate, bench, eval, the TensorRT builder, Triton, the C++ library) reads an artifact's
description through :func:`read_manifest` and gets a :class:`Manifest`, never a loose dict. The same document is
written as the JSON sidecar ``<artifact>.json``, embedded in the ONNX ``metadata_props`` under
:data:`ONNX_METADATA_KEY`, and carried in an engine's header. ``manifest.schema.json`` (shipped beside this module)
is its JSON Schema: the reader validates every document against it before building the dataclasses, so a lying or
malformed manifest is one clear line, not a KeyError three modules later.

Nothing time- or host-dependent goes into an ONNX artifact's manifest, so the same export gives a byte-identical
file. Engine facts (TensorRT version, GPU) are host facts by nature and live in ``engine`` only.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from segdeploy.artifact.manifest_schema import SCHEMA_VERSION, build, check_document, check_finite
from segdeploy.errors import ArtifactError

ONNX_METADATA_KEY = "segdeploy.manifest"
PRECISIONS = ("fp32", "fp16", "int8")
FORMATS = ("onnx", "engine")


@dataclass
class ModelInfo:
    name: str
    family: str
    variant: str
    num_classes: int
    class_names: list[str]
    palette: list[list[int]]


@dataclass
class Weights:
    source: str  # "recipe" | "checkpoint" | "unknown"
    sha256: str
    file: str | None = None
    seed: int | None = None
    note: str = ""


@dataclass
class Precision:
    mode: str = "fp32"  # "fp32" | "fp16" | "int8"
    # int8 only: "tensorrt" (symmetric Q/DQ, fp16 elsewhere) | "cpu" (uint8 activations, ONNX Runtime's fused form) |
    # "openvino" (symmetric Q/DQ on the compute layers, fp32 elsewhere)
    flavour: str | None = None
    io_dtype: str = "float32"
    # what the precision pass decided: float islands, nodes kept in float and why, calibration provenance, accuracy
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Axis:
    """A dynamic dimension of one tensor and the range an artifact promises to take (TensorRT's min/opt/max)."""
    axis: int
    name: str
    min: int
    opt: int
    max: int


@dataclass
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    layout: str  # "NCHW" | "NHWC" (inputs); "NCHW" (logits) | "NHW" (masks)
    shape: list[int | str]  # ints for static dims, names for dynamic ones
    dynamic_axes: list[Axis] = field(default_factory=list)
    channel_order: str | None = None  # image inputs: "RGB" | "BGR"
    kind: str | None = None  # "image" | "tensor" (inputs); "logits" | "mask" (outputs)
    stride: int | None = None  # outputs: input pixels per output pixel (logits: the head's stride, masks: 1)
    semantics: str = ""

    def axis(self, index: int) -> Axis | None:
        return next((a for a in self.dynamic_axes if a.axis == index), None)

    def shapes(self) -> dict[str, list[int]]:
        """The min/opt/max concrete shapes of this tensor (static dims repeat in all three)."""
        out = {}
        for which in ("min", "opt", "max"):
            dims = []
            for i, dim in enumerate(self.shape):
                ax = self.axis(i)
                if ax is not None:
                    dims.append(getattr(ax, which))
                elif isinstance(dim, int):
                    dims.append(dim)
                else:
                    raise ArtifactError(f"tensor {self.name!r}: dimension {i} ({dim!r}) is dynamic but has no range")
            out[which] = dims
        return out


@dataclass
class Range:
    min: int
    opt: int
    max: int

    def __contains__(self, value: int) -> bool:
        return self.min <= value <= self.max


@dataclass
class Profile:
    """The input sizes an artifact takes: batch, height and width ranges (min = opt = max when static)."""
    batch: Range
    height: Range
    width: Range
    multiple: int

    @property
    def static(self) -> bool:
        return all(r.min == r.max for r in (self.batch, self.height, self.width))

    @property
    def opt(self) -> tuple[int, int, int]:
        return self.batch.opt, self.height.opt, self.width.opt

    def check(self, batch: int, height: int, width: int) -> str | None:
        """Why (batch, height, width) is outside the profile, or None when it is inside."""
        problems = []
        for what, value, r in (("batch", batch, self.batch), ("height", height, self.height),
                               ("width", width, self.width)):
            if value not in r:
                problems.append(f"{what} {value} outside {r.min}-{r.max}")
        if self.multiple > 1 and (height % self.multiple or width % self.multiple):
            problems.append(f"{height}x{width} is not a multiple of {self.multiple}")
        return "; ".join(problems) or None

    def describe(self) -> str:
        if self.static:
            return f"{self.batch.opt}x{self.height.opt}x{self.width.opt} (static)"
        return (f"batch {self.batch.min}-{self.batch.max}, H {self.height.min}-{self.height.max}, "
                f"W {self.width.min}-{self.width.max} (multiples of {self.multiple}; opt "
                f"{self.batch.opt}x{self.height.opt}x{self.width.opt})")


@dataclass
class Resize:
    """The test resize policy (mmseg's ``Resize(scale=(2048, 512), keep_ratio=True)``), then each side rounded to
    the nearest multiple of ``round_to``. Static artifacts ignore it: images are resized to their fixed size."""
    kind: str = "fit"
    scale: list[int] = field(default_factory=lambda: [2048, 512])
    round_to: int = 32
    interpolation: str = "bilinear"


@dataclass
class Preprocessing:
    in_graph: bool
    mean: list[float]
    std: list[float]
    channel_order: str  # the order the network's first conv expects ("RGB"); images are read as BGR
    size_multiple: int
    align_corners: bool
    resize: Resize = field(default_factory=Resize)
    description: str = ""


@dataclass
class ExportInfo:
    opset: int
    exporter: str
    dynamic: bool
    outputs: str  # "logits" | "mask"
    preprocess: bool
    simplify: bool
    simplifier: str | None
    model_options: dict[str, Any]
    hazards: list[str]
    passes: list[dict[str, Any]]
    nodes: int
    nodes_traced: int
    initializers: int


@dataclass
class EngineInfo:
    """Facts of a built TensorRT engine (filled by the engine builder, read before deserializing)."""
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    onnx_sha256: str
    builder: str  # "tensorrt-python" | "trtexec"
    version_compatible: bool = False
    hardware_compatibility: str = "none"  # "none" | "ampere_plus" | "same_compute_capability"
    dla_core: int | None = None
    gpu_fallback: bool = False
    strongly_typed: bool = True
    profiles: list[dict[str, Any]] = field(default_factory=list)
    workspace_mb: int | None = None
    opt_level: int | None = None
    plan_sha256: str | None = None
    tf32: bool = False  # FP32 layers allowed to run as TF32 (export --tf32); False: TensorRT's TF32 flag cleared
    platform: str | None = None  # where it was built: "x86_64", "aarch64" or "jetson" (None: not recorded)


@dataclass
class Manifest:
    model: ModelInfo
    weights: Weights
    precision: Precision
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    profile: Profile
    preprocessing: Preprocessing
    export: ExportInfo
    graph_sha256: str
    tool_versions: dict[str, str | None]
    validation: dict[str, Any]
    format: str = "onnx"
    engine: EngineInfo | None = None
    schema_version: int = SCHEMA_VERSION

    # -- the I/O table -------------------------------------------------------------------------------------------
    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    @property
    def output(self) -> TensorSpec:
        return self.outputs[0]

    @property
    def dynamic(self) -> bool:
        return self.export.dynamic

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    # -- (de)serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, two-space indent, trailing newline): the sidecar's bytes. A manifest holding
        NaN or Infinity is refused: JSON has no such numbers, and no reader would take it back."""
        check_finite(self.to_dict(), "the manifest")
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> Manifest:
        check_document(data, source)
        return build(cls, data)

    def replace(self, **changes) -> Manifest:
        return dataclasses.replace(self, **changes)

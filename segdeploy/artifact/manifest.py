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
import functools
import json
import math
import os
import typing
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from segdeploy import flavours
from segdeploy.errors import ArtifactError

SCHEMA_VERSION = 2
# Untyped metadata written by segdeploy 0.1 (one metadata_props entry per key); recognised only to refuse it clearly.
LEGACY_METADATA_KEY = "segdeploy_metadata_version"
ONNX_METADATA_KEY = "segdeploy.manifest"

PRECISIONS = ("fp32", "fp16", "int8")
INT8_FLAVOURS = flavours.NAMES
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
        _check_finite(self.to_dict(), "the manifest")
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> Manifest:
        check_document(data, source)
        return _build(cls, data)

    def replace(self, **changes) -> Manifest:
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------------------------------------------
# Validation against the shipped JSON Schema


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(resources.files("segdeploy.artifact").joinpath("manifest.schema.json").read_text("utf-8"))


def check_document(data: Any, source: str = "manifest") -> None:
    """Raise ArtifactError with one line when ``data`` is not a manifest of this schema version."""
    if not isinstance(data, dict):
        raise ArtifactError(f"{source}: a manifest is a JSON object, not {type(data).__name__}")
    if LEGACY_METADATA_KEY in data and "schema_version" not in data:
        raise ArtifactError(f"{source} was written by segdeploy 0.1 (untyped metadata version "
                            f"{data[LEGACY_METADATA_KEY]!r}); this segdeploy reads manifest schema {SCHEMA_VERSION}: "
                            "export the artifact again")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        from segdeploy import __version__

        if isinstance(version, int) and version > SCHEMA_VERSION:
            hint = "it was written by a newer segdeploy: upgrade segdeploy to read it"
        else:
            hint = "export the artifact again with this segdeploy"
        raise ArtifactError(f"{source} has manifest schema_version {version!r}; segdeploy {__version__} reads "
                            f"schema {SCHEMA_VERSION}: {hint}")
    _check_finite(data, source)
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise ArtifactError(f"{source}: invalid manifest at {where}: {_short(first.message)}{more}")
    _check_consistency(data, source)


def _check_finite(value, where: str) -> None:
    """Refuse NaN and Infinity anywhere in a document (Python's json writes them; JSON and every reader refuse)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ArtifactError(f"{where} holds {value!r}, which JSON cannot hold: refused rather than written")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}/{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, f"{where}/{i}")


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_consistency(data: dict, source: str) -> None:
    """What a schema cannot say: the parts of one manifest must agree with each other."""
    model = data["model"]
    k = model["num_classes"]
    if len(model["class_names"]) != k:
        raise ArtifactError(f"{source}: {len(model['class_names'])} class names for {k} classes")
    if len(model["palette"]) != k:
        raise ArtifactError(f"{source}: {len(model['palette'])} palette colours for {k} classes")
    precision = data["precision"]
    if precision["mode"] == "int8" and precision.get("flavour") not in INT8_FLAVOURS:
        raise ArtifactError(f"{source}: an int8 manifest names its flavour ({', '.join(INT8_FLAVOURS)})")
    if precision["mode"] != "int8" and precision.get("flavour") is not None:
        raise ArtifactError(f"{source}: only int8 has a flavour, not {precision['mode']}")
    for tensor in (*data["inputs"], *data["outputs"]):
        rank = len(tensor["shape"])
        for ax in tensor.get("dynamic_axes", []):
            if not 0 <= ax["axis"] < rank:
                raise ArtifactError(f"{source}: tensor {tensor['name']!r} has a dynamic axis {ax['axis']} but rank "
                                    f"{rank}")
            if not ax["min"] <= ax["opt"] <= ax["max"]:
                raise ArtifactError(f"{source}: tensor {tensor['name']!r} axis {ax['name']!r}: min <= opt <= max "
                                    f"does not hold ({ax['min']}, {ax['opt']}, {ax['max']})")
    for which in ("batch", "height", "width"):
        r = data["profile"][which]
        if not r["min"] <= r["opt"] <= r["max"]:
            raise ArtifactError(f"{source}: profile {which}: min <= opt <= max does not hold "
                                f"({r['min']}, {r['opt']}, {r['max']})")
    for tensor in data["outputs"]:
        if tensor.get("kind") == "logits" and isinstance(tensor["shape"][1], int) and tensor["shape"][1] != k:
            raise ArtifactError(f"{source}: output {tensor['name']!r} has {tensor['shape'][1]} channels for {k} "
                                "classes")
    if (data.get("format") == "engine") != (data.get("engine") is not None):
        raise ArtifactError(f"{source}: engine facts belong to (and only to) an engine's manifest")
    writer = data["tool_versions"].get("segdeploy")
    if not isinstance(writer, str) or not writer.strip():
        raise ArtifactError(f"{source}: its tool_versions name no segdeploy release, so nothing vouches for its "
                            "graph_sha256: not a manifest segdeploy wrote (export the artifact again)")


# ----------------------------------------------------------------------------------------------------------------
# dict -> dataclasses (the document is schema-valid by now, so this is plain construction)


def _build(cls, data: dict):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _convert(hints[f.name], data[f.name])
    return cls(**kwargs)


def _convert(hint, value):
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value)
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        return [_build(args[0], v) for v in value]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in args:
            if dataclasses.is_dataclass(arg):
                return _build(arg, value)
    return value


# ----------------------------------------------------------------------------------------------------------------
# Where a manifest lives


def sidecar_path(artifact: str | os.PathLike) -> str:
    return os.path.splitext(os.fspath(artifact))[0] + ".json"


def embed(model_proto, manifest: Manifest):
    """Put ``manifest`` into an ONNX model's metadata_props (replacing segdeploy's entries, keeping foreign ones)."""
    keep = [(p.key, p.value) for p in model_proto.metadata_props
            if p.key != ONNX_METADATA_KEY and p.key not in _LEGACY_KEYS]
    del model_proto.metadata_props[:]
    _check_finite(manifest.to_dict(), "the manifest")
    for key, value in [*keep, (ONNX_METADATA_KEY, json.dumps(manifest.to_dict(), sort_keys=True, allow_nan=False))]:
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value
    return model_proto


_LEGACY_KEYS = frozenset({LEGACY_METADATA_KEY, "format", "model", "family", "variant", "num_classes", "class_names",
                          "palette", "input", "output", "dynamic", "dynamic_axes", "input_profile", "preprocessing",
                          "opset", "export_options", "graph", "weights", "graph_sha256", "tool_versions",
                          "validation"})


def embedded(model_proto, source: str = "the ONNX model") -> Manifest | None:
    """The manifest inside an ONNX model's metadata_props, or None when it carries none."""
    props = {p.key: p.value for p in model_proto.metadata_props}
    if ONNX_METADATA_KEY in props:
        data = parse_json(props[ONNX_METADATA_KEY], f"{source}: its embedded manifest")
        return Manifest.from_dict(data, f"{source} (embedded manifest)")
    if LEGACY_METADATA_KEY in props:
        check_document({LEGACY_METADATA_KEY: props[LEGACY_METADATA_KEY]}, source)
    return None


# A manifest is a few tens of kB (150 class names and colours); anything near this is not one.
MAX_MANIFEST_BYTES = 16 << 20


def parse_json(raw: bytes | str, source: str, what: str = "a manifest"):
    """JSON from bytes nobody vouches for, as one ArtifactError line whatever is wrong with them (segdeploy.io's
    parse_untrusted_json): not UTF-8, not JSON, NaN/Infinity, nesting too deep, integers too long to convert, or
    too large to be ``what``."""
    from segdeploy.io import parse_untrusted_json

    return parse_untrusted_json(raw, source, what, MAX_MANIFEST_BYTES)


def read_json_file(path: str | os.PathLike, what: str = "a manifest"):
    """The JSON document in the file at ``path``, read as :func:`parse_json` reads bytes."""
    from segdeploy.io import read_untrusted_json

    return read_untrusted_json(path, what, MAX_MANIFEST_BYTES)


def read_sidecar(path: str | os.PathLike) -> Manifest:
    path = os.fspath(path)
    return Manifest.from_dict(read_json_file(path), path)

"""The artifact formats segdeploy writes, in one table that export, the runtime registry and the commands read
(Ultralytics' single format table). A format says what kind of artifact it is (the thing a backend consumes: an
ONNX graph, an engine, a model repository), its file suffixes, and what exporting it needs. Which backends run
which kind is the runtime registry's business, not this table's.

This is the one module that spells the artifacts' suffixes: the rest asks it (:func:`for_path`,
:func:`with_suffix`, :data:`ONNX_SUFFIX`, :data:`ENGINE_SUFFIXES`).
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from segdeploy import backends
from segdeploy.errors import SegdeployError


@dataclass(frozen=True)
class Format:
    name: str  # the --fmt value
    kind: str  # "onnx" | "engine" | "repository": what a backend consumes
    suffixes: tuple[str, ...]
    description: str
    requires: tuple[str, ...] = ()  # importable modules export needs
    exportable: bool = True
    note: str = ""

    @property
    def suffix(self) -> str:
        return self.suffixes[0] if self.suffixes else ""

    def missing(self) -> list[str]:
        return [module for module in self.requires if importlib.util.find_spec(module) is None]


FORMATS: dict[str, Format] = {
    "onnx": Format("onnx", "onnx", (".onnx",), "ONNX graph with its manifest (embedded and as a JSON sidecar)",
                   requires=("onnx", backends.ONNXRUNTIME)),
    "trt": Format("trt", "engine", (".engine", ".plan"), "TensorRT engine with segdeploy's header, built from the "
                  "ONNX artifact (where TensorRT is missing: a build bundle to build on the target)",
                  note="running it needs TensorRT and an NVIDIA GPU"),
    "triton": Format("triton", "repository", (), "Triton model repository (ONNX Runtime, or a TensorRT plan built "
                     "here)", note="served by tritonserver; segdeploy writes the repository only"),
}


ONNX_SUFFIX = FORMATS["onnx"].suffix
ENGINE_SUFFIXES = FORMATS["trt"].suffixes  # segdeploy's engine (its header + the plan), then the bare plan
ENGINE_FORMATS = {"engine": ENGINE_SUFFIXES[0], "plan": ENGINE_SUFFIXES[1]}  # --engine-format -> the file's suffix
ARTIFACT_SUFFIXES = tuple(s for f in FORMATS.values() for s in f.suffixes)
MANIFEST_SUFFIX = ".json"  # the sidecar beside an artifact, a bundle's build plan


def suffix_of(path: str | os.PathLike) -> str:
    return os.path.splitext(os.fspath(path))[1].lower()


def with_suffix(path: str | os.PathLike, suffix: str) -> str:
    """``path`` with its suffix replaced (or added)."""
    return os.path.splitext(os.fspath(path))[0] + suffix


def for_path(path: str | os.PathLike) -> Format | None:
    """The format a file's name says it is (its content is :func:`format_of`'s business); None for another name."""
    suffix = suffix_of(path)
    return next((fmt for fmt in FORMATS.values() if suffix in fmt.suffixes), None)


def is_onnx_name(path: str | os.PathLike) -> bool:
    return suffix_of(path) == ONNX_SUFFIX


def is_engine_name(path: str | os.PathLike) -> bool:
    return suffix_of(path) in ENGINE_SUFFIXES


def engine_format_of(path: str | os.PathLike | None) -> str:
    """The --engine-format a file name asks for: "plan" for a .plan file, else "engine"."""
    return "plan" if path and suffix_of(path) == ENGINE_FORMATS["plan"] else "engine"


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise SegdeployError(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}") from None


def require_exportable(name: str) -> Format:
    """The format ``name``, or one line saying why it cannot be exported here."""
    fmt = get_format(name)
    if not fmt.exportable:
        raise SegdeployError(f"format {fmt.name!r} cannot be exported by this version of segdeploy: {fmt.note}")
    missing = fmt.missing()
    if missing:
        raise SegdeployError(f"format {fmt.name!r} needs the Python package(s) {', '.join(missing)}, which are not "
                             f"installed ({fmt.note or fmt.description})")
    return fmt


TENSORRT_MAGIC = b"ftrt"  # the first bytes of every serialized TensorRT engine (a bare plan)
# ModelProto's fields (onnx.proto): 1 ir_version, 2-6 producer/domain/version/doc, 7 graph, 8 opset_import,
# 14 metadata_props, 20 training_info, 25 functions, 26 configuration; and the wire type each is written with
_MODEL_PROTO_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


def sniff(path: str | os.PathLike) -> str:
    """What the file at ``path`` holds, by its content, never its name: "engine" (segdeploy's header, or
    TensorRT's plan magic), "json" (a manifest, a build plan), "onnx" (a protobuf ModelProto with a graph), or
    "unknown" (unreadable, empty, truncated, anything else)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head[:4] == TENSORRT_MAGIC:
                return "engine"
            n = int.from_bytes(head[:4], "little")
            if len(head) > 4 and 0 < n and head[4:5] == b"{" and n <= os.fstat(f.fileno()).st_size - 4:
                return "engine"  # segdeploy's header: a length, then the JSON manifest
            if head.lstrip()[:1] in (b"{", b"["):
                return "json"
            f.seek(0)
            return "onnx" if _model_proto(f, os.fstat(f.fileno()).st_size) else "unknown"
    except OSError:
        return "unknown"


def _varint(f) -> int | None:
    value = 0
    for shift in range(0, 64, 7):
        byte = f.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
    return None


def _model_proto(f, size: int, max_fields: int = 10_000) -> bool:
    """True when the top level of the stream parses as ModelProto's fields (skipping their contents) and holds a
    graph: the ONNX check that costs no parse of the graph itself."""
    graph = False
    for _ in range(max_fields):
        if f.tell() >= size:
            return graph
        tag = _varint(f)
        if tag is None:
            return False
        field, wire = tag >> 3, tag & 7
        if _MODEL_PROTO_FIELDS.get(field) != wire:
            return False
        if wire == 0:
            if _varint(f) is None:
                return False
        else:
            length = _varint(f)
            if length is None or f.tell() + length > size:
                return False
            f.seek(length, 1)
            graph = graph or field == 7
    return False


def format_of(path: str | os.PathLike) -> Format:
    """The format of an artifact: from its content where the file exists (a renamed file is what it holds), else
    from its suffix."""
    kind = sniff(path) if os.path.isfile(path) else "unknown"
    if kind == "json":
        raise SegdeployError(f"{os.fspath(path)} holds JSON (a manifest?), not an artifact: pass the ONNX file or "
                             "engine it describes")
    for fmt in FORMATS.values():
        if fmt.kind == kind:
            return fmt
    fmt = for_path(path)
    if fmt is not None:
        return fmt
    known = ", ".join(f"{s} ({f.name})" for f in FORMATS.values() for s in f.suffixes)
    raise SegdeployError(f"cannot tell the format of {os.fspath(path)}: expected one of {known}")

"""The artifact formats segdeploy writes, in one table that export, the runtime registry and the commands read
(Ultralytics' single format table). A format says what kind of artifact it is (the thing a backend consumes: an
ONNX graph, an engine, a model repository), its file suffix, and what exporting it needs. Which backends run which
kind is the runtime registry's business, not this table's.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

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
                   requires=("onnx", "onnxruntime")),
    "trt": Format("trt", "engine", (".engine", ".plan"), "TensorRT engine with segdeploy's header, built from the "
                  "ONNX artifact (where TensorRT is missing: a build bundle to build on the target)",
                  note="running it needs TensorRT and an NVIDIA GPU"),
    "triton": Format("triton", "repository", (), "Triton model repository (ONNX Runtime, or a TensorRT plan built "
                     "here)", note="served by tritonserver; segdeploy writes the repository only"),
}


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


def format_of(path: str | os.PathLike) -> Format:
    """The format of an artifact, from its suffix."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    for fmt in FORMATS.values():
        if suffix in fmt.suffixes:
            return fmt
    known = ", ".join(f"{s} ({f.name})" for f in FORMATS.values() for s in f.suffixes)
    raise SegdeployError(f"cannot tell the format of {os.fspath(path)}: expected one of {known}")

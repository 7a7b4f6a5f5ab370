"""The artifact formats segdeploy knows, in one table that export, validate and bench all read.

A format names its file suffix, the Python packages it needs and whether this version can build and run it. Asking
for a format whose packages are missing, or that is listed but not built yet, is a one-line SegdeployError rather
than a half-working path.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from segdeploy.errors import SegdeployError


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    description: str
    requires: tuple[str, ...]  # importable module names
    exportable: bool  # segdeploy export can write it
    runnable: bool  # a Runner exists for it (validate, bench)
    note: str = ""

    def missing(self) -> list[str]:
        return [module for module in self.requires if importlib.util.find_spec(module) is None]


FORMATS: dict[str, Format] = {
    "onnx": Format("onnx", ".onnx", "ONNX graph + JSON sidecar, run by ONNX Runtime",
                   requires=("onnx", "onnxruntime"), exportable=True, runnable=True),
    "trt": Format("trt", ".engine", "TensorRT engine with segdeploy's header, built from the ONNX artifact (where "
                  "TensorRT is missing: a build bundle to build on the target)", requires=(), exportable=True,
                  runnable=True, note="running it needs TensorRT and an NVIDIA GPU"),
    # a folder, so no file suffix can match it
    "triton": Format("triton", "/", "Triton model repository (ONNX Runtime, or a TensorRT plan built here)",
                     requires=(), exportable=True, runnable=False,
                     note="served by tritonserver; segdeploy writes the repository only"),
}


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise SegdeployError(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}") from None


def require(name: str, for_export: bool = True) -> Format:
    """The format ``name``, or a one-line error saying why it cannot be used here."""
    fmt = get_format(name)
    missing = fmt.missing()
    if missing:
        raise SegdeployError(f"format {fmt.name!r} needs the Python package(s) {', '.join(missing)}, which are not "
                             f"installed ({fmt.note or fmt.description})")
    if (for_export and not fmt.exportable) or (not for_export and not fmt.runnable):
        raise SegdeployError(f"format {fmt.name!r} is not supported by this version of segdeploy: {fmt.note}")
    return fmt


def format_of(path: str | os.PathLike) -> Format:
    """The format of an artifact, from its suffix."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    for fmt in FORMATS.values():
        if fmt.suffix == suffix:
            return fmt
    known = ", ".join(f"{f.suffix} ({f.name})" for f in FORMATS.values())
    raise SegdeployError(f"cannot tell the format of {os.fspath(path)}: expected one of {known}")

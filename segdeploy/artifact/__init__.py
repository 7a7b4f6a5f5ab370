"""What an exported artifact is: the typed, versioned manifest (and its JSON Schema), the format table, the engine
file header, and reading ONNX files. Export writes these; runtimes, evaluation, commands and the C++ library read
them. Nothing here imports export, runtimes or evaluation."""
from segdeploy.artifact.manifest import (
    SCHEMA_VERSION,
    Axis,
    EngineInfo,
    ExportInfo,
    Manifest,
    ModelInfo,
    Precision,
    Preprocessing,
    Profile,
    Range,
    Resize,
    TensorSpec,
    Weights,
)
from segdeploy.artifact.manifest_store import sidecar_path
from segdeploy.artifact.reader import read_manifest

__all__ = ["SCHEMA_VERSION", "Axis", "EngineInfo", "ExportInfo", "Manifest", "ModelInfo", "Precision",
           "Preprocessing", "Profile", "Range", "Resize", "TensorSpec", "Weights", "read_manifest", "sidecar_path"]

"""Self-describing artifacts: the same metadata in a JSON sidecar and in the ONNX ``metadata_props``.

A runtime (or a person) holding only the ``.onnx`` file can recover the model, classes and palette, the input
contract and preprocessing, what the output means, and how it was produced and validated. Each top-level key is one
``metadata_props`` entry whose value is JSON (strings stay readable in Netron). Nothing time- or host-dependent is
recorded, so the same inputs give a byte-identical file.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

import onnx
import torch

from segdeploy.errors import ArtifactError

METADATA_VERSION = 1
# Keys a segdeploy artifact always carries (used to recognise one and to test completeness).
REQUIRED_KEYS = ("segdeploy_metadata_version", "model", "family", "variant", "num_classes", "class_names", "palette",
                 "input", "output", "dynamic_axes", "preprocessing", "opset", "export_options", "weights",
                 "graph_sha256", "tool_versions", "validation")


def state_dict_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the persistent state (sorted keys, dtype, shape, raw bytes): what the weights are, not how they
    were stored on disk."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def graph_sha256(model: onnx.ModelProto) -> str:
    """SHA-256 of the serialized model without its metadata_props (which would otherwise have to hash themselves)."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.metadata_props[:]
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()


def tool_versions() -> dict:
    import numpy
    import onnxruntime

    from segdeploy import __version__

    versions = {"segdeploy": __version__, "python": ".".join(map(str, sys.version_info[:3])),
                "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                "numpy": numpy.__version__}
    for name in ("onnxsim", "onnxslim"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # optional tools; absent or without a version
            versions[name] = None
    return versions


def embed(model: onnx.ModelProto, metadata: dict) -> onnx.ModelProto:
    """Replace the model's metadata_props with ``metadata`` (one JSON value per top-level key, sorted)."""
    del model.metadata_props[:]
    for key in sorted(metadata):
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = json.dumps(metadata[key], sort_keys=True)
    return model


def from_props(model: onnx.ModelProto) -> dict:
    out = {}
    for entry in model.metadata_props:
        try:
            out[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:  # a foreign key set by another tool
            out[entry.key] = entry.value
    return out


def sidecar_path(artifact: str | os.PathLike) -> str:
    return os.path.splitext(os.fspath(artifact))[0] + ".json"


def to_json(metadata: dict) -> str:
    return json.dumps(metadata, indent=2, sort_keys=True) + "\n"


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ArtifactError(f"artifact not found: {path}")
    try:
        return onnx.load(path)
    except Exception as exc:
        raise ArtifactError(f"{path} is not a readable ONNX model ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None


def read(artifact: str | os.PathLike, model: onnx.ModelProto | None = None) -> dict:
    """The artifact's segdeploy metadata: the embedded copy (authoritative), else the sidecar, else {}."""
    model = model if model is not None else load_onnx(artifact)
    props = from_props(model)
    if "segdeploy_metadata_version" in props:
        return props
    side = sidecar_path(artifact)
    if os.path.isfile(side):
        try:
            with open(side, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"sidecar {side} is not valid JSON ({exc})") from None
        if isinstance(data, dict) and "segdeploy_metadata_version" in data:
            return data
    return {}

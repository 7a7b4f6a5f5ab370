"""Reading ONNX artifacts and hashing their graphs, shared by export (which writes them) and every reader."""
from __future__ import annotations

import hashlib
import os

from segdeploy.errors import ArtifactError


def load_onnx(path: str | os.PathLike):
    """The ONNX model at ``path``, or one ArtifactError line saying why it cannot be read."""
    import onnx

    path = os.fspath(path)
    if os.path.isdir(path):
        raise ArtifactError(f"{path} is a folder, not an ONNX file")
    if not os.path.isfile(path):
        raise ArtifactError(f"artifact not found: {path}")
    try:
        return onnx.load(path)
    except Exception as exc:  # protobuf DecodeError, truncated files, external-data errors, ...
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise ArtifactError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {detail[:160]})") from None


def graph_sha256(model) -> str:
    """SHA-256 of the serialized model without its metadata_props (which would otherwise have to hash themselves)."""
    import onnx

    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.metadata_props[:]
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()

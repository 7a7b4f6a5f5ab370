"""Reading ONNX artifacts and hashing their graphs, shared by export (which writes them) and every reader."""
from __future__ import annotations

import hashlib
import os

from segdeploy.errors import ArtifactError
from segdeploy.files.journal import wait_for_writers


def load_onnx(path: str | os.PathLike, check: bool = True):
    """The ONNX model at ``path``, or one ArtifactError line saying why it cannot be read. ``check``: also run
    ONNX's model checker (unknown operators, dangling inputs, an empty file that parses as an empty model), so a
    corrupt graph is refused here, not by whichever backend loads it later."""
    import onnx

    path = os.fspath(path)
    wait_for_writers(path)  # a live writer finishes first; half a unit a killed one left is refused
    if os.path.isdir(path):
        raise ArtifactError(f"{path} is a folder, not an ONNX file")
    if not os.path.isfile(path):
        raise ArtifactError(f"artifact not found: {path}")
    try:
        model = onnx.load(path)
    except Exception as exc:  # protobuf DecodeError, truncated files, external-data errors, ...
        raise ArtifactError(f"{path} is not a readable ONNX model ({_first_line(exc)})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise ArtifactError(f"{path} is not an ONNX model: it holds no graph")
    if check:
        try:
            onnx.checker.check_model(model if model.ByteSize() < (2 << 30) - (1 << 20) else path)
        except Exception as exc:  # ValidationError, and the checker's own failures on odd files
            raise ArtifactError(f"{path} is not a valid ONNX model ({_first_line(exc)})") from None
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    detail = next((line.strip() for line in text.splitlines() if line.strip()), "no detail")
    return f"{type(exc).__name__}: {detail[:160]}"


def graph_sha256(model) -> str:
    """SHA-256 of the serialized model without its metadata_props (which would otherwise have to hash themselves)."""
    import onnx

    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.metadata_props[:]
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()


def graph_edited(model_proto, manifest) -> bool:
    """True when an artifact segdeploy wrote no longer hashes to the graph its manifest records: edited, or damaged
    (a flipped block of weights still parses and runs, computing something else). Always checked: nothing in the
    file can switch it off (a manifest without the fields that make it checkable is refused when it is read)."""
    return graph_sha256(model_proto) != manifest.graph_sha256


def check_graph_unchanged(model_proto, manifest, path: str) -> None:
    """Refuse to run an artifact whose graph is not the one its manifest describes (validate, which measures what
    such a graph computes, and info, which shows it, do not call this)."""
    if graph_edited(model_proto, manifest):
        raise ArtifactError(f"{path}: its graph does not hash to what its manifest records (sha256 "
                            f"{manifest.graph_sha256[:12]}): it was edited or damaged since export; export it again, "
                            "or run segdeploy validate on it to see what it computes")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()

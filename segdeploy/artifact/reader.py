"""One reader for every artifact kind: whoever needs an artifact's description calls :func:`read_manifest`.

It also says, every time an artifact is read, what its manifest records that its user must hear (:func:`caveats`:
an artifact exported without verification), as a Python warning of :class:`ArtifactWarning`, which the command line
prints as one ``warning:`` line."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from segdeploy.artifact import formats
from segdeploy.artifact.consistency import check_against_graph
from segdeploy.artifact.engine_header import read_header
from segdeploy.artifact.manifest import Manifest
from segdeploy.artifact.manifest_store import embedded, read_sidecar, sidecar_path
from segdeploy.artifact.onnx_file import check_graph_unchanged, load_onnx
from segdeploy.errors import ArtifactError


class ArtifactWarning(UserWarning):
    """Something every user of an artifact must be told, whichever command reads it."""


def caveats(manifest: Manifest) -> list[str]:
    """What must be said each time this artifact is used, one sentence each (after its path)."""
    notes = []
    validation = manifest.validation or {}
    if validation.get("skipped"):
        why = f" ({validation['reason']})" if validation.get("reason") else ""
        notes.append(f"was never compared with PyTorch{why}: nothing checked that it computes what the model does; "
                     "segdeploy validate compares it")
    return notes


def warn_caveats(manifest: Manifest, path: str) -> None:
    for note in caveats(manifest):
        warnings.warn(f"{path} {note}", ArtifactWarning, stacklevel=3)


def read_manifest(artifact: str | os.PathLike, model_proto=None, *, required: bool = True) -> Manifest | None:
    """The manifest of an artifact: an ``.onnx`` (embedded copy, else its sidecar), an engine (its header), or a
    manifest ``.json`` itself. Where an ONNX file has both and they disagree, that is an error: the pair was not
    written together. ``required=False`` returns None for a foreign ONNX file without any manifest."""
    path = os.fspath(artifact)
    kind = _kind(path) if model_proto is None else "onnx"
    if kind == "json":
        manifest = read_sidecar(path)
        warn_caveats(manifest, path)
        return manifest
    if kind == "engine":
        manifest, _ = read_header(path)
        if manifest is None:
            # a bare plan (trtexec, build_engine.sh) is described by the ONNX artifact's manifest beside it, as in a
            # build bundle; the C++ library reads it the same way
            side = sidecar_path(path)
            if os.path.isfile(side):
                manifest = read_sidecar(side)
            elif required:
                raise ArtifactError(f"{path} has no segdeploy header (built by trtexec?) and no manifest {side} "
                                    "beside it; it carries no manifest")
        if manifest is not None:
            warn_caveats(manifest, path)
        return manifest
    if model_proto is None:
        model_proto = load_onnx(path)
    inside = embedded(model_proto, path)
    side = sidecar_path(path)
    beside = read_sidecar(side) if os.path.isfile(side) else None
    if inside is not None and beside is not None and inside.to_dict() != beside.to_dict():
        raise ArtifactError(f"{side} does not match the manifest inside {path} (graph sha256 "
                            f"{beside.graph_sha256[:12]} vs {inside.graph_sha256[:12]}): they were not written "
                            "together; export again")
    manifest = inside or beside
    if manifest is None:
        if required:
            raise ArtifactError(f"{path} carries no segdeploy manifest (no embedded one, no sidecar {side}); pass "
                                "--model to describe a foreign ONNX file")
        return None
    if manifest.format != "onnx":
        raise ArtifactError(f"{path}: its manifest describes {manifest.format} artifact, not an ONNX graph")
    check_against_graph(manifest, model_proto, path)
    warn_caveats(manifest, path)
    return manifest


def _kind(path: str) -> str:
    """What the file holds (formats.sniff); a file that is none of them is read as its suffix says, so that its
    reader names what is wrong with it."""
    kind = formats.sniff(path) if os.path.isfile(path) else "unknown"
    if kind != "unknown":
        return kind
    if formats.suffix_of(path) == formats.MANIFEST_SUFFIX:
        return "json"
    return "engine" if formats.is_engine_name(path) else "onnx"


@dataclass(frozen=True)
class LoadedArtifact:
    """An artifact opened once, to be run: its path, what it holds (``kind``: "onnx", "engine", "json") and its
    manifest, already checked (:func:`open_artifact`). Callers hand it down to the runner (runtimes.registry's
    create_runner takes it for ``artifact``), which then does not read and hash the file again."""
    path: str
    kind: str
    manifest: Manifest | None


def open_artifact(artifact: str | os.PathLike, *, required: bool = True) -> LoadedArtifact:
    """The artifact at ``artifact``, opened for a caller about to run it: an ONNX graph that no longer hashes to what
    its manifest records is refused (validate and info, which look at such a graph, call read_manifest); a manifest
    that records a failed validation is warned about. An engine's plan is checked by its reader."""
    path = os.fspath(artifact)
    kind = _kind(path)
    if kind != "onnx":
        manifest = read_manifest(path, required=required)
    else:
        model_proto = load_onnx(path)
        manifest = read_manifest(path, model_proto, required=required)
        if manifest is not None:
            check_graph_unchanged(model_proto, manifest, path)
    if manifest is not None:
        warn_if_unvalidated(manifest, path)
    return LoadedArtifact(path, kind, manifest)


def read_runnable_manifest(artifact: str | os.PathLike, *, required: bool = True) -> Manifest | None:
    """The manifest of :func:`open_artifact`, for a caller that runs the artifact by its path."""
    return open_artifact(artifact, required=required).manifest


def validation_problem(manifest) -> str | None:
    """What the manifest's own record says is wrong with the artifact (a validation that failed), or None."""
    v = manifest.validation if isinstance(manifest.validation, dict) else {}
    if v.get("passed") is False:
        return "its manifest records that its validation against PyTorch FAILED at export"
    return None


def warn_if_unvalidated(manifest, path: str) -> None:
    """A warning line on every use of an artifact whose manifest records a failed validation: issued here, so that
    the warnings filter shows it once per command however many of its readers open the file."""
    problem = validation_problem(manifest)
    if problem:
        warnings.warn(f"{path}: {problem}; its outputs may be wrong (segdeploy validate {path} says how)",
                      stacklevel=1)

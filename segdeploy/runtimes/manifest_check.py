"""What a runner of an artifact learns from its manifest, checked against what the backend found in the artifact.

The manifest is the artifact's promise (names, dtypes, layouts, ranges); the loaded graph or engine is the truth.
Where they disagree the artifact is lying (a manifest copied from another export, or edited), and the runner
refuses it with one line instead of feeding it by a description that does not fit.
"""
from __future__ import annotations

from segdeploy.artifact import manifest as mf
from segdeploy.artifact.reader import read_manifest, warn_if_unvalidated
from segdeploy.errors import ArtifactError
from segdeploy.models.facts import check_manifest
from segdeploy.runtimes.base import TensorInfo


def artifact_manifest(path: str | None, manifest: mf.Manifest | None = None) -> mf.Manifest | None:
    """The artifact's manifest (checked against the registry where it names a registered model), or None for a
    foreign file that carries none; ``manifest``: the one the caller read already (artifact.reader.open_artifact),
    so the file is not read again. The graph's hash is the caller's to check (predict, eval, bench and Triton
    refuse an edited graph; validate measures what it computes): runners run what they are given."""
    if manifest is None:
        manifest = read_manifest(path, required=False) if path else None
    if manifest is not None:
        warn_if_unvalidated(manifest, path)
    if manifest is not None:
        check_manifest(manifest, path)
    return manifest


def _check(kind: str, described: list[mf.TensorSpec], found: list[TensorInfo], source: str) -> None:
    if [t.name for t in described] != [t.name for t in found]:
        raise ArtifactError(f"{source}: its manifest describes {kind} {[t.name for t in described]}, the graph has "
                            f"{[t.name for t in found]}")
    for spec, info in zip(described, found):
        if spec.dtype != info.dtype or len(spec.shape) != len(info.shape):
            raise ArtifactError(f"{source}: its manifest describes {kind[:-1]} {spec.name!r} as {spec.dtype} of rank "
                                f"{len(spec.shape)}, the graph has {info.dtype} of rank {len(info.shape)}")
        for i, (want, got) in enumerate(zip(spec.shape, info.shape)):
            if isinstance(want, int) and isinstance(got, int) and got >= 0 and want != got:
                raise ArtifactError(f"{source}: its manifest gives {spec.name!r} dimension {i} as {want}, the graph "
                                    f"as {got}")


def tensor_infos(manifest: mf.Manifest | None, inputs: list[TensorInfo], outputs: list[TensorInfo],
                 source: str | None) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The runner's I/O table: what the backend found, with the layouts the manifest adds, after checking that the
    two agree."""
    if manifest is None:
        return inputs, outputs
    source = source or "the artifact"
    _check("inputs", manifest.inputs, inputs, source)
    _check("outputs", manifest.outputs, outputs, source)
    with_layout = [TensorInfo(i.name, i.shape, i.dtype, spec.layout) for i, spec in zip(inputs, manifest.inputs)]
    return with_layout, outputs

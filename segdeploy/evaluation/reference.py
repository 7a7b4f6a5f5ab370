"""The PyTorch reference of an artifact: the eager deploy graph its manifest describes (same model, export switches,
graph options and weights), refused when the manifest does not fit the model or the weights are not the ones the
artifact was exported from."""
from __future__ import annotations

import os

from segdeploy import models
from segdeploy.artifact import manifest as mf
from segdeploy.errors import ArtifactError, CheckpointError
from segdeploy.export.manifest_builder import describe
from segdeploy.export.onnx import check_finite_weights
from segdeploy.export.passes import PassReport, default_opset
from segdeploy.models.deploy import EXPORT_SWITCHES, build_deploy_graph, export_options
from segdeploy.models.facts import check_manifest


def _check_export_switches(manifest: mf.Manifest, spec) -> None:
    """The switches an export sets itself (e.g. the NMF bases of a dynamic SegNeXt) must be the ones it would set;
    the rest of the manifest was checked against the registry when it was read."""
    switches = export_options(spec, manifest.export.dynamic)
    for key, value in manifest.export.model_options.items():
        if key in EXPORT_SWITCHES and switches.get(key) != value:
            raise ArtifactError(f"the manifest's export switch {key}={value!r} is not what a "
                                f"{'dynamic' if manifest.export.dynamic else 'static'} export uses "
                                f"({switches.get(key)!r})")


def build_reference(manifest: mf.Manifest, model_name: str | None = None, checkpoint=None):
    """The eager DeployGraph matching an artifact."""
    recorded = manifest.model.name
    if model_name and model_name != recorded:
        raise ArtifactError(f"the artifact was exported from {recorded}, not {model_name}")
    spec = models.get_spec(recorded)
    check_manifest(manifest, "the artifact")
    _check_export_switches(manifest, spec)
    weights = manifest.weights
    if checkpoint is None and weights.source == "checkpoint":
        raise CheckpointError(f"the artifact was exported from the checkpoint {weights.file}; pass it with "
                              "--checkpoint")
    graph, built = build_deploy_graph(spec.name, checkpoint=checkpoint, dynamic=manifest.export.dynamic,
                                      outputs=manifest.export.outputs, preprocess=manifest.export.preprocess,
                                      options=manifest.export.model_options)
    if graph.num_classes != manifest.num_classes:
        raise CheckpointError(f"the weights have {graph.num_classes} classes, the artifact {manifest.num_classes}")
    if built["sha256"] != weights.sha256:
        source = f"checkpoint {os.fspath(checkpoint)}" if checkpoint is not None else "the recipe weights"
        raise CheckpointError(f"{source} (sha256 {built['sha256'][:12]}) is not what the artifact was exported "
                              f"from (sha256 {weights.sha256[:12]})")
    check_finite_weights(graph.model, f"checkpoint {checkpoint}" if checkpoint else "the recipe weights")
    return graph


def foreign_reference(model_proto, model_name: str, checkpoint=None):
    """The reference and a manifest for an ONNX file segdeploy did not write: a static NCHW float graph of
    ``model_name``, described from the graph and the model (the artifact carries no manifest of its own)."""
    graph, weights = build_deploy_graph(model_name, checkpoint=checkpoint, dynamic=False)
    dims = [d.dim_value or None for d in model_proto.graph.input[0].type.tensor_type.shape.dim]
    if len(model_proto.graph.input) != 1 or len(dims) != 4 or None in dims or dims[1] != 3:
        raise ArtifactError("the artifact carries no segdeploy manifest and its input is not one static (N, 3, H, W) "
                            "tensor; cannot tell how to feed it")
    batch, _, height, width = dims
    manifest = describe(graph, model_proto, batch=batch, height=height, width=width, dynamic=False,
                        opset=default_opset(model_proto), simplify=False, weights=weights,
                        reports=[PassReport("trace", 0, len(model_proto.graph.node), "not segdeploy")],
                        validation={"skipped": True})
    return graph, manifest

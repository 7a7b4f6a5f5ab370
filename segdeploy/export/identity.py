"""What makes two exports the same one, so that an export whose artifact already exists reuses it instead of asking
for --force (and an artifact that is another export is still never overwritten without it).

An export is named by what it is made from and how: the model, its weights (the SHA-256 of the state dict, as the
manifest records it: the same checkpoint under another name is the same weights), batch, size and dynamic axes,
opset, simplifier, outputs, in-graph preprocessing, the precision (mode, INT8 flavour, I/O dtype, calibration images
by content, method and percentile, the held-out set an accuracy budget was judged on and the budget), whether it was
verified, and the segdeploy release that made it. Everything on the artifact's side is read from its manifest, after
the reader has checked the manifest against its graph and sidecar and the graph still hashes to what the manifest
records; exports are deterministic, so the same request would write the same bytes again.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

from segdeploy import __version__
from segdeploy.artifact.manifest_store import sidecar_path
from segdeploy.artifact.onnx_file import check_graph_unchanged, load_onnx
from segdeploy.artifact.reader import ArtifactWarning, read_manifest
from segdeploy.errors import ArtifactError
from segdeploy.export.precision.calibration_images import select_images


@dataclass(frozen=True)
class ExportIdentity:
    model: str
    weights_sha256: str
    batch: int
    height: int
    width: int
    dynamic: bool
    opset: int
    simplify: bool
    outputs: str  # "logits" | "mask"
    preprocess: bool
    precision: str
    flavour: str | None
    io_dtype: str
    calibration: tuple | None  # (images_sha256, method, percentile or None); FP16: (images_sha256, None, None)
    accuracy: tuple | None  # (held-out images_sha256, budget or None)
    verified: bool
    segdeploy: str = __version__

    @classmethod
    def of_manifest(cls, manifest) -> ExportIdentity:
        """The export an artifact was made by, as its manifest records it."""
        details = manifest.precision.details or {}
        calibration = details.get("calibration")  # INT8's; FP16 records only where its ranges came from
        if calibration is None and (details.get("ranges") or {}).get("images_sha256"):
            calibration = {"images_sha256": details["ranges"]["images_sha256"]}
        accuracy = details.get("accuracy")
        validation = manifest.validation or {}
        return cls(
            model=manifest.model.name, weights_sha256=manifest.weights.sha256, batch=manifest.profile.batch.opt,
            height=manifest.profile.height.opt, width=manifest.profile.width.opt, dynamic=manifest.export.dynamic,
            opset=manifest.export.opset, simplify=manifest.export.simplify, outputs=manifest.export.outputs,
            preprocess=manifest.export.preprocess, precision=manifest.precision.mode,
            flavour=manifest.precision.flavour, io_dtype=manifest.precision.io_dtype,
            calibration=None if not calibration else (calibration.get("images_sha256"), calibration.get("method"),
                                                      calibration.get("percentile")),
            accuracy=None if not accuracy else (accuracy.get("images_sha256"), accuracy.get("budget")),
            verified=bool(validation.get("passed")) and not validation.get("skipped"),
            segdeploy=str(manifest.tool_versions.get("segdeploy")))


def export_identity(model: str, *, checkpoint=None, batch: int, height: int, width: int, dynamic: bool, opset: int,
                    simplify: bool, outputs: str, preprocess: bool, precision, evaluator=None,
                    verify: bool = True) -> ExportIdentity:
    """The identity of an export about to run. Builds the model to hash its weights (seconds, where the export
    takes a minute) and hashes the calibration images and the held-out set."""
    from segdeploy.models.deploy import build_deploy_graph

    _, weights = build_deploy_graph(model, checkpoint=checkpoint, dynamic=dynamic, outputs=outputs,
                                    preprocess=preprocess)
    calibration = None
    if precision.mode != "fp32" and precision.calib:
        images = select_images(precision.calib, precision.calib_count)
        calibration = (images.sha256, None, None) if precision.mode == "fp16" else \
            (images.sha256, precision.calib_method,
             precision.percentile if precision.calib_method == "percentile" else None)  # FP16 takes min/max
    accuracy = None
    if evaluator is not None:
        accuracy = (evaluator.describe().get("images_sha256"), precision.max_drop)
    return ExportIdentity(model=model, weights_sha256=weights["sha256"], batch=batch, height=height, width=width,
                         dynamic=dynamic, opset=opset, simplify=simplify, outputs=outputs, preprocess=preprocess,
                         precision=precision.mode, flavour=precision.target if precision.mode == "int8" else None,
                         io_dtype=precision.io_dtype, calibration=calibration, accuracy=accuracy, verified=verify)


_SAID = {
    "model": "it is {found}", "weights_sha256": "it was exported from other weights",
    "batch": "its batch is {found}", "height": "its height is {found}", "width": "its width is {found}",
    "dynamic": "it is {found_dynamic}", "opset": "its opset is {found}",
    "simplify": "it was {found_simplified}", "outputs": "it outputs {found}",
    "preprocess": "it takes {found_input}", "precision": "it is {found}", "flavour": "it is the {found} INT8 flavour",
    "io_dtype": "its I/O is {found}", "calibration": "it was calibrated {found_calibration}",
    "accuracy": "its accuracy was judged {found_accuracy}",
    "segdeploy": "it was made by segdeploy {found} (this is {wanted})",
}


def difference(found: ExportIdentity, wanted: ExportIdentity) -> str | None:
    """Why the artifact ``found`` describes is not the export ``wanted`` (None: it is). A verified artifact serves
    a request without verification too; an unverified one does not serve a request to verify."""
    for f in fields(ExportIdentity):
        have, want = getattr(found, f.name), getattr(wanted, f.name)
        if f.name == "verified":
            if want and not have:
                return "it was exported without verification (--no-validate) and this export verifies"
            continue
        if f.name == "accuracy" and want is None and have is not None and have[1] is None:
            continue  # a measured accuracy without a budget did not change the graph
        if have != want:
            return _SAID[f.name].format(
                found=have, wanted=want, found_dynamic="dynamic" if have else "static",
                found_simplified="simplified" if have else "not simplified",
                found_input="uint8 images" if have else "float tensors",
                found_calibration="on other images or settings" if have else "on no images",
                found_accuracy="on another held-out set or budget" if have else "on no held-out set")
    return None


def reusable(path: str, wanted):
    """(manifest, None) when the artifact at ``path`` and its sidecar are the export ``wanted`` (an ExportIdentity,
    or a function that makes it: called only once the artifact is found intact), intact; else (None, why not)."""
    import warnings

    if not os.path.isfile(sidecar_path(path)):
        return None, f"its manifest {sidecar_path(path)} is missing"
    try:
        model_proto = load_onnx(path)
        with warnings.catch_warnings():  # the caller warns when it uses the artifact; a refused one is not used
            warnings.simplefilter("ignore", ArtifactWarning)
            manifest = read_manifest(path, model_proto, required=False)
        if manifest is None:
            return None, "it carries no segdeploy manifest"
        check_graph_unchanged(model_proto, manifest, path)
    except ArtifactError as exc:
        return None, str(exc)
    reason = difference(ExportIdentity.of_manifest(manifest), wanted() if callable(wanted) else wanted)
    return (manifest, None) if reason is None else (None, reason)


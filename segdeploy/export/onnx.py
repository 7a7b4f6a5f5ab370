"""A registered model -> a validated, self-describing ONNX artifact: build the deploy graph, trace, check, simplify,
convert the precision, verify, describe, write (the ONNX file and its manifest sidecar as one unit).

Export never imports the evaluation layer: numerical verification against PyTorch is passed in as ``verify`` (the
command passes segdeploy.evaluation.validate.verify_graph, with the tolerance of the precision), and so is the
accuracy evaluator a ``--max-drop`` budget is judged by. Without a verifier, the manifest says the graph was not
verified.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from segdeploy import models
from segdeploy.artifact import manifest as mf
from segdeploy.artifact import manifest_schema, manifest_store
from segdeploy.artifact.formats import ONNX_SUFFIX
from segdeploy.artifact.onnx_file import graph_sha256
from segdeploy.errors import CheckpointError, InputError, ToleranceError
from segdeploy.export.manifest_builder import DYNAMIC_BATCH, DYNAMIC_SIZE, describe
from segdeploy.export.passes import PassReport
from segdeploy.export.precision import Evaluator, GraphInput, PrecisionOptions, apply_precision, prepare
from segdeploy.export.trace import DEFAULT_OPSET, build_onnx, check_opset
from segdeploy.files.atomic import write_files_atomic
from segdeploy.files.destinations import check_destination
from segdeploy.models import footprint
from segdeploy.models.deploy import build_deploy_graph

# The second shape a dynamic artifact is verified at: another batch and aspect ratio than the traced one.
SECOND_VALIDATION_SHAPE = (2, 384, 640)
# Exports beyond this many input pixels per batch are refused before tracing: the traced activations alone would
# take tens of GB (a 4096x4096 CGRSeg-L trace needs ~60 GB).
MAX_EXPORT_PIXELS = 4 * 2048 * 2048

Progress = Callable[[str], None]


class VerificationReport(Protocol):
    passed: bool

    def summary(self) -> dict: ...

    def failure_line(self) -> str: ...


# verify(graph, model_proto, shapes, precision=mode[, images=paths]): compares with PyTorch by the tolerance of
# ``precision``, on seeded inputs of the shapes and on the images (calibration images of FP16/INT8 graphs)
Verifier = Callable[..., VerificationReport]


@dataclass
class ExportResult:
    path: str
    sidecar_path: str
    manifest: mf.Manifest
    reports: list[PassReport] = field(default_factory=list)


def default_output_path(model_name: str, height: int, width: int, dynamic: bool = False, outputs: str = "logits",
                        preprocess: bool = False, precision: str = "fp32") -> str:
    suffix = ("_dynamic" if dynamic else "") + ("_mask" if outputs == "mask" else "") + \
        ("_uint8" if preprocess else "") + ("" if precision == "fp32" else f"_{precision}")
    return os.path.join("artifacts", f"{model_name}_{height}x{width}{suffix}{ONNX_SUFFIX}")


def artifact_path(model_name: str, output=None, *, height: int, width: int, dynamic: bool = False,
                  outputs: str = "logits", preprocess: bool = False, precision: PrecisionOptions | None = None) -> str:
    """Where an export writes its ONNX artifact: ``output``, else the default name for its model, size, options and
    precision (``precision`` checked)."""
    precision = precision or PrecisionOptions()
    label = precision.mode + (f"_{precision.target}" if precision.mode == "int8" else "")
    path = os.fspath(output) if output is not None else default_output_path(model_name, height, width, dynamic,
                                                                            outputs, preprocess, label)
    if not path.endswith(ONNX_SUFFIX):
        raise InputError(f"an ONNX artifact's name must end in {ONNX_SUFFIX}: {path}")
    return path


def check_export_shape(spec, batch: int, height: int, width: int, dynamic: bool) -> None:
    multiple = spec.size_multiple
    if batch < 1 or height < 1 or width < 1:
        raise InputError(f"batch, height and width must be positive, got {batch}x{height}x{width}")
    if height % multiple or width % multiple:
        raise InputError(f"{spec.name} takes sizes that are multiples of {multiple}, not {height}x{width}")
    if batch * height * width > MAX_EXPORT_PIXELS:
        raise InputError(f"{batch}x{height}x{width} is too large to export on this machine's terms (at most "
                         f"{MAX_EXPORT_PIXELS // (2048 * 2048)} x 2048x2048 pixels per batch); export a dynamic "
                         "artifact at a smaller size instead")
    if dynamic:
        (lo_b, hi_b), (lo, hi) = DYNAMIC_BATCH, DYNAMIC_SIZE
        if not (lo_b <= batch <= hi_b and lo <= height <= hi and lo <= width <= hi):
            raise InputError(f"a dynamic export is traced inside its profile (batch {lo_b}-{hi_b}, H and W "
                             f"{lo}-{hi}); got {batch}x{height}x{width}")


def validation_shapes(batch: int, height: int, width: int, dynamic: bool) -> list[tuple[int, int, int]]:
    shapes = [(batch, height, width)]
    if dynamic:
        shapes.append(SECOND_VALIDATION_SHAPE if SECOND_VALIDATION_SHAPE != shapes[0] else (1, 512, 512))
    return shapes


def check_finite_weights(model: torch.nn.Module, origin: str) -> None:
    for key, tensor in model.state_dict().items():
        if torch.is_floating_point(tensor) and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{origin}: {key} holds {bad} non-finite values (NaN or inf); an artifact from it "
                                  "would output garbage")


def export_onnx(model_name: str, output: str | os.PathLike | None = None, *, checkpoint=None, height: int = 512,
                width: int = 512, batch: int = 1, dynamic: bool = False, opset: int = DEFAULT_OPSET,
                simplify: bool = True, simplifiers=None, outputs: str = "logits", preprocess: bool = False,
                force: bool = False, verify: Verifier | None = None, progress: Progress | None = None,
                precision: PrecisionOptions | None = None, evaluator: Evaluator | None = None,
                threads: int | None = None, unverified: str = "exported without verification") -> ExportResult:
    """Export ``model_name`` to ONNX with its manifest; see the module docstring and the README.

    ``precision`` (default FP32) converts the simplified graph (export/precision); ``evaluator`` measures the
    accuracy the manifest records and a ``max_drop`` budget is held to. Without ``verify`` the manifest records
    that the graph was not verified and why (``unverified``), and every reader warns. Writes nothing unless every
    step (trace, op check, simplification, precision, verification) succeeded.
    """
    say = progress or (lambda step, *_: None)
    spec = models.get_spec(model_name)
    check_export_shape(spec, batch, height, width, dynamic)
    check_opset(opset)
    precision = (precision or PrecisionOptions()).checked()
    label = precision.mode + (f"_{precision.target}" if precision.mode == "int8" else "")
    path = artifact_path(model_name, output, height=height, width=width, dynamic=dynamic, outputs=outputs,
                         preprocess=preprocess, precision=precision)
    side = manifest_store.sidecar_path(path)
    if checkpoint is not None and os.path.exists(checkpoint) and any(
            os.path.exists(p) and os.path.samefile(checkpoint, p) for p in (path, side)):
        raise InputError(f"the artifact {path} and its manifest {side} would replace the checkpoint "
                         f"{os.fspath(checkpoint)}: choose another --output")
    # fail before minutes of work, not after: the destination, its room, and this machine's memory
    weights = footprint.weights_bytes(model_name)
    check_destination(path, force, need_bytes=int(weights * 1.1) if weights else None)
    check_destination(side, force)
    footprint.check_fits(footprint.export_bytes(model_name, batch, height, width),
                         f"exporting {model_name} at {batch}x{height}x{width}",
                         "export a smaller size or batch (a dynamic artifact takes other sizes at run time)")
    calibration_images = prepare(precision, opset=opset, evaluator=evaluator) if precision.mode != "fp32" else None

    say(f"building {model_name}" + (f" from {os.path.basename(os.fspath(checkpoint))}" if checkpoint else ""))
    graph, weights = build_deploy_graph(model_name, checkpoint=checkpoint, dynamic=dynamic, outputs=outputs,
                                        preprocess=preprocess)
    check_finite_weights(graph.model, f"checkpoint {checkpoint}" if checkpoint else "the recipe weights")
    say(f"tracing at {batch}x{height}x{width} (opset {opset}) and simplifying")
    kwargs = {"simplifiers": simplifiers} if simplifiers else {}
    model_proto, reports = build_onnx(graph, batch, height, width, dynamic=dynamic, opset=opset, simplify=simplify,
                                      **kwargs)
    converted = None
    if precision.mode != "fp32":
        say(f"converting to {label.replace('_', ' ')}")
        graph_input = GraphInput(graph.input_name, graph.input_dtype, (batch, height, width), tuple(spec.mean),
                                 tuple(spec.std), spec.channel_order)
        converted = apply_precision(model_proto, precision, graph_input, graph_sha256=graph_sha256(model_proto),
                                    evaluator=evaluator, threads=threads, progress=say, images=calibration_images,
                                    float_modules=spec.int8_float_modules)
        model_proto = converted.model
        reports = reports + converted.reports
    validation = {"skipped": True, "reason": unverified}
    if verify is not None:
        shapes = validation_shapes(batch, height, width, dynamic)
        say(f"verifying against PyTorch at {', '.join('x'.join(map(str, s)) for s in shapes)}")
        images = {"images": converted.verification_images} if converted and converted.verification_images else {}
        report = verify(graph, model_proto, shapes, precision=precision.mode, **images)
        validation = report.summary()
        if not report.passed:
            what = "graph" if precision.mode == "fp32" else f"{label.replace('_', ' ')} graph"
            hint = ""
            if precision.mode != "fp32" and checkpoint is None:
                # the recipe weights' logits sit near ties, so a lossy graph flips labels that trained weights keep
                hint = "; the recipe weights' near-tied logits are no fair test of a lossy graph: give a trained " \
                       "--checkpoint"
            elif precision.mode == "int8" and evaluator is None:
                hint = f"; {len(converted.verification_images)} calibration images are a small sample: add " \
                       "--eval-data DIR (a held-out set, its images join them)"
            raise ToleranceError(f"{model_name}: the exported {what} does not match PyTorch within the {precision.mode}"
                                 f" tolerance ({report.failure_line()}); nothing was written{hint}")
    manifest = describe(graph, model_proto, batch=batch, height=height, width=width, dynamic=dynamic, opset=opset,
                        simplify=simplify, weights=weights, reports=reports, validation=validation,
                        precision=converted.precision if converted else None)
    write_artifact(path, model_proto, manifest, force)
    return ExportResult(path, side, manifest, reports)


def write_artifact(path: str, model_proto, manifest: mf.Manifest, force: bool) -> None:
    """The ONNX file (with the manifest embedded) and its sidecar, checked against the schema, written as one unit."""
    # never write what no reader would accept
    manifest_schema.check_document(manifest.to_dict(), f"the manifest of {path}")
    manifest_store.embed(model_proto, manifest)
    write_files_atomic([(path, model_proto.SerializeToString(deterministic=True)),
                        (manifest_store.sidecar_path(path), manifest.to_json().encode("utf-8"))], force=force)

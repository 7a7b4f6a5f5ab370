"""Carry out an ExportRequest: check it before any work, reuse the ONNX artifact when it is this very export or export
it, then build the TensorRT engine (or bundle) or the Triton repository on it, and remove what the run wrote when a
later step fails. The verifier and the accuracy evaluator come in as callables (they live in the evaluation layer);
what is worth telling goes to a Report, which the command prints.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from segdeploy import backends
from segdeploy.artifact import formats
from segdeploy.artifact.manifest_store import sidecar_path
from segdeploy.artifact.reader import read_runnable_manifest, warn_caveats
from segdeploy.errors import ArtifactError, InputError
from segdeploy.export import triton
from segdeploy.export.identity import export_identity, reusable
from segdeploy.export.precision import prepare
from segdeploy.export.request import ExportRequest
from segdeploy.export.tensorrt import EngineResult, export_engine, planned_kind
from segdeploy.export.tensorrt.plan import check_options
from segdeploy.export.trace import check_opset
from segdeploy.files.atomic import identities, remove_unchanged
from segdeploy.files.destinations import check_destination, remove_made
from segdeploy.files.journal import dead_unit_made

# INT8 is judged against PyTorch on real images; the recipe weights' logits are near ties, which any quantizer
# flips, so verification would fail after minutes of calibration. Said before any of it runs.
INT8_NEEDS_WEIGHTS = ("--precision int8 needs trained weights (--checkpoint): the recipe weights' near-tied logits "
                      "flip under any quantizer, so verification would fail. `segdeploy fixtures --quick` trains "
                      "cgrseg_t on a small synthetic dataset in a couple of minutes and prints the export command "
                      "to run with it (or pass --no-validate to export INT8 unverified, for timing only)")


class Report:
    """What a run tells as it goes; this one keeps quiet. `segdeploy export` prints each of them."""

    @contextlib.contextmanager
    def status(self, message: str):
        """A step that takes a while; yields a callback that updates its text."""
        yield lambda *_: None

    def line(self, text: str) -> None:
        """A line for the user: what was reused, kept or written, and warnings about serving."""

    def source(self, path: str, manifest) -> None:
        """--from-onnx: the artifact the build starts from."""

    def onnx(self, path: str, manifest) -> None:
        """The ONNX artifact is there (exported or reused), before anything is built on it."""

    def engine(self, result: EngineResult) -> None:
        """The engine or bundle is there."""


@dataclass
class ExportOutcome:
    path: str  # the ONNX artifact
    manifest: object
    engine: EngineResult | None = None
    repository: str | None = None  # the model's folder in the Triton repository


def run_export(request: ExportRequest, *, verify: Callable | None = None, make_evaluator: Callable | None = None,
               report: Report | None = None) -> ExportOutcome:
    """``verify(graph, proto, shapes, **options)`` compares the graph with PyTorch (None with --no-validate);
    ``make_evaluator()`` makes the accuracy evaluator on the held-out set, or None (called once the destinations
    are checked)."""
    report = report or Report()
    if request.from_onnx:
        return build_on_onnx(request, report)
    from segdeploy import models
    from segdeploy.export.onnx import artifact_path, check_export_shape

    check_export_shape(models.get_spec(request.model), request.batch, request.height, request.width, request.dynamic)
    check_opset(request.opset)
    path = artifact_path(request.model, onnx_output(request), height=request.height, width=request.width,
                         dynamic=request.dynamic, outputs=request.outputs, preprocess=request.preprocess,
                         precision=request.precision)
    # a file a killed export put in place without committing its unit is not an export: the next write rolls it back
    present = os.path.exists(path) and not dead_unit_made(path)
    kind = None
    if request.fmt in ("trt", "triton"):
        check_options(request.build)  # refuse impossible flag combinations before the export runs
        if request.fmt == "trt":
            kind = check_engine_output(request)  # an engine (a file) here, else a bundle (a folder)
        check_final_destination(request, request.model, kind, onnx_exists=present)
    evaluator = make_evaluator() if make_evaluator else None
    precision = request.precision
    if precision.mode != "fp32":
        prepare(precision, opset=request.opset, evaluator=evaluator)  # the calibration folder, the held-out set
        if precision.mode == "int8" and request.checkpoint is None and request.validate:
            raise InputError(INT8_NEEDS_WEIGHTS)

    existed = {os.path.abspath(p) for p in (path, sidecar_path(path)) if os.path.lexists(p)}
    missing = []  # the folders the ONNX step will make, deepest first
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        missing.append(folder)
        folder = os.path.dirname(folder)
    if present and not request.force:
        manifest = reuse(request, path, evaluator, report)
    else:
        manifest = export(request, path, verify, evaluator, report)
        if not request.validate:
            warnings.warn(f"{path} was not compared with PyTorch (--no-validate); its manifest says so and every "
                          "command that reads it will warn; segdeploy validate compares it", stacklevel=1)
    report.onnx(path, manifest)
    outcome = ExportOutcome(path, manifest)
    if request.fmt in ("trt", "triton"):
        written = identities(*(p for p in (path, sidecar_path(path)) if os.path.abspath(p) not in existed))
        try:
            build_on(request, path, manifest.model.name, outcome, report)
        except BaseException:
            remove_unchanged(written)  # a command that fails leaves nothing behind: not its ONNX step either
            remove_made(missing)
            raise
    return outcome


def export(request: ExportRequest, path: str, verify, evaluator, report: Report):
    from segdeploy.export.onnx import export_onnx

    with report.status(f"exporting {request.model}") as say:
        result = export_onnx(request.model, path, checkpoint=request.checkpoint, height=request.height,
                             width=request.width, batch=request.batch, dynamic=request.dynamic, opset=request.opset,
                             simplify=request.simplify, outputs=request.outputs, preprocess=request.preprocess,
                             force=request.force, verify=verify if request.validate else None, progress=say,
                             precision=request.precision, evaluator=evaluator, threads=request.threads,
                             unverified="exported with --no-validate")
    return result.manifest


def reuse(request: ExportRequest, path: str, evaluator, report: Report):
    """The manifest of the artifact at ``path`` when it is this export (checked against its manifest and graph
    hash), announced as reused; one line and exit 2 when it is another export (it is never overwritten without
    --force)."""
    precision = request.precision
    with report.status(f"checking {path} against this export") as say:
        def wanted():
            say("hashing the weights" + (" and the calibration images" if precision.calib else ""))
            return export_identity(request.model, checkpoint=request.checkpoint, batch=request.batch,
                                   height=request.height, width=request.width, dynamic=request.dynamic,
                                   opset=request.opset, simplify=request.simplify, outputs=request.outputs,
                                   preprocess=request.preprocess, precision=precision, evaluator=evaluator,
                                   verify=request.validate)

        manifest, why = reusable(path, wanted)
    if manifest is None:
        raise ArtifactError(f"{path} exists and is another export ({why}); pass --force to replace it, or choose "
                            "another --output")
    report.line(f"reused {path}: the same model, weights, size and options, and its graph still hashes to its "
                "manifest's sha256 (--force exports it again)")
    warn_caveats(manifest, path)
    return manifest


def build_on_onnx(request: ExportRequest, report: Report) -> ExportOutcome:
    """--fmt trt/triton from an ONNX artifact segdeploy wrote: its manifest says what it is."""
    if request.fmt == "onnx":
        raise InputError("--from-onnx builds on an ONNX artifact: give --fmt trt or --fmt triton with it")
    if request.checkpoint:
        raise InputError("--checkpoint goes with --model; the ONNX artifact carries its weights")
    path = request.from_onnx
    if not formats.is_onnx_name(path):
        raise InputError(f"--from-onnx takes an ONNX artifact (.onnx), not {path}")
    manifest = read_runnable_manifest(path)
    asked = request.build.precision  # None, or fp32 (the flag's default): the graph's
    if asked not in (None, "fp32") and asked != manifest.precision.mode:
        raise InputError(f"{path} is {manifest.precision.mode}; the engine's precision is the graph's (leave "
                         "--precision out, or export that precision first)")
    request = dataclasses.replace(request, build=dataclasses.replace(request.build,
                                                                     precision=manifest.precision.mode))
    check_options(request.build)
    kind = check_engine_output(request) if request.fmt == "trt" else None
    check_final_destination(request, manifest.model.name, kind, onnx_exists=True)
    report.source(path, manifest)
    outcome = ExportOutcome(path, manifest)
    build_on(request, path, manifest.model.name, outcome, report)
    return outcome


def build_on(request: ExportRequest, onnx_path: str, model: str, outcome: ExportOutcome, report: Report) -> None:
    if request.fmt == "trt":
        outcome.engine = build_engine(request, onnx_path, report)
    else:
        outcome.repository = write_triton(request, onnx_path, model, report)


def build_engine(request: ExportRequest, onnx_path: str, report: Report | None = None) -> EngineResult:
    """--fmt trt: the engine (or the build bundle) from ``onnx_path``."""
    report = report or Report()
    result = export_engine(onnx_path, request.build, request.output, force=request.force, log=report.line,
                           builders=request.builders, engine_format=request.engine_format)
    report.engine(result)
    verb = "kept" if any(n.startswith("reused") for n in result.notes) else "wrote"
    report.line(f"{verb} {'the engine' if result.kind == 'engine' else 'the build bundle (a folder)'} {result.path}")
    return result


def write_triton(request: ExportRequest, onnx_path: str, model: str, report: Report | None = None) -> str:
    """--fmt triton: the model's folder in the repository, with the engine built first for tensorrt_plan."""
    report = report or Report()
    artifact = onnx_path
    if backends.get(request.platform).consumes == "engine":
        artifact = export_engine(onnx_path, request.build, force=request.force, log=report.line,
                                 builders=("tensorrt-python", "trtexec")).path
    repository = request.repository
    existed = os.path.exists(os.path.join(repository, model)) and not request.force
    folder = triton.write_repository(artifact, repository, platform=request.platform,
                                     instance_kind=request.instance_kind, instances=request.instances,
                                     force=request.force)
    if existed:  # kept by write_repository: it holds exactly these files
        report.line(f"reused {folder}: it holds this model, config and manifest already")

    for warning in triton.serving_warnings(request.platform, request.build.version_compatible):
        report.line(f"warning: {warning}")
    report.line(f"Triton model repository: {folder} (serve with: tritonserver --model-repository "
                f"{os.path.dirname(folder)})")
    return folder


def onnx_output(request: ExportRequest) -> str | None:
    """Where the ONNX artifact goes: --output itself for onnx; beside the engine for trt; default for triton."""
    if request.fmt == "onnx" or not request.output:
        return request.output
    if request.fmt == "trt":
        return formats.with_suffix(request.output, formats.ONNX_SUFFIX)
    return None


def check_engine_output(request: ExportRequest) -> str:
    """What --fmt trt writes here ("engine", a file, where TensorRT is present; "bundle", a folder, where it is
    not), with --output refused before any work when it names the other kind."""
    kind = planned_kind()
    output = request.output
    if output:
        engine_name = formats.is_engine_name(output)
        if kind == "engine" and not engine_name:
            raise InputError(f"--fmt trt builds an engine here: --output must end in .engine or .plan, not {output}")
        if kind == "bundle" and (engine_name or formats.suffix_of(output) in (formats.ONNX_SUFFIX,
                                                                               formats.MANIFEST_SUFFIX)):
            raise InputError(f"no TensorRT here, so --fmt trt writes a build bundle (a folder) to build the engine "
                             f"on the target: give --output a folder name, not the file name {output}")
    return kind


def check_final_destination(request: ExportRequest, model: str, kind: str | None, onnx_exists: bool = False) -> None:
    """The engine, bundle or model repository --fmt trt/triton ends with must be writable before minutes of export
    and build: a repository that is a file, a folder without permission, and an existing engine, bundle or model
    folder without --force, unless the ONNX artifact exists (it may then be this very build, which is reused; the
    build step decides)."""
    output, force = request.output, request.force
    if request.fmt == "trt" and output:
        if kind == "engine":
            if not (onnx_exists and os.path.exists(output)):
                check_destination(output, force, "engine")
            return
        bundle = os.path.abspath(output)
        if os.path.exists(bundle) and not os.path.isdir(bundle):
            raise InputError(f"--output {output} is a file; without TensorRT --fmt trt writes a bundle folder")
        if os.path.exists(bundle) and not force and not onnx_exists:
            raise InputError(f"{output} exists; pass --force to replace the bundle")
        check_destination(os.path.join(os.path.dirname(bundle), f".{os.path.basename(bundle)}.probe"), True,
                          "build bundle")
        return
    if request.fmt == "triton":
        repository = os.path.abspath(request.repository)
        if os.path.exists(repository) and not os.path.isdir(repository):
            raise InputError(f"--output {output} is a file; --fmt triton writes a model repository folder")
        target = os.path.join(repository, model)
        if os.path.exists(target) and not force and not onnx_exists:
            raise InputError(f"{target} exists; pass --force to replace the model")
        check_destination(os.path.join(repository, f".{model}.probe"), True, "model repository")
        # the model is staged beside the repository (Triton loads every folder inside it)
        check_destination(os.path.join(os.path.dirname(repository), f".{model}.probe"), True,
                          "folder the model is staged in, beside the repository,")

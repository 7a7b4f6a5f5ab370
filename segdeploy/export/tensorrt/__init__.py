"""TensorRT engines from segdeploy ONNX artifacts: lint, build plan, trtexec command lines, bundle, builder.

:func:`export_engine` takes an ONNX artifact segdeploy wrote (its manifest says its precision and shapes) and
builds with the first builder present: the TensorRT Python API, else trtexec (on PATH, or JetPack's
/usr/src/tensorrt/bin/trtexec), else it writes a build bundle to build on the target. Engines are written with
segdeploy's header (segdeploy.artifact.engine_header), atomically, and never over an existing file without force.

Which tools read which file: the ``.engine`` (header + plan) is read by segdeploy's runner, the C++ library and
Ultralytics (the same header layout); trtexec ``--loadEngine``, Polygraphy, DeepStream and Triton read only a bare
plan, which ``engine_format="plan"`` writes (``export --engine-format plan``, or an ``--output`` ending in .plan).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass, field

from segdeploy import tensorrt_host
from segdeploy.artifact import EngineInfo, Manifest, read_manifest
from segdeploy.artifact.engine_header import pack, read_header
from segdeploy.artifact.formats import ENGINE_FORMATS, engine_format_of
from segdeploy.artifact.onnx_file import check_graph_unchanged, file_sha256, load_onnx
from segdeploy.errors import ArtifactError, SegdeployError
from segdeploy.export.tensorrt.builder import build_serialized, import_tensorrt
from segdeploy.export.tensorrt.bundle import write_bundle
from segdeploy.export.tensorrt.plan import BuildOptions, BuildPlan, check_plan, make_plan
from segdeploy.export.tensorrt.trtexec import trtexec_command
from segdeploy.files.atomic import write_bytes_atomic
from segdeploy.files.destinations import make_parents, remove_made
from segdeploy.files.locking import os_reason

BUILDERS = ("tensorrt-python", "trtexec", "bundle")
# The releases a bundle is linted for: JetPack 6's TensorRT and the current major.
BUNDLE_LINT_TARGETS = ("10.3", "11")


@dataclass
class EngineResult:
    path: str  # the engine file, or the bundle folder
    kind: str  # "engine" | "bundle"
    builder: str  # one of BUILDERS
    plan: BuildPlan
    tensorrt_version: str | None = None
    manifest: object = None  # the engine's manifest (its header); None for a bundle
    findings: list = field(default_factory=list)  # lint findings (warnings; errors stop the export)
    command: list[str] | None = None  # the trtexec argv, when trtexec built it
    notes: list[str] = field(default_factory=list)


class Host:
    """What export_engine asks of the machine; tests replace it (or tensorrt_host's functions) to take every branch
    without TensorRT."""

    def find_tensorrt(self):
        return tensorrt_host.find_tensorrt()

    def import_tensorrt(self):
        return import_tensorrt()

    def find_trtexec(self):
        return tensorrt_host.find_trtexec()

    def trtexec_version(self, path):
        return tensorrt_host.trtexec_version(path)

    def gpu(self):
        return tensorrt_host.gpu_info(0)

    def platform(self):
        return tensorrt_host.host_platform()

    def run(self, argv):
        return subprocess.run(argv, capture_output=True, text=True)


def default_output(onnx_path: str, kind: str, engine_format: str = "engine") -> str:
    stem = os.path.splitext(os.fspath(onnx_path))[0]
    if kind != "engine":
        return stem + "_trt_bundle"
    return stem + ENGINE_FORMATS["plan" if engine_format == "plan" else "engine"]


def engine_format_for(output, engine_format: str | None) -> str:
    """The format asked for, else the one the output's suffix names (.plan: the bare plan), else the engine."""
    if engine_format is not None:
        if engine_format not in ENGINE_FORMATS:
            raise SegdeployError(f"unknown engine format {engine_format!r}; one of {', '.join(ENGINE_FORMATS)}")
        return engine_format
    return engine_format_of(output)


def export_engine(onnx_path, plan: BuildPlan | BuildOptions | None = None, output=None, *, force: bool = False,
                  builders=BUILDERS, lint: bool = True, host: Host | None = None, log=None,
                  engine_format: str | None = None, onnx_sha256: str | None = None) -> EngineResult:
    """Build a TensorRT engine (or a build bundle) from the ONNX artifact ``onnx_path``; ``engine_format`` "plan"
    writes the bare plan (no segdeploy header) for trtexec, Polygraphy, DeepStream and Triton. ``onnx_sha256``: the
    file's SHA-256 as a bundle records it; a file that does not hash to it is refused before anything is built. The
    engine's header records the hash of the file the builder read (checked again after the build)."""
    from segdeploy.models.facts import check_manifest

    host = host or Host()
    log = log or (lambda message: None)
    onnx_path = os.fspath(onnx_path)
    onnx_sha = _onnx_sha256(onnx_path)
    if onnx_sha256 is not None and onnx_sha != onnx_sha256:
        raise ArtifactError(f"{onnx_path} hashes to sha256 {onnx_sha[:12]}, not the {onnx_sha256[:12]} its bundle "
                            "records: the graph was changed or swapped since export; export the bundle again")
    model = load_onnx(onnx_path)
    manifest = read_manifest(onnx_path, model)
    if manifest.format != "onnx":
        raise ArtifactError(f"{onnx_path} is a {manifest.format} artifact; engines are built from ONNX artifacts")
    check_graph_unchanged(model, manifest, onnx_path)  # an edited graph never builds under its old name
    check_manifest(manifest, onnx_path)
    if not isinstance(plan, BuildPlan):
        plan = make_plan(manifest, plan)
    else:
        check_plan(plan, manifest)
    engine_format = engine_format_for(output, engine_format)
    builder, trt, trtexec, version, notes = _choose_builder(host, builders)
    kind = "bundle" if builder == "bundle" else "engine"
    output = os.fspath(output) if output else default_output(onnx_path, kind, engine_format)
    existed = os.path.exists(output) and not force
    if existed and kind == "engine" and engine_format == "plan":
        raise ArtifactError(f"{output} exists (a bare plan carries nothing to check it against this build); pass "
                            "--force to overwrite it")
    if version:
        plan.check_version(version)  # before the lint, which knows only releases segdeploy builds with
    findings = _lint(model, [version] if version else list(BUNDLE_LINT_TARGETS), onnx_path, lint)
    if builder == "bundle":
        path = write_bundle(onnx_path, manifest, plan, output, onnx_sha256=onnx_sha,
                            lint_notes=[f.line() for f in findings], force=force)
        if existed:  # write_bundle kept it: it holds exactly this bundle
            notes.append(f"reused {path}: it holds this bundle already (the same ONNX and build plan)")
        notes.append("no TensorRT here: build the engine on the target with `segdeploy build-engine "
                     f"{path}` (or ./build_engine.sh there)")
        return EngineResult(path, "bundle", builder, plan, findings=findings, notes=notes + list(plan.notes))
    platform = host.platform()
    if plan.hardware_compat != "none" and platform.jetson:
        raise SegdeployError("hardware-compatible engines are not supported on Jetson (TensorRT builds them for "
                             "discrete Ampere-or-newer GPUs only): build without --hardware-compat")
    gpu = host.gpu()
    if gpu is None:
        raise SegdeployError("cannot tell this GPU's name and compute capability (no CUDA torch, no nvidia-smi, "
                             "not a Jetson), which the engine header records")
    if existed:
        kept = _same_engine(output, manifest, plan, version, gpu, onnx_sha, platform.name)
        if kept is None:
            raise ArtifactError(f"{output} exists and is another engine (not built from this ONNX with this plan, "
                                "TensorRT release and GPU); pass --force to overwrite it")
        return EngineResult(output, "engine", kept.engine.builder, plan, version, kept, findings, None,
                            notes + [f"reused {output}: built from this ONNX with this plan, TensorRT {version} "
                                     f"and GPU (SM {gpu.compute_capability}) already"] + list(plan.notes))
    command = None
    log(f"building with {builder} (TensorRT {version}) on {gpu.name} (SM {gpu.compute_capability})")
    if builder == "tensorrt-python":
        serialized, strongly_typed = build_serialized(trt, onnx_path, plan)
    else:
        serialized, command = _build_with_trtexec(host, trtexec, int(version.split(".")[0]), onnx_path, plan, output)
        strongly_typed = plan.typing(version).strongly_typed
    if file_sha256(onnx_path) != onnx_sha:
        raise ArtifactError(f"{onnx_path} changed while the engine was built; nothing was written: build again")
    engine = engine_manifest(manifest, plan, tensorrt_version=version, gpu=gpu, builder=builder,
                             onnx_sha256=onnx_sha, plan_bytes=serialized, strongly_typed=strongly_typed,
                             platform=platform.name)

    if engine_format == "plan":
        write_bytes_atomic(output, serialized, force=force)
        notes.append("a bare plan (no segdeploy header) for trtexec --loadEngine, Polygraphy, DeepStream and Triton; "
                     "segdeploy's runner and C++ library load it with a warning (nothing to check it against)")
    else:
        write_bytes_atomic(output, pack(engine, serialized), force=force)
    return EngineResult(output, "engine", builder, plan, version, engine, findings, command,
                        notes + list(plan.notes))


def planned_kind(builders=BUILDERS, host: Host | None = None) -> str:
    """What export_engine will write here: "engine" where a TensorRT builder is present, else "bundle" (a folder)."""
    try:
        builder = _choose_builder(host or Host(), builders)[0]
    except SegdeployError:
        return "engine"  # export_engine says why no builder works
    return "bundle" if builder == "bundle" else "engine"


def _onnx_sha256(path: str) -> str:
    if not os.path.isfile(path):
        raise ArtifactError(f"artifact not found: {path}" if not os.path.isdir(path) else
                            f"{path} is a folder, not an ONNX file")
    try:
        return file_sha256(path)
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {os_reason(exc)}") from None


def _same_engine(path: str, manifest, plan: BuildPlan, version: str, gpu, onnx_sha: str, platform: str):
    """The header manifest of the engine at ``path`` when it is the engine this build would make (the same ONNX,
    plan, TensorRT release and GPU, its plan intact); else None."""
    try:
        found, offset = read_header(path)
        if found is None or found.engine is None:
            return None
        with open(path, "rb") as f:
            f.seek(offset)
            plan_bytes = f.read()
    except (ArtifactError, OSError):
        return None
    e = found.engine
    if e.plan_sha256 != hashlib.sha256(plan_bytes).hexdigest():
        return None
    expected = engine_manifest(manifest, plan, tensorrt_version=version, gpu=gpu, builder=e.builder,
                               onnx_sha256=onnx_sha, plan_bytes=plan_bytes, strongly_typed=e.strongly_typed,
                               platform=platform)
    return found if expected.to_dict() == found.to_dict() else None


def _choose_builder(host: Host, builders):
    """(builder, tensorrt module, trtexec path, TensorRT version, notes): the first builder present."""
    notes = []
    if "tensorrt-python" in builders:
        install = host.find_tensorrt()
        if install.installed:
            try:
                trt = host.import_tensorrt()
                return "tensorrt-python", trt, None, str(trt.__version__), notes
            except SegdeployError as exc:
                notes.append(f"TensorRT {install.version} ({install.source}) is installed but {exc}")
    if "trtexec" in builders:
        trtexec = host.find_trtexec()
        if trtexec:
            version = host.trtexec_version(trtexec)
            if version is None:
                raise SegdeployError(f"{trtexec} did not report its TensorRT version (its --help banner)")
            return "trtexec", None, trtexec, version, notes
    if "bundle" in builders:
        return "bundle", None, None, None, notes
    detail = f" ({notes[0]})" if notes else ""
    raise SegdeployError(f"no TensorRT builder here (neither the Python package nor trtexec){detail}; build on the "
                         "machine that has TensorRT")


def _lint(model, targets, onnx_path, enabled):
    from segdeploy.export.tensorrt.lint import ERROR, lint_model

    if not enabled:
        return []
    findings, failing = [], {}
    for target in targets:
        found = lint_model(model, target)
        errors = [f for f in found if f.severity == ERROR]
        if errors:
            failing[target] = errors
        findings += [f for f in found if f not in findings]
    # a bundle is refused only when no release it targets can build it; a build, when its own release cannot
    if failing and len(failing) == len(targets):
        target, errors = next(iter(failing.items()))
        more = f" (and {len(errors) - 1} more; `segdeploy lint-trt {onnx_path}` lists them)" if len(errors) > 1 else ""
        raise SegdeployError(f"TensorRT {target} would refuse {onnx_path}: {errors[0].line()}{more}")
    return findings


def _build_with_trtexec(host: Host, trtexec: str, major: int, onnx_path: str, plan: BuildPlan, output: str):
    parent = os.path.dirname(os.path.abspath(output))
    made = make_parents(parent)
    # named like segdeploy.files' temp files, so the next writer of this engine removes what a killed build left
    fd, bare = tempfile.mkstemp(prefix=f".{os.path.basename(output)}.", suffix=".plan.tmp", dir=parent)
    os.close(fd)
    try:
        argv = trtexec_command(plan, os.path.abspath(onnx_path), bare, major, trtexec=trtexec)
        done = host.run(argv)
        if done.returncode != 0:
            raise SegdeployError(f"trtexec failed (exit {done.returncode}): {_trtexec_error(done)}")
        with open(bare, "rb") as f:
            serialized = f.read()
        if not serialized:
            raise SegdeployError("trtexec exited 0 but wrote no engine")
        return serialized, argv
    finally:
        if os.path.exists(bare):
            os.unlink(bare)
        if made and not os.path.exists(output):
            remove_made(made)


def _trtexec_error(done) -> str:
    """The first error line trtexec printed ("[E] ..."), else its last line."""
    lines = [line.strip() for line in ((done.stdout or "") + "\n" + (done.stderr or "")).splitlines() if line.strip()]
    errors = [line for line in lines if "[E]" in line or "Error" in line]
    return (errors or lines or ["no output"])[0][:300]


def engine_manifest(manifest, plan: BuildPlan, *, tensorrt_version: str, gpu, builder: str, onnx_sha256: str,
                    plan_bytes: bytes, strongly_typed: bool, platform: str | None = None):
    """The manifest an engine's header carries: the ONNX artifact's, with the engine facts filled in."""
    info = EngineInfo(tensorrt_version=tensorrt_version, gpu_name=gpu.name, compute_capability=gpu.compute_capability,
                      onnx_sha256=onnx_sha256, builder=builder, version_compatible=plan.version_compatible,
                      hardware_compatibility=plan.hardware_compat, dla_core=plan.dla_core,
                      gpu_fallback=plan.gpu_fallback, strongly_typed=strongly_typed, profiles=plan.profile_dicts(),
                      workspace_mb=plan.workspace_mb, opt_level=plan.opt_level,
                      plan_sha256=hashlib.sha256(plan_bytes).hexdigest(), tf32=plan.tf32,
                      platform=platform if platform in ("x86_64", "aarch64", "jetson") else None)
    engine = manifest.replace(format="engine", engine=info)
    return Manifest.from_dict(engine.to_dict(), "the engine manifest")  # validated before it is written

"""The build bundle: what a machine without TensorRT writes so the engine is built where it will run.

A bundle is a folder holding the ONNX artifact, its manifest, the build plan (``build_plan.json``) and
``build_engine.sh``, which runs the exact trtexec command for the TensorRT it finds (10.x or 11.x, same profiles
and precision). Export on a workstation, copy the folder to the Jetson, then either ``segdeploy build-engine
BUNDLE`` (a self-describing engine with segdeploy's header) or ``./build_engine.sh`` (a bare plan, where segdeploy
is not installed; it loads with a warning).
"""
from __future__ import annotations

import json
import os

from segdeploy.artifact.formats import ENGINE_FORMATS, ONNX_SUFFIX, is_engine_name
from segdeploy.artifact.manifest_store import read_json_file
from segdeploy.errors import ArtifactError
from segdeploy.export.tensorrt.plan import DLA_RELEASES, SAME_CC_SINCE, BuildPlan, check_plan
from segdeploy.export.tensorrt.trtexec import command_line, trtexec_command
from segdeploy.files.atomic import folder_holds, write_folder_atomic
from segdeploy.files.locking import os_reason

BUNDLE_VERSION = 1
PLAN_FILE = "build_plan.json"
SCRIPT_FILE = "build_engine.sh"
BUNDLE_TIMING_CACHE = "timing.cache"


def _version_int(version: tuple[int, ...]) -> int:
    major, minor, patch = (tuple(version) + (0, 0, 0))[:3]
    return major * 10000 + minor * 100 + min(patch, 99)


def accepted_versions(plan: BuildPlan, major: int) -> tuple[int, int] | None:
    """The NV_TENSORRT_VERSION range (major*10000 + minor*100 + patch) of release ``major`` that can build
    ``plan``, or None when no release of that major can."""
    low, high = major * 10000, major * 10000 + 9999
    if plan.dla:
        spans = [(max(low, _version_int(a)), min(high, _version_int(b))) for a, b in DLA_RELEASES]
        spans = [s for s in spans if s[0] <= s[1]]
        if not spans:
            return None
        low, high = spans[0]
    if plan.hardware_compat == "same_compute_capability":
        low = max(low, _version_int(SAME_CC_SINCE))
    return (low, high) if low <= high else None


def _release(n: int) -> str:
    return f"{n // 10000}.{n // 100 % 100}.{n % 100}"


def build_script(plan: BuildPlan, onnx_name: str, plan_name: str) -> str:
    """build_engine.sh: detect trtexec's TensorRT release from its banner, then run the command for it."""
    cases = []
    for major in (10, 11):
        span = accepted_versions(plan, major)
        if span is None:
            cases.append(f'  {major})\n    echo "build_engine.sh: this plan cannot be built with TensorRT {major} '
                         f'(see build_plan.json)" >&2\n    exit 2 ;;')
            continue
        argv = trtexec_command(plan, onnx_name, plan_name, major, trtexec="TRTEXEC")
        if plan.timing_cache:
            argv = [a if not a.startswith("--timingCacheFile=") else f"--timingCacheFile={BUNDLE_TIMING_CACHE}"
                    for a in argv]
        command = '"$TRTEXEC" ' + command_line(argv[1:])
        low, high = span
        cases.append(
            f"  {major})\n"
            f'    if [ "$VERSION" -lt {low} ] || [ "$VERSION" -gt {high} ]; then\n'
            f'      echo "build_engine.sh: this plan needs TensorRT {_release(low)} to {_release(high)}; trtexec '
            f'is $RELEASE" >&2\n      exit 2\n    fi\n'
            f"    set -x\n    {command} ;;")
    jetson_check = ""
    if plan.hardware_compat != "none":
        jetson_check = ('if [ -e /etc/nv_tegra_release ]; then\n  echo "build_engine.sh: this plan is hardware-'
                        'compatible, which Jetsons do not support; export it again without --hardware-compat" >&2\n'
                        '  exit 2\nfi\n')
    return f"""#!/usr/bin/env bash
# Build {plan_name} (a bare TensorRT plan) from {onnx_name} with trtexec, TensorRT 10.x or 11.x: the same
# optimization profile and precision as `segdeploy build-engine <this folder>`, which also writes segdeploy's
# self-describing header (prefer it where segdeploy is installed). Set TRTEXEC to use another trtexec.
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
if [ ! -x "$TRTEXEC" ]; then
  echo "build_engine.sh: trtexec not found (not on PATH nor /usr/src/tensorrt/bin); set TRTEXEC" >&2
  exit 2
fi
# trtexec's banner: "&&&& RUNNING TensorRT.trtexec [TensorRT v100300] ..." (major*10000 + minor*100 + patch)
VERSION="$("$TRTEXEC" --help 2>&1 | sed -n 's/.*\\[TensorRT v\\([0-9][0-9]*\\)\\].*/\\1/p' | head -n 1)"
if [ -z "$VERSION" ]; then
  echo "build_engine.sh: cannot read the TensorRT version from $TRTEXEC --help" >&2
  exit 2
fi
RELEASE="$((VERSION / 10000)).$((VERSION / 100 % 100)).$((VERSION % 100))"
{jetson_check}case "$((VERSION / 10000))" in
{chr(10).join(cases)}
  *)
    if [ "$VERSION" -lt 100000 ]; then  # TensorRT 8.x printed major*1000 + minor*100 + patch
      echo "build_engine.sh: trtexec is TensorRT 8.x (v$VERSION); this bundle builds with TensorRT 10 or 11 (JetPack \
6.0 ships TensorRT 8.6: upgrade the Jetson to JetPack 6.1 or 6.2, TensorRT 10.3)" >&2
    else
      echo "build_engine.sh: trtexec is TensorRT $RELEASE; this bundle builds with TensorRT 10 or 11" >&2
    fi
    exit 2 ;;
esac
"""


def write_bundle(onnx_path: str, manifest, plan: BuildPlan, folder: str, *, onnx_sha256: str, lint_notes=(),
                 force: bool = False) -> str:
    """Write the bundle folder atomically (built beside it, then renamed); keep an existing one that holds exactly
    this bundle, refuse any other without ``force``."""
    folder = os.path.abspath(os.fspath(folder))
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    onnx_name, plan_name = stem + ONNX_SUFFIX, stem + ENGINE_FORMATS["plan"]
    bundle_plan = plan
    if plan.timing_cache:
        from dataclasses import replace

        bundle_plan = replace(plan, timing_cache=BUNDLE_TIMING_CACHE)
    document = {"bundle_version": BUNDLE_VERSION, "onnx": onnx_name, "onnx_sha256": onnx_sha256,
                "engine": stem + ENGINE_FORMATS["engine"], "trtexec_plan": plan_name, "plan": bundle_plan.to_dict(),
                "lint": list(lint_notes),
                "commands": {str(major): command_line(trtexec_command(bundle_plan, onnx_name, plan_name, major))
                             for major in (10, 11) if accepted_versions(bundle_plan, major)}}
    try:
        with open(onnx_path, "rb") as f:
            onnx_bytes = f.read()
    except OSError as exc:
        raise ArtifactError(f"cannot read {onnx_path}: {os_reason(exc)}") from None
    files = {onnx_name: onnx_bytes, f"{stem}.json": manifest.to_json().encode("utf-8"),
             PLAN_FILE: (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8"),
             SCRIPT_FILE: build_script(bundle_plan, onnx_name, plan_name).encode("utf-8")}
    if not force and folder_holds(folder, files):
        return folder
    if os.path.exists(folder) and not force:
        raise ArtifactError(f"{folder} exists and holds another bundle; pass --force to replace it")
    return write_folder_atomic(folder, files, force=force, executable=(SCRIPT_FILE,))


def inside(folder: str, name, what: str, source: str) -> str:
    """The path of ``name`` in ``folder``: a bare file name that stays inside the folder once resolved (symlinks
    included), or one ArtifactError line. Every path a bundle's JSON gives goes through here."""
    if not isinstance(name, str) or not name or name in (".", "..") or os.path.basename(name) != name or \
            "\\" in name or "\x00" in name:
        raise ArtifactError(f"{source}: {what} must name a file inside the bundle, not {name!r}")
    path = os.path.join(folder, name)
    real_folder = os.path.realpath(folder)
    if os.path.dirname(os.path.realpath(path)) != real_folder:
        raise ArtifactError(f"{source}: {what} {name!r} is a link out of the bundle ({os.path.realpath(path)}); a "
                            "bundle's files live in the bundle")
    return path


def read_bundle(folder: str) -> tuple[dict, BuildPlan, str]:
    """(bundle document, build plan, ONNX path) of a bundle folder, or one ArtifactError line. Every name the plan
    gives (onnx, engine, trtexec_plan, timing cache) is a file of the bundle; the returned document's ``engine`` and
    the plan's timing cache are paths inside the folder; the plan's settings pass the checks export applies to its
    flags (plan.check_plan; the ONNX artifact's own checks come when it is read)."""
    folder = os.fspath(folder)
    path = os.path.join(folder, PLAN_FILE)
    if not os.path.isdir(folder):
        raise ArtifactError(f"{folder} is not a build bundle folder")
    if not os.path.isfile(path):
        raise ArtifactError(f"{folder} is not a build bundle (no {PLAN_FILE})")
    inside(folder, PLAN_FILE, "the build plan", path)
    document = read_json_file(path, "a build plan")
    version = document.get("bundle_version") if isinstance(document, dict) else None
    if version != BUNDLE_VERSION:
        raise ArtifactError(f"{path}: bundle version {version!r} is not {BUNDLE_VERSION}; export the bundle again "
                            "with this segdeploy")
    onnx_path = inside(folder, document.get("onnx"), "'onnx'", path)
    engine_name = document.get("engine")
    engine_path = inside(folder, engine_name, "'engine'", path)
    if not is_engine_name(engine_name):
        raise ArtifactError(f"{path}: 'engine' must be an .engine or .plan file name, not {engine_name!r}")
    if "trtexec_plan" in document:
        inside(folder, document["trtexec_plan"], "'trtexec_plan'", path)
    digest = document.get("onnx_sha256")
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise ArtifactError(f"{path}: 'onnx_sha256' must be the ONNX file's SHA-256 (64 hex digits), not "
                            f"{digest!r}: without it the bundle's graph cannot be checked")
    plan_document = document.get("plan")
    if not isinstance(plan_document, dict):
        raise ArtifactError(f"{path}: 'plan' must be an object, not {type(plan_document).__name__}")
    try:
        plan = BuildPlan.from_dict(plan_document)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"{path}: its build plan is malformed ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:120]})") from None
    check_plan(plan, source=path)
    if plan.timing_cache is not None:
        from dataclasses import replace

        plan = replace(plan, timing_cache=inside(folder, plan.timing_cache, "the plan's timing_cache", path))
    if not os.path.isfile(onnx_path):
        raise ArtifactError(f"{folder}: the bundle's ONNX file {document['onnx']!r} is missing")
    return dict(document, engine=engine_path), plan, onnx_path

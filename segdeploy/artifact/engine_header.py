"""The segdeploy engine file: a length-prefixed JSON manifest, then TensorRT's serialized plan.

Layout (the one Ultralytics uses, so either tool reads the other's header): 4 bytes little-endian N, N bytes of
UTF-8 JSON (the artifact manifest with its ``engine`` facts), then the plan. Everything about an engine (model,
classes, I/O, profiles, TensorRT version, GPU and compute capability) can be read without TensorRT, and a runner
can refuse a foreign engine with one line before TensorRT tries to deserialize it (TensorRT itself only returns
None and logs). A plan written by trtexec has no header: its first four bytes are TensorRT's own magic, which read
as a length far beyond any header, so headerless engines are recognised, not misread.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from segdeploy.artifact.formats import TENSORRT_MAGIC, sniff
from segdeploy.artifact.manifest import Manifest
from segdeploy.artifact.manifest_store import parse_json
from segdeploy.errors import ArtifactError
from segdeploy.files.journal import wait_for_writers
from segdeploy.files.locking import os_reason

MAX_HEADER_BYTES = 16 << 20


def pack(manifest, plan: bytes) -> bytes:
    """The engine file: the header records the SHA-256 of the plan it carries (every reader checks it)."""
    digest = hashlib.sha256(plan).hexdigest()
    if manifest.engine is not None:
        if manifest.engine.plan_sha256 not in (None, digest):
            raise ValueError("the engine manifest's plan_sha256 is not the plan's")
        manifest = manifest.replace(engine=dataclasses.replace(manifest.engine, plan_sha256=digest))
    header = json.dumps(manifest.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return len(header).to_bytes(4, "little") + header + bytes(plan)


def _not_an_engine(source: str, head: bytes, kind: str) -> ArtifactError:
    what = {"onnx": "it holds an ONNX model", "json": "it holds JSON (a manifest?)"}.get(
        kind, f"it has no segdeploy header and does not start with TensorRT's plan magic ({head[:4]!r})")
    return ArtifactError(f"{source} is not a TensorRT engine: {what}")


def _check_plan_hash(manifest, digest: str, source: str) -> None:
    recorded = manifest.engine.plan_sha256
    if recorded is None:
        raise ArtifactError(f"{source}: its header records no plan_sha256, so its plan cannot be checked: not an "
                            "engine segdeploy built; build it with segdeploy build-engine or export --fmt trt")
    if recorded != digest:
        raise ArtifactError(f"{source}: its plan does not hash to the sha256 its header records ({recorded[:12]}): "
                            "the plan was damaged, truncated or swapped since it was built")


def split(data: bytes, source: str = "engine"):
    """(manifest or None, plan bytes) of an engine file's contents."""
    if len(data) < 4:
        raise ArtifactError(f"{source} is {len(data)} bytes: not an engine")
    n = int.from_bytes(data[:4], "little")
    if not (0 < n <= min(MAX_HEADER_BYTES, len(data) - 4)) or data[4:5] != b"{":
        if data[:4] != TENSORRT_MAGIC:
            raise _not_an_engine(source, data, "json" if data.lstrip()[:1] in (b"{", b"[") else "unknown")
        return None, data  # headerless (trtexec): TensorRT's magic is no plausible header length
    document = parse_json(data[4:4 + n], f"{source}: its segdeploy header", "an engine header")
    manifest = Manifest.from_dict(document, f"{source} (engine header)")
    if manifest.format != "engine":
        raise ArtifactError(f"{source}: its header describes a {manifest.format} artifact, not an engine")
    plan = data[4 + n:]
    if not plan:
        raise ArtifactError(f"{source} has a header but no serialized engine after it (truncated?)")
    _check_plan_hash(manifest, hashlib.sha256(plan).hexdigest(), source)
    return manifest, plan


def read_header(path: str | os.PathLike):
    """(manifest or None, offset of the plan) without reading the whole plan into memory."""
    path = os.fspath(path)
    wait_for_writers(path)  # a live writer finishes first; half a unit a killed one left is refused
    if os.path.isdir(path):
        raise ArtifactError(f"{path} is a folder, not an engine")
    if not os.path.isfile(path):
        raise ArtifactError(f"engine not found: {path}")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4:
                raise ArtifactError(f"{path} is {size} bytes: not an engine")
            n = int.from_bytes(head, "little")
            body = f.read(n) if 0 < n <= min(MAX_HEADER_BYTES, size - 4) else b""
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {os_reason(exc)}") from None
    if body[:1] != b"{":
        if head != TENSORRT_MAGIC:
            raise _not_an_engine(path, head, sniff(path))
        return None, 0  # a bare plan (trtexec's): loaded with a warning
    document = parse_json(body, f"{path}: its segdeploy header", "an engine header")
    manifest = Manifest.from_dict(document, f"{path} (engine header)")
    if manifest.engine is None or manifest.format != "engine":
        raise ArtifactError(f"{path}: its header is the manifest of a{'n' if manifest.format == 'onnx' else ''} "
                            f"{manifest.format} artifact without engine facts (TensorRT version, GPU), not an "
                            "engine's; build the engine with segdeploy export --fmt trt or build-engine")
    if size == 4 + n:
        raise ArtifactError(f"{path} has a header but no serialized engine after it (truncated?)")
    _check_plan_hash(manifest, _file_sha256(path, 4 + n), path)
    return manifest, 4 + n


def _file_sha256(path: str, offset: int) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {os_reason(exc)}") from None
    return digest.hexdigest()


def compatibility_problem(engine, tensorrt_version: str, compute_capability: str,
                          platform: str | None = None) -> str | None:
    """Why an engine built as ``engine`` (EngineInfo) cannot run under this TensorRT on this GPU, or None.

    TensorRT plans are tied to the TensorRT version that built them, build number included (10.3.0.26 and 10.3.0.30
    are different releases to the runtime; a version without one, as trtexec's banner gives, matches any build),
    unless built version-compatible (and then only forwards: a 10.x version-compatible engine runs on 11.x, not the
    reverse), and to the GPU's compute capability unless built hardware-compatible (``ampere_plus``: any SM >= 8.0;
    ``same_compute_capability``: the same SM on another GPU model). Jetsons run neither hardware-compatible engines
    nor engines built for discrete GPUs, whatever the SM says: ``platform`` ("jetson", "x86_64", "aarch64") is
    checked against the one the header records.
    """
    built, here = _version_tuple(engine.tensorrt_version), _version_tuple(tensorrt_version)
    width = 4 if len(built) >= 4 and len(here) >= 4 else 3
    if built[:width] != here[:width]:
        if not engine.version_compatible:
            return (f"built by TensorRT {engine.tensorrt_version}, this is TensorRT {tensorrt_version}; rebuild it "
                    "here (or build it --version-compatible)")
        if here[:3] < built[:3]:
            return (f"a version-compatible engine built by TensorRT {engine.tensorrt_version} runs on that or a "
                    f"newer TensorRT, not on {tensorrt_version}")
    built_on = getattr(engine, "platform", None)
    if platform is not None and built_on is not None and (platform == "jetson") != (built_on == "jetson"):
        where = "a Jetson" if built_on == "jetson" else f"{built_on} with a discrete GPU"
        return (f"built on {where} ({engine.gpu_name}), this is {'a Jetson' if platform == 'jetson' else platform}: "
                "Jetson and discrete-GPU engines do not run on each other (hardware compatibility does not cover "
                "Jetson); rebuild it here")
    if platform == "jetson" and engine.hardware_compatibility != "none":
        return (f"built hardware-compatible ({engine.hardware_compatibility}), which Jetsons do not run; rebuild it "
                "here without --hardware-compat")
    if engine.compute_capability != compute_capability:
        if engine.hardware_compatibility == "ampere_plus":
            if _version_tuple(compute_capability)[:1] < (8,):
                return (f"built hardware-compatible for Ampere and newer (SM >= 8.0); this GPU is SM "
                        f"{compute_capability}")
        else:
            return (f"built for compute capability {engine.compute_capability} ({engine.gpu_name}); this GPU is "
                    f"{compute_capability}: rebuild it here (or build it --hardware-compat)")
    return None


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or (0,)

"""One export cache for the commands that export on the fly (bench, predict, eval).

An entry is named by what it was exported from and how (model, weights file hash, size, dynamic, opset, graph
options, segdeploy version and the revision of the export passes), so another request never picks it up. A hit is
trusted only after its manifest has been read and the graph hashes to what the manifest records and says what was
asked for; a swapped-in, corrupt or stale file is rebuilt (and the caller told why), never used silently.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import TYPE_CHECKING

from segdeploy import __version__
from segdeploy.artifact.formats import ONNX_SUFFIX
from segdeploy.artifact.onnx_file import file_sha256, graph_sha256, load_onnx
from segdeploy.artifact.reader import ArtifactWarning, read_manifest
from segdeploy.errors import ArtifactError
from segdeploy.export.trace import DEFAULT_OPSET, GRAPH_REVISION
from segdeploy.files.destinations import check_destination, user_cache_dir

if TYPE_CHECKING:  # export.onnx builds models (PyTorch): imported when an export runs, not with the cache's names
    from segdeploy.export.onnx import Progress, Verifier

DEFAULT_CACHE_DIR = os.path.join("artifacts", "cache")


def _key(request: dict) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:12]


def cache_path(model: str, *, checkpoint=None, height: int, width: int, batch: int = 1, dynamic: bool = False,
               opset: int = DEFAULT_OPSET, simplify: bool = True, outputs: str = "logits", preprocess: bool = False,
               cache_dir: str = DEFAULT_CACHE_DIR) -> tuple[str, dict]:
    weights = "recipe" if checkpoint is None else file_sha256(checkpoint)
    request = {"model": model, "weights": weights, "batch": batch, "height": height, "width": width,
               "dynamic": dynamic, "opset": opset, "simplify": simplify, "outputs": outputs,
               "preprocess": preprocess, "segdeploy": __version__, "graph_revision": GRAPH_REVISION}
    shape = f"{height}x{width}" + (f"_b{batch}" if batch != 1 else "") + ("_dynamic" if dynamic else "")
    return os.path.join(cache_dir, f"{model}_{shape}_{_key(request)}{ONNX_SUFFIX}"), request


def stale_reason(path: str, request: dict, verified: bool = False) -> str | None:
    """Why the cached file at ``path`` cannot serve ``request`` (None: it can); ``verified``: the request wants a
    graph verified against PyTorch, which an entry exported for timing only is not."""
    from segdeploy.models.facts import check_manifest

    try:
        model_proto = load_onnx(path)
        with warnings.catch_warnings():  # an unverified entry is refused below, or served where that was asked for
            warnings.simplefilter("ignore", ArtifactWarning)
            manifest = read_manifest(path, model_proto)
        check_manifest(manifest, path)
    except ArtifactError as exc:
        return str(exc)
    if graph_sha256(model_proto) != manifest.graph_sha256:
        return "its graph does not hash to what its manifest records (edited or swapped)"
    profile = manifest.profile
    expected = {"model": manifest.model.name, "dynamic": manifest.export.dynamic, "opset": manifest.export.opset,
                "outputs": manifest.export.outputs, "preprocess": manifest.export.preprocess,
                "height": profile.height.opt, "width": profile.width.opt, "batch": profile.batch.opt}
    wrong = [k for k, v in expected.items() if request[k] != v]
    if wrong:
        return f"its manifest says {', '.join(f'{k}={expected[k]!r}' for k in wrong)}, not what was asked"
    if (manifest.weights.source == "recipe") != (request["weights"] == "recipe"):
        return f"it was exported from {manifest.weights.source} weights"
    if verified and manifest.validation.get("skipped"):
        return "it was exported without verification (for timing) and this use verifies"
    return None


def _fallback_dir(cache_dir: str) -> str | None:
    """The user's cache folder where the default cache (relative to the working folder) cannot be written, else
    None. A --cache-dir the user gave is never second-guessed."""
    if os.path.normpath(cache_dir) != os.path.normpath(DEFAULT_CACHE_DIR):
        return None
    try:
        check_destination(os.path.join(cache_dir, ".probe"), force=True, what="export cache")
    except ArtifactError:
        return user_cache_dir("exports")
    return None


def cached_onnx(model: str, *, checkpoint=None, height: int, width: int, batch: int = 1, dynamic: bool = False,
                opset: int = DEFAULT_OPSET, simplify: bool = True, outputs: str = "logits", preprocess: bool = False,
                cache_dir: str = DEFAULT_CACHE_DIR, verify: Verifier | None = None,
                progress: Progress | None = None, rebuild: bool = False) -> str:
    """The path of a cached ONNX export for this request, exporting (and verifying, when given ``verify``) it first
    when it is missing, stale or ``rebuild`` is set."""
    from segdeploy.export.onnx import export_onnx

    say = progress or (lambda step: None)
    options = dict(checkpoint=checkpoint, height=height, width=width, batch=batch, dynamic=dynamic, opset=opset,
                   simplify=simplify, outputs=outputs, preprocess=preprocess)
    path, request = cache_path(model, **options, cache_dir=cache_dir)
    if os.path.exists(path) and not rebuild:
        reason = stale_reason(path, request, verified=verify is not None)
        if reason is None:
            return path
        say(f"rebuilding the cached export {path}: {reason}")
    fallback = _fallback_dir(cache_dir)
    if fallback is not None:  # the default ./artifacts/cache where the working folder is read-only
        path, request = cache_path(model, **options, cache_dir=fallback)
        if os.path.exists(path) and not rebuild and stale_reason(path, request) is None:
            return path
    export_onnx(model, path, checkpoint=checkpoint, height=height, width=width, batch=batch, dynamic=dynamic,
                opset=opset, simplify=simplify, outputs=outputs, preprocess=preprocess, force=True, verify=verify,
                progress=progress)
    return path

"""The export cache that bench, predict and eval share: a hit is used only when its manifest and graph say it is
what was asked for; a corrupt, swapped-in or edited entry is rebuilt, and the caller is told why."""
from __future__ import annotations

import os
import shutil

import onnx
from onnx import numpy_helper

from exports import verifier
from segdeploy.artifact import manifest_store
from segdeploy.export.cache import cache_path, cached_onnx, stale_reason
from segdeploy.export.onnx import export_onnx

SIZE = {"height": 256, "width": 256}


def test_a_hit_is_reused_and_a_bad_entry_rebuilt(tmp_path):
    said = []
    path = cached_onnx("segnext_t", cache_dir=str(tmp_path), progress=said.append, **SIZE)
    first = os.stat(path).st_mtime_ns
    assert cached_onnx("segnext_t", cache_dir=str(tmp_path), **SIZE) == path
    assert os.stat(path).st_mtime_ns == first  # not exported again
    # bench's entries are exported for timing, unverified; a use that verifies (predict, eval) makes it verify
    request = cache_path("segnext_t", cache_dir=str(tmp_path), **SIZE)[1]
    assert "without verification" in stale_reason(path, request, verified=True)
    said.clear()
    assert cached_onnx("segnext_t", cache_dir=str(tmp_path), progress=said.append, verify=verifier(), **SIZE) == path
    assert any("without verification" in line for line in said)
    assert manifest_store.read_sidecar(manifest_store.sidecar_path(path)).validation["passed"]
    assert stale_reason(path, request, verified=True) is None

    with open(path, "r+b") as f:  # corrupt
        f.truncate(1000)
    said.clear()
    assert cached_onnx("segnext_t", cache_dir=str(tmp_path), progress=said.append, **SIZE) == path
    assert any(line.startswith("rebuilding the cached export") for line in said)
    assert stale_reason(path, cache_path("segnext_t", cache_dir=str(tmp_path), **SIZE)[1]) is None


def test_a_swapped_in_artifact_of_another_model_is_rebuilt(tmp_path):
    path, request = cache_path("segnext_t", cache_dir=str(tmp_path / "cache"), **SIZE)
    other = export_onnx("cgrseg_t", tmp_path / "other.onnx", **SIZE).path
    os.makedirs(os.path.dirname(path))
    shutil.copy(other, path)
    shutil.copy(manifest_store.sidecar_path(other), manifest_store.sidecar_path(path))
    assert "model='cgrseg_t'" in stale_reason(path, request)
    said = []
    cached_onnx("segnext_t", cache_dir=str(tmp_path / "cache"), progress=said.append, **SIZE)
    assert stale_reason(path, request) is None and any("not what was asked" in line for line in said)


def test_an_edited_graph_is_not_trusted(tmp_path):
    path = cached_onnx("segnext_t", cache_dir=str(tmp_path), **SIZE)
    model = onnx.load(path)
    weight = model.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 0, weight.name))
    onnx.save(model, path)  # the embedded manifest still records the old graph's hash
    reason = stale_reason(path, cache_path("segnext_t", cache_dir=str(tmp_path), **SIZE)[1])
    assert reason is not None and "hash" in reason

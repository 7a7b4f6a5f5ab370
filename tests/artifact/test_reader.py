"""An artifact opened once: the runner takes the manifest that open_artifact read, and does not read the file again."""
from __future__ import annotations

import pytest

from exports import export
from segdeploy.artifact.reader import open_artifact, read_runnable_manifest
from segdeploy.runtimes import manifest_check
from segdeploy.runtimes.registry import create_runner


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    return export("segnext_t", tmp_path_factory.mktemp("reader") / "a.onnx", verify=False, height=64, width=64).path


def test_an_opened_artifact_hands_its_manifest_to_the_runner(onnx_artifact, monkeypatch):
    loaded = open_artifact(onnx_artifact)
    assert loaded.kind == "onnx" and loaded.manifest.model.name == "segnext_t"
    assert read_runnable_manifest(onnx_artifact) == loaded.manifest

    def read_again(*args, **kwargs):
        raise AssertionError("the runner read the manifest again")

    monkeypatch.setattr(manifest_check, "read_manifest", read_again)
    runner = create_runner("onnxruntime", artifact=loaded, threads=1)
    try:
        assert runner.manifest is loaded.manifest
    finally:
        runner.close()
    with pytest.raises(AssertionError, match="read the manifest again"):  # by its path, the runner reads it
        create_runner("onnxruntime", artifact=onnx_artifact, threads=1)

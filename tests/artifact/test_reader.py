"""An artifact opened once: the runner takes the manifest its caller read (predict and eval through open_artifact,
bench, validate), and does not read the file again."""
from __future__ import annotations

import pytest

from exports import export
from segdeploy.artifact.reader import open_artifact, read_runnable_manifest
from segdeploy.evaluation.bench.protocol import Protocol
from segdeploy.evaluation.bench.request import BenchRequest
from segdeploy.evaluation.bench.run import run_bench
from segdeploy.evaluation.validate import validate_artifact
from segdeploy.runtimes import manifest_check
from segdeploy.runtimes.registry import create_runner


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    return export("segnext_t", tmp_path_factory.mktemp("reader") / "a.onnx", verify=False, height=64, width=64).path


def read_again(*args, **kwargs):
    raise AssertionError("the runner read the manifest again")


def test_an_opened_artifact_hands_its_manifest_to_the_runner(onnx_artifact, monkeypatch):
    loaded = open_artifact(onnx_artifact)
    assert loaded.kind == "onnx" and loaded.manifest.model.name == "segnext_t"
    assert read_runnable_manifest(onnx_artifact) == loaded.manifest

    monkeypatch.setattr(manifest_check, "read_manifest", read_again)
    runner = create_runner("onnxruntime", artifact=loaded, threads=1)
    try:
        assert runner.manifest is loaded.manifest
    finally:
        runner.close()
    with pytest.raises(AssertionError, match="read the manifest again"):  # by its path, the runner reads it
        create_runner("onnxruntime", artifact=onnx_artifact, threads=1)


def test_bench_and_validate_hand_the_manifest_they_read_to_their_runners(onnx_artifact, monkeypatch):
    monkeypatch.setattr(manifest_check, "read_manifest", read_again)
    request = BenchRequest(artifact=str(onnx_artifact), backends=["onnxruntime"], batches=[1], threads=1,
                           measure_peak=False, protocol=Protocol(warmup_s=0.0, min_s=0.0, min_iters=2))
    row = run_bench(request)["results"][0]
    assert row["status"] == "ok" and row["model"] == "segnext_t", row
    report = validate_artifact(onnx_artifact, n=1, threads=1)
    assert report.cases

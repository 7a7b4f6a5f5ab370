"""export.run carries out an ExportRequest on its own: no command-line flags, what happens told to a Report."""
from __future__ import annotations

import os

import pytest

from segdeploy.errors import InputError
from segdeploy.export.request import ExportRequest
from segdeploy.export.run import Report, onnx_output, run_export
from segdeploy.export.tensorrt.plan import BuildOptions
from tensorrt_fakes import write_onnx_artifact


class Recorded(Report):
    def __init__(self):
        self.lines, self.sources, self.engines = [], [], []

    def line(self, text):
        self.lines.append(text)

    def source(self, path, manifest):
        self.sources.append((path, manifest.model.name))

    def engine(self, result):
        self.engines.append(result.kind)


@pytest.fixture
def no_tensorrt(monkeypatch):
    from segdeploy import tensorrt_host

    monkeypatch.setattr(tensorrt_host, "find_tensorrt", lambda: tensorrt_host.TensorRTInstall(None, "absent"))
    monkeypatch.setattr(tensorrt_host, "find_trtexec", lambda: None)


def test_the_onnx_artifact_goes_where_the_format_says():
    assert onnx_output(ExportRequest("cgrseg_t", output="a/m.onnx")) == "a/m.onnx"
    assert onnx_output(ExportRequest("cgrseg_t", fmt="trt", output=os.path.join("a", "m.engine"))) == \
        os.path.join("a", "m.onnx")
    assert onnx_output(ExportRequest("cgrseg_t", fmt="triton", output="repo")) is None  # the default name
    assert onnx_output(ExportRequest("cgrseg_t", fmt="trt")) is None


def test_a_request_builds_a_bundle_on_an_onnx_artifact(tmp_path, no_tensorrt):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    bundle = tmp_path / "bundle"
    report = Recorded()
    outcome = run_export(ExportRequest(None, fmt="trt", from_onnx=str(onnx_path), output=str(bundle),
                                       build=BuildOptions(precision="fp32", opt_level=5)), report=report)
    assert outcome.engine.kind == "bundle" and outcome.engine.plan.opt_level == 5 and bundle.is_dir()
    assert report.sources == [(str(onnx_path), outcome.manifest.model.name)] and report.engines == ["bundle"]
    assert report.lines[-1] == f"wrote the build bundle (a folder) {bundle}"


def test_a_request_writes_a_triton_repository(tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    report = Recorded()
    request = ExportRequest(None, fmt="triton", from_onnx=str(onnx_path), output=str(tmp_path / "repo"))
    outcome = run_export(request, report=report)
    assert os.path.isfile(os.path.join(outcome.repository, "config.pbtxt"))
    assert report.lines[-1].startswith(f"Triton model repository: {outcome.repository}")
    # the same request again keeps what is there, and says so
    again = Recorded()
    assert run_export(request, report=again).repository == outcome.repository
    assert f"reused {outcome.repository}: it holds this model, config and manifest already" in again.lines


def test_an_onnx_request_is_refused_on_its_own_terms(tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    with pytest.raises(InputError, match="the engine's precision is the graph's"):
        run_export(ExportRequest(None, fmt="trt", from_onnx=str(onnx_path), build=BuildOptions(precision="fp16")))
    with pytest.raises(InputError, match="give --fmt trt or --fmt triton"):
        run_export(ExportRequest(None, from_onnx=str(onnx_path)))
    assert os.listdir(tmp_path) == ["m.onnx"]  # refused before anything is written

"""segdeploy build-engine and segdeploy info on engines, run as a user would, with a stand-in trtexec and
nvidia-smi on PATH (this machine has neither TensorRT nor a GPU)."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from manifests import sample_manifest
from segdeploy.artifact.engine_header import read_header
from segdeploy.cli import main
from segdeploy.export.tensorrt import export_engine
from segdeploy.export.tensorrt.plan import BuildOptions
from tensorrt_fakes import trtexec_number, write_fake_trtexec, write_onnx_artifact

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the stand-in tools are bash scripts")


@pytest.fixture
def machine(tmp_path, monkeypatch, trt_release):
    """PATH with a trtexec of each pinned release and an nvidia-smi reporting a Jetson-like GPU; no TensorRT
    package."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_fake_trtexec(bin_dir, trtexec_number(trt_release))
    smi = bin_dir / "nvidia-smi"
    smi.write_text('#!/usr/bin/env bash\necho "NVIDIA Fake Orin, 8.7"\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    import segdeploy.tensorrt_host as host

    monkeypatch.setattr(host, "find_tensorrt", lambda: host.TensorRTInstall(None, "absent"))
    monkeypatch.setattr(host, "host_platform", lambda: host.Platform("aarch64", True))
    return bin_dir


def test_bundle_then_build_engine_then_info(tmp_path, machine, capsys, monkeypatch, trt_release):
    onnx_path = write_onnx_artifact(tmp_path / "cgrseg_t.onnx", manifest=sample_manifest(dynamic=True))
    monkeypatch.setenv("PATH", os.environ["PATH"].split(os.pathsep, 1)[1])  # the workstation: no trtexec
    bundle = export_engine(onnx_path, BuildOptions(workspace_mb=512)).path
    monkeypatch.setenv("PATH", f"{machine}{os.pathsep}{os.environ['PATH']}")  # the Jetson
    assert main(["build-engine", bundle]) == 0
    engine = os.path.join(bundle, "cgrseg_t.engine")
    manifest, _ = read_header(engine)
    assert (manifest.engine.gpu_name, manifest.engine.compute_capability) == ("NVIDIA Fake Orin", "8.7")
    release = ".".join(trt_release.split(".")[:3])
    assert manifest.engine.tensorrt_version == release and manifest.engine.workspace_mb == 512
    assert manifest.engine.platform == "jetson" and not manifest.engine.tf32
    capsys.readouterr()
    stamp = os.stat(engine).st_mtime_ns
    assert main(["build-engine", bundle]) == 0  # the same build again: that engine is it already
    assert f"reused {engine}" in capsys.readouterr().out and os.stat(engine).st_mtime_ns == stamp
    foreign = os.path.join(bundle, "other.engine")
    with open(foreign, "wb") as f:
        f.write(b"not this build")
    capsys.readouterr()
    assert main(["build-engine", bundle, "--output", foreign]) == 2
    assert "exists and is another engine" in capsys.readouterr().err

    assert main(["info", engine]) == 0
    out = capsys.readouterr().out
    for text in ("cgrseg_t", release, "NVIDIA Fake Orin", "runs here", "unknown: no TensorRT here"):
        assert text in out
    assert main(["info", engine, "--json", "-"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["format"] == "engine" and document["engine"]["builder"] == "trtexec"
    assert main(["build-engine", bundle, "--engine-format", "plan"]) == 0  # the bare plan for trtexec & co
    assert open(os.path.join(bundle, "cgrseg_t.plan"), "rb").read() == b"ftrt-bare-plan"


def test_info_on_a_bare_plan_and_bad_paths(tmp_path, capsys):
    bare = tmp_path / "model.plan"
    bare.write_bytes(b"ftrt" + bytes(64))
    assert main(["info", str(bare)]) == 0
    assert "no segdeploy manifest" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing.engine")]) == 2
    assert "engine not found" in capsys.readouterr().err
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    assert main(["info", onnx_path]) == 0
    assert "format" in capsys.readouterr().out


def test_build_engine_refusals(tmp_path, capsys):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    assert main(["build-engine", onnx_path]) == 2
    assert "takes the bundle folder" in capsys.readouterr().err
    assert main(["build-engine", str(tmp_path)]) == 2
    assert "not a build bundle" in capsys.readouterr().err


def test_export_flags_reach_the_build_plan(tmp_path, monkeypatch, capsys):
    """export --fmt trt without TensorRT here: the flags land in the bundle's plan."""
    from segdeploy import tensorrt_host
    from segdeploy.cli import build_parser
    from segdeploy.commands.export import Printer
    from segdeploy.commands.export_options import export_request
    from segdeploy.export.run import build_engine

    monkeypatch.setattr(tensorrt_host, "find_tensorrt", lambda: tensorrt_host.TensorRTInstall(None, "absent"))
    monkeypatch.setattr(tensorrt_host, "find_trtexec", lambda: None)
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx", manifest=sample_manifest(precision="fp16"))
    args = build_parser().parse_args(["export", "--model", "cgrseg_t", "--fmt", "trt", "--precision", "fp16",
                                      "--workspace", "512", "--opt-level", "5", "--dla-core", "0", "--gpu-fallback",
                                      "--version-compatible", "--tf32"])
    result = build_engine(export_request(args), onnx_path, Printer("trt", "cgrseg_t", None))
    from segdeploy.export.tensorrt.bundle import read_bundle

    _, plan, _ = read_bundle(result.path)
    assert (plan.workspace_mb, plan.opt_level, plan.dla_core, plan.gpu_fallback, plan.version_compatible,
            plan.tf32) == (512, 5, 0, True, True, True)
    assert f"wrote the build bundle (a folder) {result.path}" in capsys.readouterr().out
    args = build_parser().parse_args(["export", "--model", "cgrseg_t", "--fmt", "triton", "--hardware-compat"])
    assert args.hardware_compat == "ampere_plus" and not args.tf32 and args.builder == "auto"


def test_builder_bundle_flag_forces_a_bundle_where_tensorrt_is_installed(real_trt, tmp_path, monkeypatch, capsys):
    from segdeploy.cli import build_parser
    from segdeploy.commands.export_options import export_request
    from segdeploy.export import tensorrt as export_tensorrt
    from segdeploy.export.run import build_engine
    from tensorrt_fakes import FakeHost, recording_tensorrt

    trt = recording_tensorrt(real_trt)
    monkeypatch.setattr(export_tensorrt, "Host", lambda: FakeHost(trt=trt))
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    args = build_parser().parse_args(["export", "--model", "cgrseg_t", "--fmt", "trt", "--builder", "bundle"])
    assert build_engine(export_request(args), onnx_path).kind == "bundle" and not trt.calls
    args = build_parser().parse_args(["export", "--model", "cgrseg_t", "--fmt", "trt", "--engine-format", "plan"])
    result = build_engine(export_request(args), onnx_path)
    assert (result.kind, result.builder, result.path) == ("engine", "tensorrt-python", str(tmp_path / "m.plan"))

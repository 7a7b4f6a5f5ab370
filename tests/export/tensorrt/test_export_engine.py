"""export_engine picks the first builder present (Python API, trtexec, bundle), writes self-describing engines and
refuses what cannot work before building; the Python API builder makes the documented calls."""
from __future__ import annotations

import os
import shutil

import pytest
from onnx import helper

from manifests import sample_manifest
from segdeploy.artifact import read_manifest
from segdeploy.artifact.engine_header import read_header
from segdeploy.errors import ArtifactError, SegdeployError
from segdeploy.export.tensorrt import export_engine
from segdeploy.export.tensorrt.builder import build_serialized
from segdeploy.export.tensorrt.plan import BuildOptions, make_plan
from segdeploy.tensorrt_host import GpuInfo
from tensorrt_fakes import FAKE_PLAN, FakeHost, fake_tensorrt, write_fake_trtexec, write_onnx_artifact

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="the stand-in trtexec is a bash script")


def test_python_api_builder_10_strongly_typed(tmp_path):
    trt = fake_tensorrt("10.3.0")
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx", manifest=sample_manifest(dynamic=True, precision="fp16"))
    plan = make_plan(read_manifest(onnx_path), BuildOptions(workspace_mb=512, opt_level=5, version_compatible=True,
                                                            hardware_compat="ampere_plus"))
    serialized, strongly_typed = build_serialized(trt, onnx_path, plan)
    assert serialized == FAKE_PLAN and strongly_typed
    calls = trt.calls
    # STRONGLY_TYPED is member 1 of NetworkDefinitionCreationFlag in 10.x
    assert ("init_libnvinfer_plugins", "") in calls and ("create_network", 1 << 1) in calls
    assert ("profile.set_shape", "input", (1, 3, 256, 256), (1, 3, 512, 512), (4, 3, 1024, 1024)) in calls
    assert ("config.set_memory_pool_limit", "WORKSPACE", 512 << 20) in calls
    assert ("config.builder_optimization_level", 5) in calls
    assert ("config.set_flag", "VERSION_COMPATIBLE") in calls
    assert ("config.hardware_compatibility_level", "AMPERE_PLUS") in calls
    assert not any(c[0] == "config.set_flag" and c[1] in ("FP16", "INT8") for c in calls)


def test_python_api_builder_11_passes_no_typing_flag(tmp_path):
    trt = fake_tensorrt("11.4.0")
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    build_serialized(trt, onnx_path, make_plan(read_manifest(onnx_path)))
    assert ("create_network", 0) in trt.calls


def test_python_api_builder_dla_on_10(tmp_path):
    trt = fake_tensorrt("10.3.0", dla_cores=2)
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx", manifest=sample_manifest(precision="fp16"))
    plan = make_plan(read_manifest(onnx_path), BuildOptions(dla_core=1, gpu_fallback=True))
    _, strongly_typed = build_serialized(trt, onnx_path, plan)
    assert not strongly_typed and ("create_network", 0) in trt.calls
    for call in [("config.set_flag", "FP16"), ("config.default_device_type", "DLA"), ("config.DLA_core", 1),
                 ("config.set_flag", "GPU_FALLBACK")]:
        assert call in trt.calls
    with pytest.raises(SegdeployError, match="DLA core 3 does not exist here"):
        build_serialized(fake_tensorrt("10.3.0", dla_cores=2), onnx_path,
                         make_plan(read_manifest(onnx_path), BuildOptions(dla_core=3)))


def test_parser_and_build_failures_are_one_line(tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    plan = make_plan(read_manifest(onnx_path))
    with pytest.raises(SegdeployError, match=r"refused .*m.onnx: uniq \(Unique\): Unsupported operator Unique "
                                             r"\(and 1 more\)"):
        build_serialized(fake_tensorrt(parse_ok=False), onnx_path, plan)
    with pytest.raises(SegdeployError, match="could not build the engine"):
        build_serialized(fake_tensorrt(build_ok=False), onnx_path, plan)


def test_timing_cache_is_loaded_and_merged(tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    trt = fake_tensorrt()
    build_serialized(trt, onnx_path, make_plan(read_manifest(onnx_path), BuildOptions(timing_cache=str(cache))))
    assert ("config.set_timing_cache", b"old", False) in trt.calls
    assert cache.read_bytes() == b"old|tuned+old"


def test_export_with_the_python_api_writes_a_self_describing_engine(tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    host = FakeHost(trt=fake_tensorrt("10.3.0"), gpu=GpuInfo("NVIDIA Jetson AGX Orin", "8.7"))
    result = export_engine(onnx_path, BuildOptions(), host=host)
    assert (result.kind, result.builder, result.path) == ("engine", "tensorrt-python", str(tmp_path / "m.engine"))
    manifest, offset = read_header(result.path)
    assert open(result.path, "rb").read()[offset:] == FAKE_PLAN
    e = manifest.engine
    assert (e.tensorrt_version, e.gpu_name, e.compute_capability, e.builder) == \
        ("10.3.0", "NVIDIA Jetson AGX Orin", "8.7", "tensorrt-python")
    assert e.profiles == [{"input": {"min": [1, 3, 512, 512], "opt": [1, 3, 512, 512], "max": [1, 3, 512, 512]}}]
    assert manifest.model == read_manifest(onnx_path).model and manifest.format == "engine"
    engine = open(result.path, "rb").read()
    # the same build again: the engine is this build already (same ONNX, plan, TensorRT and GPU), so it is reused
    again = export_engine(onnx_path, BuildOptions(), host=host)
    assert again.path == result.path and any(n.startswith("reused") for n in again.notes)
    assert open(result.path, "rb").read() == engine and again.manifest.to_dict() == manifest.to_dict()
    # another build is refused without --force: another plan, another TensorRT release, another GPU
    for options, other in ((BuildOptions(workspace_mb=256), host),
                           (BuildOptions(), FakeHost(trt=fake_tensorrt("10.4.0"), gpu=host.gpu())),
                           (BuildOptions(), FakeHost(trt=fake_tensorrt("10.3.0"), gpu=GpuInfo("NVIDIA A100", "8.0")))):
        with pytest.raises(ArtifactError, match="exists and is another engine"):
            export_engine(onnx_path, options, host=other)
    assert open(result.path, "rb").read() == engine
    export_engine(onnx_path, BuildOptions(workspace_mb=256), host=host, force=True)
    assert read_header(result.path)[0].engine.workspace_mb == 256


@needs_bash
def test_export_with_trtexec_when_there_is_no_python_package(tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx", manifest=sample_manifest(dynamic=True))
    trtexec = write_fake_trtexec(tmp_path, 110400)
    result = export_engine(onnx_path, BuildOptions(workspace_mb=256), tmp_path / "out" / "m.engine",
                           host=FakeHost(trtexec=trtexec))
    assert result.builder == "trtexec" and result.tensorrt_version == "11.4.0"
    manifest, offset = read_header(result.path)
    assert open(result.path, "rb").read()[offset:] == b"ftrt-bare-plan"
    assert manifest.engine.builder == "trtexec" and manifest.engine.workspace_mb == 256
    argv = (tmp_path / "argv.txt").read_text().split()
    assert "--maxShapes=input:4x3x1024x1024" in argv and "--stronglyTyped" not in argv
    assert not [n for n in os.listdir(tmp_path / "out") if n.endswith(".plan")]  # the bare plan is cleaned up


@needs_bash
def test_trtexec_failure_and_version_refusal(tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx", manifest=sample_manifest(precision="fp16"))
    with pytest.raises(SegdeployError, match=r"trtexec failed \(exit 1\): \[E\] Error\[4\]: fake build failure"):
        export_engine(onnx_path, None, host=FakeHost(trtexec=write_fake_trtexec(tmp_path, fail=True)))
    assert not os.path.exists(tmp_path / "m.engine")
    with pytest.raises(SegdeployError, match="cannot build for DLA"):
        export_engine(onnx_path, BuildOptions(dla_core=0),
                      host=FakeHost(trtexec=write_fake_trtexec(tmp_path, 100800)))


def test_bundle_when_no_builder_is_present(tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx", manifest=sample_manifest(dynamic=True))
    result = export_engine(onnx_path, BuildOptions(), host=FakeHost())
    assert result.kind == "bundle" and result.path == str(tmp_path / "m_trt_bundle")
    assert os.path.isfile(os.path.join(result.path, "build_engine.sh"))
    assert "segdeploy build-engine" in result.notes[-1] and not any(n.startswith("reused") for n in result.notes)
    # the same bundle again is kept as it is; another plan is refused without --force
    stamp = os.stat(os.path.join(result.path, "build_plan.json")).st_mtime_ns
    again = export_engine(onnx_path, BuildOptions(), host=FakeHost())
    assert any(n.startswith("reused") for n in again.notes)
    assert os.stat(os.path.join(result.path, "build_plan.json")).st_mtime_ns == stamp
    with pytest.raises(ArtifactError, match="holds another bundle; pass --force"):
        export_engine(onnx_path, BuildOptions(opt_level=5), host=FakeHost())
    with open(os.path.join(result.path, "build_engine.sh"), "a") as f:
        f.write("# edited\n")
    with pytest.raises(ArtifactError, match="holds another bundle"):  # an edited bundle is not this bundle
        export_engine(onnx_path, BuildOptions(), host=FakeHost())
    assert export_engine(onnx_path, BuildOptions(opt_level=5), host=FakeHost(), force=True).kind == "bundle"


def test_lint_errors_stop_the_export(tmp_path):
    nodes = [helper.make_node("Unique", ["input"], ["logits"], name="uniq")]
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx", nodes=nodes)
    with pytest.raises(SegdeployError, match=r"TensorRT 10.3.0 would refuse .*uniq \(Unique\)"):
        export_engine(onnx_path, None, host=FakeHost(trt=fake_tensorrt("10.3.0")))
    result = export_engine(onnx_path, None, host=FakeHost(trt=fake_tensorrt("10.3.0")), lint=False)
    assert result.kind == "engine"


def test_export_refuses_a_foreign_onnx_and_an_impossible_plan(tmp_path):
    import onnx

    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    foreign = onnx.load(onnx_path)
    del foreign.metadata_props[:]
    onnx.save(foreign, tmp_path / "foreign.onnx")
    with pytest.raises(ArtifactError, match="carries no segdeploy manifest"):
        export_engine(tmp_path / "foreign.onnx", None, host=FakeHost())
    with pytest.raises(SegdeployError, match="the ONNX artifact is fp32"):
        export_engine(onnx_path, BuildOptions(precision="fp16"), host=FakeHost())


def test_no_gpu_facts_means_no_engine(tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    with pytest.raises(SegdeployError, match="compute capability"):
        export_engine(onnx_path, None, host=FakeHost(trt=fake_tensorrt(), gpu=None))

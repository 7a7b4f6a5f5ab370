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
from segdeploy.export.tensorrt.builder import build_serialized, configure
from segdeploy.export.tensorrt.plan import BuildOptions, make_plan
from segdeploy.tensorrt_host import GpuInfo
from tensorrt_fakes import (
    FAKE_PLAN,
    ORIN,
    FakeHost,
    recording_tensorrt,
    trtexec_number,
    write_fake_trtexec,
    write_onnx_artifact,
)

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="the stand-in trtexec is a bash script")


def release_major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def test_python_api_builder_strongly_typed(real_trt, tmp_path):
    trt = recording_tensorrt(real_trt)
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx", manifest=sample_manifest(dynamic=True, precision="fp16"))
    options = BuildOptions(workspace_mb=512, opt_level=5, version_compatible=True, hardware_compat="ampere_plus")
    serialized, strongly_typed = build_serialized(trt, onnx_path, make_plan(read_manifest(onnx_path), options))
    assert serialized == FAKE_PLAN and strongly_typed
    assert trt.called("Builder", "__init__") and trt.called("OnnxParser", "parse_from_file") == [(onnx_path,)]
    flags = real_trt.NetworkDefinitionCreationFlag
    # 10.x needs the STRONGLY_TYPED bit; 11.x is always strongly typed and deprecates (ignores) the flag
    expected = 1 << int(flags.STRONGLY_TYPED) if release_major(real_trt) == 10 else 0
    assert trt.called("Builder", "create_network") == [(expected,)]
    assert trt.called("IOptimizationProfile", "set_shape") == [
        ("input", (1, 3, 256, 256), (1, 3, 512, 512), (4, 3, 1024, 1024))]
    assert trt.called("IBuilderConfig", "set_memory_pool_limit") == [(real_trt.MemoryPoolType.WORKSPACE, 512 << 20)]
    assert trt.called("IBuilderConfig", "builder_optimization_level") == [(5,)]
    assert trt.called("IBuilderConfig", "hardware_compatibility_level") == [
        (real_trt.HardwareCompatibilityLevel.AMPERE_PLUS,)]
    config = trt.last("IBuilderConfig")
    assert config.get_flag(real_trt.BuilderFlag.VERSION_COMPATIBLE)
    precision = [f for f in ("FP16", "INT8", "BF16") if f in real_trt.BuilderFlag.__members__]
    assert precision == ([] if release_major(real_trt) == 11 else ["FP16", "INT8", "BF16"])
    assert not any(config.get_flag(getattr(real_trt.BuilderFlag, f)) for f in precision)


def test_fp32_builds_turn_tf32_off_unless_asked(real_trt, tmp_path):
    """TensorRT sets TF32 in every new config: an FP32 engine would be ~1e-3 relative off PyTorch."""
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    manifest = read_manifest(onnx_path)
    trt = recording_tensorrt(real_trt)
    build_serialized(trt, onnx_path, make_plan(manifest))
    assert not trt.last("IBuilderConfig").get_flag(real_trt.BuilderFlag.TF32)
    assert trt.called("IBuilderConfig", "clear_flag") == [(real_trt.BuilderFlag.TF32,)]
    trt = recording_tensorrt(real_trt)
    build_serialized(trt, onnx_path, make_plan(manifest, BuildOptions(tf32=True)))
    assert trt.last("IBuilderConfig").get_flag(real_trt.BuilderFlag.TF32)


def test_python_api_builder_dla_does_what_trtexec_does(real_trt, tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx", manifest=sample_manifest(precision="fp16"))
    manifest = read_manifest(onnx_path)
    flag = real_trt.BuilderFlag
    major = release_major(real_trt)
    if real_trt.__version__ != "10.3.0":  # DLA: 10.0-10.7 and 11.4.1+; these bindings are 10.16 and 11.4.0
        with pytest.raises(SegdeployError, match="cannot build for DLA"):
            build_serialized(recording_tensorrt(real_trt, dla_cores=2), onnx_path,
                             make_plan(manifest, BuildOptions(dla_core=0)))
    # the same configuration on the bindings, as 10.3 and 11.4.1 (whose API is 11.4.0's) set it
    version = "10.3.0" if major == 10 else "11.4.1"
    for fallback in (True, False):
        trt = recording_tensorrt(real_trt, dla_cores=2)
        builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
        plan = make_plan(manifest, BuildOptions(dla_core=1, gpu_fallback=fallback))
        config = configure(trt, builder, builder.create_network(0), plan, version)
        assert trt.called("IBuilderConfig", "default_device_type") == [(real_trt.DeviceType.DLA,)]
        assert trt.called("IBuilderConfig", "DLA_core") == [(1,)]
        assert config.get_flag(flag.GPU_FALLBACK) == fallback and config.get_flag(flag.DIRECT_IO) != fallback
        if major == 10:  # weakly typed, with the precision flags trtexec sets for DLA
            assert config.get_flag(flag.FP16) and config.get_flag(flag.PREFER_PRECISION_CONSTRAINTS)
        else:
            assert "FP16" not in flag.__members__ and "PREFER_PRECISION_CONSTRAINTS" not in flag.__members__
    if major == 10:
        trt = recording_tensorrt(real_trt, dla_cores=2)
        plan = make_plan(manifest, BuildOptions(dla_core=0))
        _, strongly_typed = build_serialized(trt, onnx_path, plan) if real_trt.__version__ == "10.3.0" else \
            (None, plan.typing("10.3").strongly_typed)
        assert not strongly_typed
    with pytest.raises(SegdeployError, match="DLA core 3 does not exist here"):
        trt = recording_tensorrt(real_trt, dla_cores=2)
        builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
        configure(trt, builder, builder.create_network(0), make_plan(manifest, BuildOptions(dla_core=3)), version)


def test_parser_and_build_failures_are_one_line(real_trt, tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    plan = make_plan(read_manifest(onnx_path))
    with pytest.raises(SegdeployError, match=r"refused .*m.onnx: uniq \(Unique\): Unsupported operator Unique "
                                             r"\(and 1 more\)"):
        build_serialized(recording_tensorrt(real_trt, parse_ok=False), onnx_path, plan)
    with pytest.raises(SegdeployError, match="could not build the engine"):
        build_serialized(recording_tensorrt(real_trt, build_ok=False), onnx_path, plan)


def test_timing_cache_is_loaded_checked_and_merged(real_trt, tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    trt = recording_tensorrt(real_trt)
    plan = make_plan(read_manifest(onnx_path), BuildOptions(timing_cache=str(cache)))
    build_serialized(trt, onnx_path, plan)
    assert [(v[0]._state["data"][:3], v[1]) for v in trt.called("IBuilderConfig", "set_timing_cache")] == \
        [(b"old", False)]
    assert cache.read_bytes() == b"old|tuned+old"
    with pytest.raises(SegdeployError, match="refused the timing cache .*timing.cache"):
        build_serialized(recording_tensorrt(real_trt, set_timing_cache_ok=False), onnx_path, plan)


def test_export_with_the_python_api_writes_a_self_describing_engine(real_trt, tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    host = FakeHost(trt=recording_tensorrt(real_trt), gpu=ORIN, jetson=True)
    result = export_engine(onnx_path, BuildOptions(), host=host)
    assert (result.kind, result.builder, result.path) == ("engine", "tensorrt-python", str(tmp_path / "m.engine"))
    manifest, offset = read_header(result.path)
    assert open(result.path, "rb").read()[offset:] == FAKE_PLAN
    e = manifest.engine
    assert (e.tensorrt_version, e.gpu_name, e.compute_capability, e.builder, e.platform, e.tf32) == \
        (real_trt.__version__, "NVIDIA Jetson AGX Orin", "8.7", "tensorrt-python", "jetson", False)
    assert e.profiles == [{"input": {"min": [1, 3, 512, 512], "opt": [1, 3, 512, 512], "max": [1, 3, 512, 512]}}]
    assert manifest.model == read_manifest(onnx_path).model and manifest.format == "engine"
    engine = open(result.path, "rb").read()
    # the same build again: the engine is this build already (same ONNX, plan, TensorRT and GPU), so it is reused
    again = export_engine(onnx_path, BuildOptions(), host=host)
    assert again.path == result.path and any(n.startswith("reused") for n in again.notes)
    assert open(result.path, "rb").read() == engine and again.manifest.to_dict() == manifest.to_dict()
    # another build is refused without --force: another plan, another TensorRT release, another GPU
    other_release = recording_tensorrt(real_trt)
    other_release.__version__ = "10.99.0"
    for options, other in ((BuildOptions(workspace_mb=256), host),
                           (BuildOptions(), FakeHost(trt=other_release, gpu=ORIN, jetson=True)),
                           (BuildOptions(), FakeHost(trt=recording_tensorrt(real_trt), gpu=GpuInfo("NVIDIA A100",
                                                                                                      "8.0")))):
        with pytest.raises(ArtifactError, match="exists and is another engine"):
            export_engine(onnx_path, options, host=other)
    assert open(result.path, "rb").read() == engine
    result = export_engine(onnx_path, BuildOptions(tf32=True), host=FakeHost(trt=recording_tensorrt(real_trt)),
                           force=True)
    assert result.manifest.engine.tf32 and result.manifest.engine.platform == "x86_64"


def test_bare_plan_for_trtexec_polygraphy_deepstream_and_triton(real_trt, tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    host = FakeHost(trt=recording_tensorrt(real_trt))
    result = export_engine(onnx_path, BuildOptions(), host=host, engine_format="plan")
    assert result.path == str(tmp_path / "m.plan") and open(result.path, "rb").read() == FAKE_PLAN
    assert read_header(result.path) == (None, 0) and "bare plan" in result.notes[-1]
    by_suffix = export_engine(onnx_path, BuildOptions(), tmp_path / "out.plan", host=host)
    assert open(by_suffix.path, "rb").read() == FAKE_PLAN
    engine = export_engine(onnx_path, BuildOptions(), tmp_path / "kept.plan", host=host, engine_format="engine")
    assert read_header(engine.path)[0] is not None


def test_hardware_compat_is_refused_on_a_jetson(real_trt, tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    with pytest.raises(SegdeployError, match="not supported on Jetson"):
        export_engine(onnx_path, BuildOptions(hardware_compat="ampere_plus"),
                      host=FakeHost(trt=recording_tensorrt(real_trt), gpu=ORIN, jetson=True))
    assert not os.path.exists(tmp_path / "m.engine")
    result = export_engine(onnx_path, BuildOptions(hardware_compat="ampere_plus"),
                           host=FakeHost(trt=recording_tensorrt(real_trt), gpu=GpuInfo("NVIDIA L4", "8.9")))
    assert result.manifest.engine.hardware_compatibility == "ampere_plus"


def test_builder_bundle_forces_a_bundle_where_tensorrt_is_installed(real_trt, tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    trt = recording_tensorrt(real_trt)
    result = export_engine(onnx_path, BuildOptions(), host=FakeHost(trt=trt), builders=("bundle",))
    assert result.kind == "bundle" and not trt.calls


@needs_bash
def test_export_with_trtexec_when_there_is_no_python_package(tmp_path, trt_release):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx", manifest=sample_manifest(dynamic=True))
    trtexec = write_fake_trtexec(tmp_path, trtexec_number(trt_release))
    result = export_engine(onnx_path, BuildOptions(workspace_mb=256), tmp_path / "out" / "m.engine",
                           host=FakeHost(trtexec=trtexec))
    assert result.builder == "trtexec" and result.tensorrt_version == ".".join(trt_release.split(".")[:3])
    manifest, offset = read_header(result.path)
    assert open(result.path, "rb").read()[offset:] == b"ftrt-bare-plan"
    assert manifest.engine.builder == "trtexec" and manifest.engine.workspace_mb == 256
    argv = (tmp_path / "argv.txt").read_text().split()
    assert "--maxShapes=input:4x3x1024x1024" in argv and "--noTF32" in argv
    assert ("--stronglyTyped" in argv) == trt_release.startswith("10.")
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
    with pytest.raises(SegdeployError, match="JetPack 6.0 ships TensorRT 8.6; upgrade the Jetson to JetPack 6.1"):
        export_engine(onnx_path, None, host=FakeHost(trtexec=write_fake_trtexec(tmp_path, 8602)))


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


def test_lint_errors_stop_the_export(real_trt, tmp_path):
    nodes = [helper.make_node("Unique", ["input"], ["logits"], name="uniq")]
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx", nodes=nodes)
    with pytest.raises(SegdeployError, match=rf"TensorRT {real_trt.__version__} would refuse .*uniq \(Unique\)"):
        export_engine(onnx_path, None, host=FakeHost(trt=recording_tensorrt(real_trt)))
    result = export_engine(onnx_path, None, host=FakeHost(trt=recording_tensorrt(real_trt)), lint=False)
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


def test_no_gpu_facts_means_no_engine(real_trt, tmp_path):
    onnx_path = write_onnx_artifact(tmp_path / "m.onnx")
    with pytest.raises(SegdeployError, match="compute capability"):
        export_engine(onnx_path, None, host=FakeHost(trt=recording_tensorrt(real_trt), gpu=None))

"""Build plans from manifests, the trtexec command lines for TensorRT 10 and 11, and the build bundle."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from manifests import embed_hashed, sample_manifest
from segdeploy.errors import ArtifactError, SegdeployError
from segdeploy.export.tensorrt.bundle import accepted_versions, build_script, read_bundle, write_bundle
from segdeploy.export.tensorrt.plan import BuildOptions, BuildPlan, ShapeRange, make_plan, version_problem
from segdeploy.export.tensorrt.trtexec import trtexec_command
from tensorrt_fakes import precision_nodes


def test_static_profile_is_the_input_shape():
    plan = make_plan(sample_manifest())
    assert plan.profiles == ((ShapeRange("input", (1, 3, 512, 512), (1, 3, 512, 512), (1, 3, 512, 512)),),)
    assert plan.static and plan.precision == "fp32"


def test_dynamic_profile_from_the_dynamic_axes():
    (profile,) = make_plan(sample_manifest(dynamic=True)).profiles
    assert profile == (ShapeRange("input", (1, 3, 256, 256), (1, 3, 512, 512), (4, 3, 1024, 1024)),)
    (nhwc,) = make_plan(sample_manifest(dynamic=True, preprocess=True)).profiles
    assert nhwc[0].min == (1, 256, 256, 3) and nhwc[0].max == (4, 1024, 1024, 3)


@pytest.mark.parametrize("manifest, options, message", [
    (sample_manifest(), BuildOptions(precision="fp16"), "the ONNX artifact is fp32"),
    (sample_manifest(precision="int8", flavour="cpu"), BuildOptions(), "cannot build"),
    (sample_manifest(), BuildOptions(dla_core=0), "DLA runs FP16 and INT8 only"),
    (sample_manifest(dynamic=True, precision="fp16"), BuildOptions(dla_core=0), "static shapes only"),
    (sample_manifest(precision="fp16"), BuildOptions(dla_core=0, hardware_compat="ampere_plus"), "exclude"),
    (sample_manifest(), BuildOptions(gpu_fallback=True), "DLA builds only"),
    (sample_manifest(), BuildOptions(opt_level=6), "0-5"),
    (sample_manifest(), BuildOptions(workspace_mb=0), "positive"),
    (sample_manifest(), BuildOptions(hardware_compat="turing"), "unknown hardware"),
])
def test_impossible_plans_are_refused_with_one_line(manifest, options, message):
    with pytest.raises(SegdeployError, match=message) as err:
        make_plan(manifest, options)
    assert "\n" not in str(err.value)


def test_network_typing_per_release():
    fp16 = make_plan(sample_manifest(precision="fp16"))
    assert fp16.typing("10.3").strongly_typed and fp16.typing("11.4").strongly_typed
    dla = make_plan(sample_manifest(precision="int8", flavour="tensorrt"), BuildOptions(dla_core=1))
    assert dla.typing("10.3") == type(dla.typing("10.3"))(False, ("int8", "fp16"))
    assert dla.typing("11.4.1").strongly_typed


@pytest.mark.parametrize("version, ok", [("10.3.0", True), ("10.7.0", True), ("10.8.0", False), ("11.3.0", False),
                                         ("11.4.0", False), ("11.4.1", True), ("8.6.1", False)])
def test_dla_releases(version, ok):
    plan = make_plan(sample_manifest(precision="fp16"), BuildOptions(dla_core=0))
    assert (version_problem(plan, version) is None) == ok


def test_same_compute_capability_needs_10_9():
    plan = make_plan(sample_manifest(), BuildOptions(hardware_compat="same_compute_capability"))
    assert "10.9" in version_problem(plan, "10.3.0") and version_problem(plan, "10.9.0") is None
    with pytest.raises(SegdeployError, match="10.9"):
        plan.check_version("10.3")


def test_plan_round_trips_through_json():
    plan = make_plan(sample_manifest(dynamic=True), BuildOptions(workspace_mb=2048, opt_level=5, timing_cache="t.c",
                                                                 version_compatible=True))
    assert BuildPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    with pytest.raises(ArtifactError, match="malformed"):
        BuildPlan.from_dict({"model": "x"})


def test_trtexec_10_dynamic_fp16():
    plan = make_plan(sample_manifest(dynamic=True, precision="fp16"),
                     BuildOptions(workspace_mb=4096, opt_level=4, timing_cache="cache.bin", version_compatible=True,
                                  hardware_compat="ampere_plus"))
    assert trtexec_command(plan, "m.onnx", "m.plan", 10) == [
        "trtexec", "--onnx=m.onnx", "--saveEngine=m.plan", "--stronglyTyped", "--noTF32",
        "--minShapes=input:1x3x256x256", "--optShapes=input:1x3x512x512", "--maxShapes=input:4x3x1024x1024",
        "--memPoolSize=workspace:4096M", "--builderOptimizationLevel=4", "--timingCacheFile=cache.bin",
        "--versionCompatible", "--hardwareCompatibilityLevel=ampere+", "--skipInference"]


@pytest.mark.parametrize("major", [10, 11])
def test_trtexec_turns_tf32_off_unless_asked(major):
    plan = make_plan(sample_manifest())
    assert "--noTF32" in trtexec_command(plan, "m.onnx", "m.plan", major)
    tf32 = make_plan(sample_manifest(), BuildOptions(tf32=True))
    assert "--noTF32" not in trtexec_command(tf32, "m.onnx", "m.plan", major)
    assert BuildPlan.from_dict(json.loads(json.dumps(tf32.to_dict()))).tf32


def test_trtexec_11_has_no_typing_flags_and_same_profile():
    plan = make_plan(sample_manifest(dynamic=True, precision="fp16"))
    ten, eleven = (trtexec_command(plan, "m.onnx", "m.plan", major) for major in (10, 11))
    assert [a for a in ten if a != "--stronglyTyped"] == eleven
    assert not any(a in eleven for a in ("--fp16", "--int8", "--stronglyTyped"))


def test_trtexec_static_shapes_need_no_shape_flags():
    argv = trtexec_command(make_plan(sample_manifest()), "m.onnx", "m.plan", 11)
    assert not any("Shapes=" in a for a in argv)


def test_trtexec_dla_on_10_is_weakly_typed_with_precision_flags():
    plan = make_plan(sample_manifest(precision="fp16"), BuildOptions(dla_core=1, gpu_fallback=True))
    argv = trtexec_command(plan, "m.onnx", "m.plan", 10)
    assert "--stronglyTyped" not in argv and "--fp16" in argv
    assert argv[-3:] == ["--useDLACore=1", "--allowGPUFallback", "--skipInference"] and "--noTF32" in argv
    assert "--fp16" not in trtexec_command(plan, "m.onnx", "m.plan", 11)


def test_accepted_versions_for_the_bundle_script():
    assert accepted_versions(make_plan(sample_manifest()), 10) == (100000, 109999)
    dla = make_plan(sample_manifest(precision="fp16"), BuildOptions(dla_core=0))
    assert accepted_versions(dla, 10) == (100000, 100799)
    assert accepted_versions(dla, 11) == (110401, 119999)


@pytest.fixture
def onnx_artifact(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    manifest = sample_manifest(dynamic=True, precision="fp16")  # 4 classes; the reader checks it against the graph
    graph = helper.make_graph(precision_nodes("fp16", "input", "logits", TensorProto.FLOAT), "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 3, "h", "w"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 4, "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "cgrseg_t.onnx"
    model = embed_hashed(model, manifest)
    onnx.save(model, path)
    from segdeploy.artifact.manifest_store import embedded

    return str(path), embedded(model)


def test_bundle_folder(onnx_artifact, tmp_path):
    path, manifest = onnx_artifact
    plan = make_plan(manifest, BuildOptions(timing_cache="/home/me/cache.bin"))
    folder = write_bundle(path, manifest, plan, str(tmp_path / "bundle"), onnx_sha256="0" * 64)
    assert sorted(os.listdir(folder)) == ["build_engine.sh", "build_plan.json", "cgrseg_t.json", "cgrseg_t.onnx"]
    assert os.access(os.path.join(folder, "build_engine.sh"), os.X_OK)
    document, read_plan, onnx_path = read_bundle(folder)
    assert document["plan"]["timing_cache"] == "timing.cache"  # the workstation's cache path means nothing there
    assert read_plan.timing_cache == os.path.join(folder, "timing.cache")  # on the target: the bundle's own file
    assert read_plan.profiles == plan.profiles and onnx_path.endswith("cgrseg_t.onnx")
    assert set(document["commands"]) == {"10", "11"}
    from segdeploy.artifact import read_manifest

    assert read_manifest(onnx_path) == manifest  # the sidecar agrees with the embedded manifest
    before = {n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in os.listdir(folder)}
    assert write_bundle(path, manifest, plan, folder, onnx_sha256="0" * 64) == folder  # this bundle already: kept
    assert {n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in os.listdir(folder)} == before
    other = make_plan(manifest, BuildOptions(workspace_mb=256))
    with pytest.raises(ArtifactError, match="exists and holds another bundle"):
        write_bundle(path, manifest, other, folder, onnx_sha256="0" * 64)
    write_bundle(path, manifest, plan, folder, onnx_sha256="0" * 64, force=True)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".bundle")]


def test_read_bundle_refusals(tmp_path):
    with pytest.raises(ArtifactError, match="not a build bundle folder"):
        read_bundle(str(tmp_path / "nope"))
    with pytest.raises(ArtifactError, match="no build_plan.json"):
        read_bundle(str(tmp_path))
    (tmp_path / "build_plan.json").write_text('{"bundle_version": 99}')
    with pytest.raises(ArtifactError, match="bundle version 99"):
        read_bundle(str(tmp_path))


def fake_trtexec(folder, version_number):
    """A stand-in trtexec: prints the real banner format for --help, records its argv otherwise."""
    script = folder / "trtexec"
    script.write_text(f"""#!/usr/bin/env bash
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{version_number}] # $0 $*"
if [ "$1" = "--help" ]; then exit 0; fi
printf '%s\\n' "$@" > "$(dirname "$0")/argv.txt"
""")
    script.chmod(0o755)
    return script


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("version_number, major", [(100300, 10), (110401, 11)])
def test_build_script_runs_the_command_for_the_trtexec_it_finds(onnx_artifact, tmp_path, version_number, major):
    path, manifest = onnx_artifact
    plan = make_plan(manifest, BuildOptions(workspace_mb=1024))
    folder = write_bundle(path, manifest, plan, str(tmp_path / "bundle"), onnx_sha256="0" * 64)
    trtexec = fake_trtexec(tmp_path, version_number)
    done = subprocess.run(["bash", os.path.join(folder, "build_engine.sh")], capture_output=True, text=True,
                          env={**os.environ, "TRTEXEC": str(trtexec)})
    assert done.returncode == 0, done.stderr
    argv = (tmp_path / "argv.txt").read_text().split()
    assert argv == trtexec_command(plan, "cgrseg_t.onnx", "cgrseg_t.plan", major)[1:]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_build_script_refuses_a_release_that_cannot_build_the_plan(onnx_artifact, tmp_path):
    _, manifest = onnx_artifact
    static = sample_manifest(precision="fp16")
    plan = make_plan(static, BuildOptions(dla_core=0))
    script = tmp_path / "build.sh"
    script.write_text(build_script(plan, "m.onnx", "m.plan"))
    for number, message in [(110300, "needs TensorRT 11.4.1"), (100800, "needs TensorRT 10.0.0 to 10.7.99"),
                            (80601, "builds with TensorRT 10 or 11"), (8602, "JetPack 6.0 ships TensorRT 8.6")]:
        trtexec = fake_trtexec(tmp_path, number)
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                              env={**os.environ, "TRTEXEC": str(trtexec)})
        assert done.returncode == 2 and message in done.stderr, done.stderr

"""Build bundles nobody vouches for: a bundle is a folder someone copied to the target, and build-engine runs a
builder on what its build_plan.json says. Every path it names stays inside the bundle (symlinks included), the
ONNX must be the one its plan's onnx_sha256 and its manifest's graph hash name, and the plan's fields pass the
checks export applies to its flags, all before trtexec runs; the engine goes where the user said, or into the
bundle. Hypothesis fuzzes build plans against the reader and the command."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile import Tree, assert_unchanged, edit_json, json_paths, run_cli
from manifests import sample_manifest
from segdeploy.errors import SegdeployError
from tensorrt_fakes import write_fake_trtexec, write_onnx_artifact

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the stand-in trtexec is a bash script")


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """The target: a stand-in TensorRT 10.3 trtexec (it records its argv in argv.txt beside itself and writes the
    plan it is asked for) and an nvidia-smi, on PATH; no TensorRT Python package."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_fake_trtexec(bin_dir, 100300)
    smi = bin_dir / "nvidia-smi"
    smi.write_text('#!/usr/bin/env bash\necho "NVIDIA Fake Orin, 8.7"\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    import segdeploy.tensorrt_host as host

    monkeypatch.setattr(host, "find_tensorrt", lambda: host.TensorRTInstall(None, "absent"))
    return bin_dir


def _make_bundle(folder, *, timing_cache=None):
    from segdeploy.export.tensorrt import BuildOptions, export_engine

    (folder / "src").mkdir(exist_ok=True)
    onnx_path = write_onnx_artifact(folder / "src" / "cgrseg_t.onnx", manifest=sample_manifest(dynamic=True))
    return export_engine(onnx_path, BuildOptions(timing_cache=timing_cache), str(folder / "bundle"),
                         builders=("bundle",)).path


@pytest.fixture
def bundle(workdir):
    _make_bundle(workdir)
    return workdir / "bundle"


def _edit(bundle, change):
    plan = bundle / "build_plan.json"
    document = json.loads(plan.read_text())
    change(document)
    plan.write_text(json.dumps(document))


def _trtexec_ran(machine) -> bool:
    return (machine / "argv.txt").exists()


def test_an_intact_bundle_builds_and_its_header_records_the_graph_built(bundle, machine, capfd):
    from segdeploy.artifact.engine_header import read_header
    from segdeploy.artifact.onnx_file import file_sha256

    run_cli(capfd, "build-engine", bundle).succeeded()
    manifest, _ = read_header(bundle / "cgrseg_t.engine")
    document = json.loads((bundle / "build_plan.json").read_text())
    assert manifest.engine.onnx_sha256 == file_sha256(bundle / "cgrseg_t.onnx") == document["onnx_sha256"]


INSIDE = "must name a file inside the bundle"
OUTSIDE = {
    "engine up two folders": (lambda d, victim: d.__setitem__("engine", "../../victim.txt"), INSIDE),
    "engine an absolute path": (lambda d, victim: d.__setitem__("engine", str(victim)), INSIDE),
    "engine in a subfolder": (lambda d, victim: d.__setitem__("engine", "sub/x.engine"), INSIDE),
    "engine not an engine name": (lambda d, victim: d.__setitem__("engine", "build_engine.sh"), ".engine or .plan"),
    "engine empty": (lambda d, victim: d.__setitem__("engine", ""), INSIDE),
    "engine not a string": (lambda d, victim: d.__setitem__("engine", ["x.engine"]), INSIDE),
    "onnx an absolute path": (lambda d, victim: d.__setitem__("onnx", str(victim)), INSIDE),
    "timing cache an absolute path": (lambda d, victim: d["plan"].__setitem__("timing_cache", str(victim)), INSIDE),
    "timing cache up a folder": (lambda d, victim: d["plan"].__setitem__("timing_cache", "../victim.txt"), INSIDE),
    "trtexec plan outside": (lambda d, victim: d.__setitem__("trtexec_plan", "../../victim.txt"), INSIDE),
}


@pytest.mark.parametrize("name", sorted(OUTSIDE))
def test_a_bundle_never_names_a_path_outside_itself(workdir, bundle, machine, capfd, name):
    """The issue's reproduction: "engine": "../../x.engine" or an absolute path, with the documented --force, made
    build-engine replace any file the user could write (seen: a text file replaced by an engine)."""
    victim = workdir / "victim.txt"
    victim.write_text("the user's file\n")
    change, expected = OUTSIDE[name]
    _edit(bundle, lambda d: change(d, victim))
    before = Tree.of(workdir)
    run_cli(capfd, "build-engine", bundle, "--force").refused(expected)
    assert_unchanged(before, workdir)
    assert victim.read_text() == "the user's file\n" and not _trtexec_ran(machine)


@pytest.mark.parametrize("which", ["onnx", "engine", "timing cache"])
def test_links_out_of_the_bundle_are_refused(workdir, machine, capfd, which):
    bundle = workdir / "bundle"
    _make_bundle(workdir, timing_cache="workstation.cache")
    victim = workdir / "victim.txt"
    victim.write_text("the user's file\n")
    document = json.loads((bundle / "build_plan.json").read_text())
    name = {"onnx": document["onnx"], "engine": document["engine"], "timing cache": "timing.cache"}[which]
    if (bundle / name).exists():
        (bundle / name).unlink()
    os.symlink(victim if which != "onnx" else workdir / "src" / "cgrseg_t.onnx", bundle / name)
    before = Tree.of(workdir)
    run_cli(capfd, "build-engine", bundle, "--force").refused("link out of the bundle")
    assert_unchanged(before, workdir)
    assert victim.read_text() == "the user's file\n" and not _trtexec_ran(machine)


def test_the_engine_goes_where_the_user_said(workdir, bundle, machine, capfd):
    """--output is the user's; the plan's engine name only ever names a file inside the bundle."""
    _edit(bundle, lambda d: d.__setitem__("engine", "renamed.engine"))
    run_cli(capfd, "build-engine", bundle).succeeded()
    assert (bundle / "renamed.engine").is_file()
    run_cli(capfd, "build-engine", bundle, "--output", workdir / "elsewhere.engine").succeeded()
    assert (workdir / "elsewhere.engine").is_file()


@pytest.mark.parametrize("what", ["cgrseg_t.onnx", "cgrseg_t.json", "build_plan.json", "build_engine.sh"])
def test_the_engine_never_overwrites_the_bundles_inputs(bundle, machine, capfd, what):
    before = Tree.of(bundle)
    run_cli(capfd, "build-engine", bundle, "--output", bundle / what, "--force").refused("input of this command")
    assert_unchanged(before, bundle)


def test_a_swapped_onnx_is_refused_before_the_build(bundle, machine, capfd):
    """The issue's reproduction: all convolution weights zeroed, the engine's header still claiming the original
    graph's sha256. onnx_sha256 is checked first; a plan edited to match still meets the manifest's graph hash."""
    import onnx

    onnx_path = bundle / "cgrseg_t.onnx"
    model = onnx.load(str(onnx_path))
    model.graph.node[0].name = "edited"  # the graph changed; its embedded manifest did not
    onnx.save(model, str(onnx_path))
    before = Tree.of(bundle)
    run_cli(capfd, "build-engine", bundle).refused("its bundle records")
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    _edit(bundle, lambda d: d.__setitem__("onnx_sha256", digest))
    before = Tree.of(bundle)
    run_cli(capfd, "build-engine", bundle).refused("does not hash to what its manifest records")
    assert_unchanged(before, bundle)
    assert not _trtexec_ran(machine)


@pytest.mark.parametrize("digest", [None, "", "0" * 63, "X" * 64, 42])
def test_a_bundle_without_a_usable_onnx_sha256_is_refused(bundle, machine, capfd, digest):
    _edit(bundle, (lambda d: d.pop("onnx_sha256")) if digest is None else
          (lambda d: d.__setitem__("onnx_sha256", digest)))
    run_cli(capfd, "build-engine", bundle).refused("onnx_sha256")
    assert not _trtexec_ran(machine)


PLAN_LIES = {  # what export --fmt trt refuses as flags, refused as a plan's fields (issue: these reached trtexec)
    "precision fp64": (lambda p: p.__setitem__("precision", "fp64"), "precision"),
    "precision of another artifact": (lambda p: p.__setitem__("precision", "fp16"), "precision lives in the graph"),
    "opt_level 99": (lambda p: p.__setitem__("opt_level", 99), "opt_level"),
    "opt_level true": (lambda p: p.__setitem__("opt_level", True), "opt_level"),
    "workspace -5": (lambda p: p.__setitem__("workspace_mb", -5), "workspace_mb"),
    "workspace 1.5": (lambda p: p.__setitem__("workspace_mb", 1.5), "workspace_mb"),
    "workspace 2^60": (lambda p: p.__setitem__("workspace_mb", 2**60), "workspace_mb"),
    "dla_core -1": (lambda p: p.__setitem__("dla_core", -1), "dla_core"),
    "dla_core on fp32": (lambda p: p.__setitem__("dla_core", 0), "DLA"),
    "gpu_fallback without DLA": (lambda p: p.__setitem__("gpu_fallback", True), "GPU fallback"),
    "gpu_fallback 'yes'": (lambda p: p.__setitem__("gpu_fallback", "yes"), "gpu_fallback"),
    "hardware_compat turing": (lambda p: p.__setitem__("hardware_compat", "turing"), "hardware"),
    "another model": (lambda p: p.__setitem__("model", "segnext_l"), "segnext_l"),
    "a profile of 64x3x100000x100000": (lambda p: p["profiles"][0]["input"].update(
        min=[1, 3, 256, 256], opt=[1, 3, 512, 512], max=[64, 3, 100000, 100000]), "outside what the ONNX"),
    "min above max": (lambda p: p["profiles"][0]["input"].update(min=[4, 3, 512, 512], max=[1, 3, 512, 512]),
                      "min <= opt <= max"),
    "zero dimension": (lambda p: p["profiles"][0]["input"].__setitem__("min", [0, 3, 256, 256]), "min <= opt"),
    "another rank": (lambda p: p["profiles"][0]["input"].__setitem__("max", [4, 3, 1024]), "same rank"),
    "dimensions as text": (lambda p: p["profiles"][0]["input"].__setitem__("opt", "1x3x512x512"), "same rank"),
    "another input": (lambda p: p["profiles"][0].__setitem__("image", p["profiles"][0].pop("input")), "inputs"),
    "no profiles": (lambda p: p.__setitem__("profiles", []), "optimization profile"),
    "notes not text": (lambda p: p.__setitem__("notes", [{"a": 1}]), "notes"),
}


@pytest.mark.parametrize("name", sorted(PLAN_LIES))
def test_a_plans_fields_are_checked_before_any_builder_runs(bundle, machine, capfd, name):
    change, expected = PLAN_LIES[name]
    _edit(bundle, lambda d: change(d["plan"]))
    before = Tree.of(bundle)
    run_cli(capfd, "build-engine", bundle).refused(expected)
    assert_unchanged(before, bundle)
    assert not _trtexec_ran(machine)


@pytest.mark.parametrize("flags, expected", [
    (("--workspace", "-5"), "--workspace"), (("--workspace", "0"), "--workspace"),
    (("--dla-core", "-1"), "--dla-core"), (("--opt-level", "99"), "--opt-level"),
])
def test_export_refuses_the_same_values_as_flags(workdir, capfd, flags, expected):
    before = Tree.of(workdir)
    run_cli(capfd, "export", "--model", "segnext_t", "--fmt", "trt", "--size", "64", *flags).refused(expected)
    assert_unchanged(before, workdir)


def test_plan_checks_are_one_function():
    """export's flags and a bundle's plan go through the same checks (plan.check_settings)."""
    from segdeploy.export.tensorrt.plan import FLAG_NAMES, BuildOptions, check_options, check_plan, make_plan

    manifest = sample_manifest()
    plan = make_plan(manifest)
    for field, value in (("workspace_mb", -5), ("opt_level", 99), ("dla_core", -1), ("hardware_compat", "x")):
        with pytest.raises(SegdeployError, match=field):
            check_plan(dataclasses.replace(plan, **{field: value}))
        with pytest.raises(SegdeployError, match=FLAG_NAMES[field]):
            check_options(BuildOptions(**{field: value}))


# ---------------------------------------------------------------------------------------------------------------
# Fuzzing build plans

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) |
    st.sampled_from(["../x", "/etc/passwd", "x.engine", "timing.cache", "", ".", "..", "a/b", "fp64", "int8"]) |
    st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10)


@st.composite
def edited_plans(draw, document):
    return edit_json(draw, document, [p for p in json_paths(document) if p and p[0] not in ("lint", "commands")],
                     json_values)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pristine")
    _make_bundle(folder, timing_cache="workstation.cache")
    return folder / "bundle"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_build_plans_are_read_or_refused_and_never_point_outside(tmp_path, pristine, data):
    from segdeploy.errors import ArtifactError
    from segdeploy.export.tensorrt.bundle import read_bundle

    bundle = tmp_path / "b"
    if bundle.exists():
        shutil.rmtree(bundle)
    shutil.copytree(pristine, bundle)
    document = data.draw(edited_plans(json.loads((pristine / "build_plan.json").read_text())))
    (bundle / "build_plan.json").write_text(json.dumps(document))
    try:
        read, plan, onnx_path = read_bundle(str(bundle))
    except (ArtifactError, SegdeployError):
        return
    inside = os.path.realpath(bundle)
    for path in (read["engine"], onnx_path, plan.timing_cache):
        if path is not None:
            assert os.path.dirname(os.path.realpath(path)) == inside, path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_build_engine_on_fuzzed_plans(workdir, machine, pristine, capfd, data):
    """End to end: one refusal line or an engine inside the bundle; nothing outside the bundle changes."""
    bundle = workdir / "b"
    if bundle.exists():
        shutil.rmtree(bundle)
    shutil.copytree(pristine, bundle)
    (workdir / "victim.txt").write_text("the user's file\n")
    document = data.draw(edited_plans(json.loads((pristine / "build_plan.json").read_text())))
    (bundle / "build_plan.json").write_text(json.dumps(document))
    def outside():  # everything but the bundle and the stand-in tools (trtexec notes its argv in bin/)
        return [e for e in Tree.of(workdir).entries if e[0].split("/")[0] not in ("b", "bin")]

    before = outside()
    outcome = run_cli(capfd, "build-engine", bundle, "--force")
    if outcome.code != 0:
        outcome.refused()
    assert outside() == before

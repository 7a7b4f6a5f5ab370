"""TensorRT engines (with segdeploy's header and without), build bundles and Triton repositories, damaged or
foreign: info, the TensorRT runner's preflight (no TensorRT needed), build-engine and export --fmt triton refuse
them with one line."""
from __future__ import annotations

import json

import pytest

import skips
from hostile import MALFORMED_MANIFESTS, Tree, assert_unchanged, copy_artifact, run_cli
from manifests import SHA, sample_manifest
from segdeploy.artifact import EngineInfo
from segdeploy.artifact.engine_header import pack
from segdeploy.errors import ArtifactError

PLAN = b"ftrt" + bytes(range(256)) * 4


def engine_manifest():
    info = EngineInfo(tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7", onnx_sha256=SHA,
                      builder="trtexec")
    return sample_manifest().replace(format="engine", engine=info)


def _header(document_bytes: bytes, plan: bytes = PLAN) -> bytes:
    return len(document_bytes).to_bytes(4, "little") + document_bytes + plan


def _engine(name: str) -> bytes:
    good = pack(engine_manifest(), PLAN)
    n = int.from_bytes(good[:4], "little")
    document = json.loads(good[4:4 + n])
    if name == "3 bytes":
        return good[:3]
    if name == "header without a plan":
        return good[:4 + n]
    if name == "header cut short":
        return good[:4 + n // 2]
    if name == "header not JSON":
        return _header(b"{" + b"x" * 200)
    if name == "header nested too deep":
        return _header(b"{" + b'"a":' * 1 + b"[" * 100_000 + b"]" * 100_000 + b"}")
    if name == "header with NaN":
        return _header(b'{"schema_version": NaN}')
    if name == "header not UTF-8":
        return _header(b"{\xff\xfe" + b"x" * 40 + b"}")
    if name == "header of an ONNX artifact":
        return _header(json.dumps(sample_manifest().to_dict()).encode())
    if name == "header missing the engine facts":
        document.pop("engine")
        return _header(json.dumps(document).encode())
    if name == "header lying about its model":
        document["preprocessing"]["mean"] = [0, 0, 0]
        return _header(json.dumps(document).encode())
    if name == "header of schema 99":
        return _header(json.dumps(dict(document, schema_version=99)).encode())
    raise KeyError(name)


DAMAGED = ("3 bytes", "header without a plan", "header not JSON", "header nested too deep", "header with NaN",
           "header not UTF-8", "header of an ONNX artifact", "header missing the engine facts",
           "header lying about its model", "header of schema 99")


@pytest.mark.parametrize("name", DAMAGED)
def test_info_refuses_damaged_engines(workdir, capfd, name):
    path = workdir / "m.engine"
    path.write_bytes(_engine(name))
    run_cli(capfd, "info", path).refused()


@pytest.mark.parametrize("name", DAMAGED)
def test_runner_preflight_refuses_damaged_engines(workdir, name):
    """What the TensorRT runner does before TensorRT sees the file, testable without TensorRT."""
    from segdeploy.runtimes.tensorrt_checks import preflight

    path = workdir / "m.engine"
    path.write_bytes(_engine(name))
    if name == "header lying about its model":
        # a well-formed header: the preflight passes it on, and the registry check that follows it in the runner
        # (runtimes/manifest_check, the one info runs above) catches the lie
        manifest, _, _ = preflight(str(path), "10.3.0", "8.7")
        assert list(manifest.preprocessing.mean) == [0, 0, 0]
        return
    with pytest.raises(ArtifactError):
        preflight(str(path), "10.3.0", "8.7")


def test_headerless_engine_is_described_not_refused(workdir, capfd):
    """A bare trtexec plan has no header (its first bytes are TensorRT's magic, not a length): info says so."""
    path = workdir / "bare.engine"
    path.write_bytes(PLAN)
    outcome = run_cli(capfd, "info", path)
    assert outcome.code == 0 and "no segdeploy manifest" in outcome.out, outcome.describe()
    from segdeploy.runtimes.tensorrt_checks import preflight

    manifest, offset, warnings = preflight(str(path), "10.3.0", "8.7")
    assert manifest is None and offset == 0 and "no segdeploy header" in warnings[0]


def test_foreign_engine_refused_before_deserialization(workdir):
    from segdeploy.runtimes.tensorrt_checks import preflight

    path = workdir / "m.engine"
    path.write_bytes(pack(engine_manifest(), PLAN))
    with pytest.raises(ArtifactError, match="built by TensorRT 10.3.0"):
        preflight(str(path), "10.4.0", "8.7")
    with pytest.raises(ArtifactError, match="compute capability"):
        preflight(str(path), "10.3.0", "9.0")


def test_engine_backend_without_tensorrt(workdir, capfd):
    from segdeploy.runtimes.registry import backend_status

    if backend_status("tensorrt").available:
        skips.skip(skips.TENSORRT_PRESENT, "this case is for machines without it")
    path = workdir / "m.engine"
    path.write_bytes(pack(engine_manifest(), PLAN))
    run_cli(capfd, "bench", "--artifact", path, "--warmup-s", "0", "--min-s", "0", "--min-iters", "1",
            "--no-peak").refused("tensorrt")


# ---------------------------------------------------------------------------------------------------------------
# Build bundles


def _bundle(folder, artifact, damage: str):
    from segdeploy.export.tensorrt import BuildOptions, export_engine

    result = export_engine(str(copy_artifact(artifact, folder / "src")), BuildOptions(), str(folder / "bundle"),
                           builders=("bundle",))
    bundle = folder / "bundle"
    plan = bundle / "build_plan.json"
    document = json.loads(plan.read_text())
    if damage == "no build plan":
        plan.unlink()
    elif damage in MALFORMED_MANIFESTS and MALFORMED_MANIFESTS[damage] is not None:
        plan.write_bytes(MALFORMED_MANIFESTS[damage])
    elif damage == "ONNX file missing":
        (bundle / document["onnx"]).unlink()
    elif damage == "ONNX outside the bundle":
        plan.write_text(json.dumps(dict(document, onnx="../src/a.onnx")))
    elif damage == "plan is a list":
        plan.write_text(json.dumps(dict(document, plan=[1, 2])))
    elif damage == "plan without profiles":
        document["plan"].pop("profiles")
        plan.write_text(json.dumps(document))
    elif damage == "ONNX truncated":
        onnx_path = bundle / document["onnx"]
        onnx_path.write_bytes(onnx_path.read_bytes()[:1000])
    else:
        raise KeyError(damage)
    return result.path


BUNDLE_DAMAGE = ("no build plan", "empty", "NUL bytes", "nested 100000 deep", "a 5000-digit integer", "NaN",
                 "a JSON array", "schema 99", "ONNX file missing", "ONNX outside the bundle", "plan is a list",
                 "plan without profiles", "ONNX truncated")


@pytest.mark.parametrize("damage", BUNDLE_DAMAGE)
def test_build_engine_refuses_damaged_bundles(artifact, workdir, capfd, damage):
    bundle = _bundle(workdir, artifact, damage)
    before = Tree.of(workdir)
    run_cli(capfd, "build-engine", bundle).refused()
    assert_unchanged(before, workdir)


@pytest.mark.parametrize("what", ["a file", "missing"])
def test_build_engine_on_what_is_not_a_bundle(workdir, capfd, what):
    path = workdir / "bundle"
    if what == "a file":
        path.write_text("not a folder")
    run_cli(capfd, "build-engine", path).refused()


# ---------------------------------------------------------------------------------------------------------------
# Triton repositories


def test_triton_into_an_existing_model_folder_without_force(workdir, capfd):
    model = workdir / "repo" / "segnext_t"
    model.mkdir(parents=True)
    (model / "keep.txt").write_text("mine")
    before = Tree.of(workdir)
    run_cli(capfd, "export", "--model", "segnext_t", "--fmt", "triton", "--output", "repo", "--size", "256",
            "--platform", "onnxruntime").refused("exists; pass --force")
    assert_unchanged(before, workdir)  # refused before the export ran: no ONNX artifact either


def test_triton_repository_that_is_a_file(workdir, capfd):
    (workdir / "repo").write_text("a file")
    run_cli(capfd, "export", "--model", "segnext_t", "--fmt", "triton", "--output", "repo", "--size", "256",
            "--platform", "onnxruntime").refused("is a file")


def test_triton_writer_refuses_and_replaces_whole(artifact, workdir):
    from segdeploy.export.triton import write_repository

    source = copy_artifact(artifact, workdir / "src")
    folder = write_repository(source, workdir / "repo", platform="onnxruntime", force=False)
    before = Tree.of(workdir / "repo")
    assert write_repository(source, workdir / "repo", platform="onnxruntime") == folder  # the same: kept
    with pytest.raises(ArtifactError, match="exists"):  # another (its config): refused
        write_repository(source, workdir / "repo", platform="onnxruntime", instance_kind="cpu")
    assert_unchanged(before, workdir / "repo")
    assert write_repository(source, workdir / "repo", platform="onnxruntime", force=True) == folder
    assert not Tree.of(workdir / "repo").hidden()

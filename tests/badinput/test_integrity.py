"""Integrity nothing in a file can switch off: an ONNX artifact's graph hash is always checked (a manifest without
the fields that make it checkable is refused as not segdeploy's), an engine's plan hash too; a manifest that records
a failed validation warns on every use; a file is what its content says, not its name; NaN and Infinity never
reach a manifest; --fmt trt writes a folder for a bundle and a file for an engine, and says which."""
from __future__ import annotations

import json
import math

import pytest

from hostile import (
    PHOTO,
    Tree,
    assert_unchanged,
    copy_artifact,
    lie,
    manifest_document,
    run_cli,
    write_with_manifest,
)
from segdeploy.errors import ArtifactError

PREDICT = ("predict", "--source", PHOTO, "--backend", "onnxruntime", "--artifact")


@pytest.mark.parametrize("edit", ["drop the key", "null", "empty", "drop tool_versions' contents"])
def test_a_manifest_cannot_switch_the_graph_hash_off(artifact, workdir, capfd, edit):
    """The issue's reproduction: removing tool_versions.segdeploy made the hash check skip, so an edited graph ran
    in predict and info printed 'graph: matches its manifest'."""
    import onnx
    from onnx import numpy_helper

    change = {"drop the key": lambda d: d["tool_versions"].pop("segdeploy"),
              "null": lambda d: d["tool_versions"].__setitem__("segdeploy", None),
              "empty": lambda d: d["tool_versions"].__setitem__("segdeploy", ""),
              "drop tool_versions' contents": lambda d: d.__setitem__("tool_versions", {})}[edit]
    model = onnx.load(str(artifact))
    for i, init in enumerate(model.graph.initializer):  # an edited graph: a weight tensor zeroed
        array = numpy_helper.to_array(init)
        if array.size > 1000 and array.dtype.kind == "f":
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(array * 0, init.name))
            break
    path = write_with_manifest(artifact, workdir / "a.onnx", lie(manifest_document(artifact), change), model=model)
    before = Tree.of(workdir)
    for argv in (("info", path), (*PREDICT, path), ("validate", path, "--n", "1")):
        outcome = run_cli(capfd, *argv)
        line = outcome.refused("no segdeploy release")
        assert "matches" not in outcome.out, line
    assert_unchanged(before, workdir)


def test_a_failed_validation_warns_on_every_use(artifact, workdir, capfd):
    path = write_with_manifest(artifact, workdir / "a.onnx", lie(manifest_document(artifact), lambda d: d[
        "validation"].__setitem__("passed", False)))
    for argv in ((*PREDICT, path), ("bench", "--artifact", path, "--backend", "onnxruntime", "--warmup-s", "0",
                                    "--min-s", "0", "--min-iters", "1", "--no-peak")):
        outcome = run_cli(capfd, *argv)
        assert outcome.code == 0, outcome.describe()
        warnings = [line for line in outcome.err.splitlines() if "warning:" in line]
        assert len(warnings) == 1 and "FAILED" in warnings[0] and str(path) in warnings[0], outcome.describe()


def test_a_passed_validation_gives_no_warning(artifact, workdir, capfd):
    path = copy_artifact(artifact, workdir)
    outcome = run_cli(capfd, *PREDICT, path)
    outcome.succeeded()
    assert not [line for line in outcome.err_lines if "warning:" in line], outcome.describe()


# ---------------------------------------------------------------------------------------------------------------
# Files are what they hold


def test_an_onnx_file_renamed_engine_is_described_as_what_it_is(artifact, workdir, capfd):
    """The issue: an ONNX file (or a manifest) renamed .engine was described as a loadable bare TensorRT plan."""
    path = workdir / "m.engine"
    path.write_bytes(artifact.read_bytes())
    (workdir / "m.json").write_bytes(artifact.with_suffix(".json").read_bytes())
    outcome = run_cli(capfd, "info", path)
    assert outcome.code == 0 and "TensorRT plan" not in outcome.out, outcome.describe()
    assert "onnx" in outcome.out and "segnext_t" in outcome.out, outcome.describe()
    from segdeploy.runtimes.tensorrt_checks import preflight

    with pytest.raises(ArtifactError, match="not a TensorRT engine: it holds an ONNX model"):
        preflight(str(path), "10.3.0", "8.7")


def test_a_manifest_renamed_engine_is_read_as_a_manifest(artifact, workdir, capfd):
    path = workdir / "m.engine"
    path.write_bytes(artifact.with_suffix(".json").read_bytes())
    outcome = run_cli(capfd, "info", path)
    assert outcome.code == 0 and "TensorRT plan" not in outcome.out and "segnext_t" in outcome.out, \
        outcome.describe()
    run_cli(capfd, *PREDICT, path).refused("holds JSON")


@pytest.mark.parametrize("content", [b"not an engine, just text\n" * 8, bytes(64), b"\x00\x00\x00\x00" + b"x" * 60])
def test_bytes_that_are_no_engine_are_refused(workdir, capfd, content):
    path = workdir / "m.engine"
    path.write_bytes(content)
    run_cli(capfd, "info", path).refused("not a TensorRT engine")


def test_a_damaged_plan_behind_an_intact_header_is_refused(workdir, capfd):
    from manifests import SHA, sample_manifest
    from segdeploy.artifact import EngineInfo
    from segdeploy.artifact.engine_header import pack

    info = EngineInfo("10.3.0", "Orin", "8.7", SHA, "trtexec")
    data = bytearray(pack(sample_manifest().replace(format="engine", engine=info), b"ftrt" + bytes(range(256)) * 4))
    data[-100] ^= 0xFF
    path = workdir / "m.engine"
    path.write_bytes(bytes(data))
    run_cli(capfd, "info", path).refused("does not hash to the sha256 its header records")
    document = json.loads(bytes(data[4:4 + int.from_bytes(data[:4], "little")]))
    document["engine"].pop("plan_sha256")
    header = json.dumps(document).encode()
    path.write_bytes(len(header).to_bytes(4, "little") + header + b"ftrt" + bytes(range(256)) * 4)
    run_cli(capfd, "info", path).refused("records no plan_sha256")


# ---------------------------------------------------------------------------------------------------------------
# Numbers that are no numbers, and --fmt trt's output


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "101", "1e400"])
def test_max_drop_must_be_a_finite_budget(workdir, capfd, value):
    """The issue: --max-drop nan (or inf) succeeded and wrote a manifest holding NaN that segdeploy then refused."""
    before = Tree.of(workdir)
    run_cli(capfd, "export", "--model", "segnext_t", "--size", "64", "--precision", "int8", "--calib", PHOTO.parent,
            "--eval-data", PHOTO.parent, "--max-drop", value).refused("argument --max-drop")  # at the parser
    assert_unchanged(before, workdir)


@pytest.mark.parametrize("flag, value", [("--percentile", "nan"), ("--percentile", "inf"), ("--alpha", "nan"),
                                         ("--workspace", "1e3"), ("--instances", "inf")])
def test_other_numbers_are_refused_at_the_parser(workdir, capfd, flag, value):
    command = ("predict", "--model", "segnext_t", "--source", PHOTO) if flag == "--alpha" else \
        ("export", "--model", "segnext_t", "--size", "64")
    before = Tree.of(workdir)
    run_cli(capfd, *command, flag, value).refused(f"argument {flag}")  # at the parser, before anything loads
    assert_unchanged(before, workdir)


def test_the_manifest_writer_refuses_non_finite_numbers(artifact, workdir):
    from segdeploy.artifact.manifest_store import read_sidecar
    from segdeploy.export.onnx import write_artifact

    manifest = read_sidecar(artifact.with_suffix(".json"))
    manifest.precision.details["accuracy"] = {"budget": math.nan}
    with pytest.raises(ArtifactError, match="nan"):
        manifest.to_json()
    import onnx

    with pytest.raises(ArtifactError, match="nan"):
        write_artifact(str(workdir / "x.onnx"), onnx.load(str(artifact)), manifest, force=False)
    assert list(workdir.iterdir()) == []


def test_trt_output_without_tensorrt(workdir, capfd):
    """No TensorRT here: --fmt trt writes a build bundle, a folder. --output x.engine used to create a folder named
    x.engine (while --output DIR was refused); now a file name is refused before the export, a folder is taken."""
    from segdeploy.export.tensorrt import planned_kind

    if planned_kind() != "bundle":
        pytest.skip("a TensorRT builder is installed here; this case is for machines without one")
    before = Tree.of(workdir)
    run_cli(capfd, "export", "--model", "segnext_t", "--fmt", "trt", "--size", "64", "--no-validate", "--output",
            "x.engine").refused("give --output a folder name")
    assert_unchanged(before, workdir)
    outcome = run_cli(capfd, "export", "--model", "segnext_t", "--fmt", "trt", "--size", "64", "--no-validate",
                      "--output", "x_bundle")
    outcome.succeeded()
    assert (workdir / "x_bundle" / "build_plan.json").is_file()
    assert "wrote the build bundle (a folder)" in outcome.out
    again = run_cli(capfd, "export", "--model", "segnext_t", "--fmt", "trt", "--size", "64", "--no-validate",
                    "--output", "x_bundle")
    again.succeeded()  # the same export and build again: the ONNX artifact and the bundle are kept, not rewritten
    assert "kept the build bundle (a folder)" in again.out
    run_cli(capfd, "export", "--model", "segnext_t", "--fmt", "trt", "--size", "96", "--no-validate", "--output",
            "x_bundle").refused("exists and is another export")

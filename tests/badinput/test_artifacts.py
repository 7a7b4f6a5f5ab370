"""Every command that reads an ONNX artifact, against damaged bytes, broken or hostile graphs, missing and foreign
files: one error line and exit 2, or (validate, on an artifact that runs but computes garbage) exit 1."""
from __future__ import annotations

import json

import pytest

from hostile import (
    GRAPH_DAMAGE,
    ONNX_BYTE_DAMAGE,
    PHOTO,
    Tree,
    assert_unchanged,
    copy_artifact,
    corrupt_onnx_bytes,
    damaged_graph,
    manifest_document,
    run_cli,
    write_with_manifest,
)

BENCH_FAST = ("--warmup-s", "0", "--min-s", "0", "--min-iters", "1", "--no-peak")

READERS = {
    "info": lambda p: ("info", p),
    "validate": lambda p: ("validate", p, "--n", "1"),
    "predict": lambda p: ("predict", "--artifact", p, "--source", PHOTO, "--backend", "onnxruntime"),
    "bench": lambda p: ("bench", "--artifact", p, "--backend", "onnxruntime", *BENCH_FAST),
    "lint-trt": lambda p: ("lint-trt", p),
}


@pytest.mark.parametrize("command", sorted(READERS))
@pytest.mark.parametrize("damage", ONNX_BYTE_DAMAGE)
def test_damaged_bytes_are_one_line(artifact, workdir, capfd, command, damage):
    path = copy_artifact(artifact, workdir)
    path.write_bytes(corrupt_onnx_bytes(damage, artifact.read_bytes()))
    before = Tree.of(workdir)
    line = run_cli(capfd, *READERS[command](path)).refused()
    assert str(path) in line, line
    assert_unchanged(before, workdir)


@pytest.mark.parametrize("command", sorted(set(READERS) - {"lint-trt"}))
@pytest.mark.parametrize("damage", GRAPH_DAMAGE)
def test_broken_graphs_are_one_line(artifact, workdir, capfd, command, damage):
    path = damaged_graph(damage, artifact, workdir / "a.onnx")
    (workdir / "a.json").write_bytes(artifact.with_suffix(".json").read_bytes())
    before = Tree.of(workdir)
    run_cli(capfd, *READERS[command](path)).refused()
    assert_unchanged(before, workdir)


@pytest.mark.parametrize("damage, code, expected", [
    ("unknown operator", 0, "NoSuchOp is not in TensorRT's ONNX operator table"),  # a warning: the parser may know it
    ("dangling input", 1, "dangling-input"),
    ("no graph", 2, "it holds no graph"),
])
def test_lint_reports_or_refuses_broken_graphs(artifact, workdir, capfd, damage, code, expected):
    """lint-trt reads graphs that do not pass ONNX's checker (finding their flaws is its job), but never crashes."""
    path = damaged_graph(damage, artifact, workdir / "a.onnx")
    outcome = run_cli(capfd, "lint-trt", path)
    if code == 2:
        outcome.refused(expected)
        return
    assert outcome.code == code and expected in outcome.out and "Traceback" not in outcome.err, outcome.describe()


def test_silently_damaged_weights_are_caught_by_the_graph_hash(artifact, workdir, capfd):
    """4 kB of weights zeroed: the file parses and runs, computing something else. predict and bench refuse it,
    info says so, validate measures it (and notes the edit)."""
    path = copy_artifact(artifact, workdir)
    path.write_bytes(corrupt_onnx_bytes("zeroed weights", artifact.read_bytes()))
    for command in ("predict", "bench"):
        run_cli(capfd, *READERS[command](path)).refused("does not hash")
    outcome = run_cli(capfd, "info", path)
    assert outcome.code == 0 and "DIFFERS" in outcome.out, outcome.describe()
    outcome = run_cli(capfd, "validate", path, "--n", "1")
    # 4 kB of zeros move the logits by far more than FP32's tolerance
    assert outcome.code == 1 and "FAILED" in outcome.out and "edited since" in outcome.out, outcome.describe()
    assert "Traceback" not in outcome.err


def test_nan_weights_fail_validation_and_predict(artifact, workdir, capfd):
    """An artifact whose weights are NaN (say, exported from a diverged checkpoint, so its manifest's graph hash
    matches) runs, but its outputs are garbage: validate says so (exit 1, not 'max abs err 0'), predict refuses to
    turn NaN into a mask of class 0."""
    import onnx

    from segdeploy.artifact.onnx_file import graph_sha256

    path = damaged_graph("NaN weights", artifact, workdir / "a.onnx")
    document = json.loads(artifact.with_suffix(".json").read_text())
    document["graph_sha256"] = graph_sha256(onnx.load(str(path)))
    write_with_manifest(path, path, document)
    outcome = run_cli(capfd, "validate", path, "--n", "1")
    assert outcome.code == 1 and "FAILED" in outcome.out and "non-finite" in outcome.out, outcome.describe()
    assert "Traceback" not in outcome.err
    run_cli(capfd, *READERS["predict"](path)).refused("non-finite")


@pytest.mark.parametrize("command", ["info", "validate", "predict", "bench"])
@pytest.mark.parametrize("where", ["missing", "a folder", "a device"])
def test_paths_that_are_not_artifacts(workdir, capfd, command, where):
    path = {"missing": workdir / "nothing.onnx", "a folder": workdir / "dir.onnx", "a device": "/dev/null"}[where]
    if where == "a folder":
        path.mkdir()
    run_cli(capfd, *READERS[command](path)).refused()


def test_foreign_onnx_without_manifest(artifact, workdir, capfd):
    """A graph segdeploy did not write: validate and predict need to be told how to feed it, info says what it is."""
    path = write_with_manifest(artifact, workdir / "a.onnx", None, embed=False, sidecar=False)
    run_cli(capfd, "validate", path, "--n", "1").refused("no segdeploy manifest")
    run_cli(capfd, *READERS["predict"](path)).refused("no segdeploy manifest")
    outcome = run_cli(capfd, "info", path)
    assert outcome.code == 0 and "no segdeploy manifest" in outcome.out, outcome.describe()


def test_sidecar_from_another_export_is_refused(artifact, workdir, capfd):
    document = manifest_document(artifact)
    path = write_with_manifest(artifact, workdir / "a.onnx", document)
    other = dict(document, graph_sha256="f" * 64)
    (workdir / "a.json").write_text(__import__("json").dumps(other))
    for command in ("info", "validate", "predict", "bench"):
        run_cli(capfd, *READERS[command](path)).refused("not written together")


def test_validate_wrong_model_and_wrong_checkpoint(artifact, workdir, capfd, tmp_path):
    path = copy_artifact(artifact, workdir)
    run_cli(capfd, "validate", path, "--model", "cgrseg_t", "--n", "1").refused("exported from segnext_t")
    other = tmp_path / "other.pth"
    import torch

    from segdeploy import models

    model = models.create("segnext_t")
    models.load_recipe_weights(model, seed=1)
    torch.save(model.state_dict(), other)
    run_cli(capfd, "validate", path, "--checkpoint", other, "--n", "1").refused("is not what the artifact was")


def test_bench_cross_checks_artifact_and_model(artifact, workdir, capfd):
    path = copy_artifact(artifact, workdir)
    run_cli(capfd, "bench", "--artifact", path, "--model", "cgrseg_t", *BENCH_FAST).refused(
        "exported from segnext_t, not cgrseg_t")
    run_cli(capfd, "bench", "--artifact", path, "--backend", "torch", *BENCH_FAST).refused()
    run_cli(capfd, "bench", "--artifact", path, "--batch", "4", *BENCH_FAST).refused("takes batch 1")
    run_cli(capfd, "bench", "--artifact", path, "--batch", "max", *BENCH_FAST).refused("fixed batch")

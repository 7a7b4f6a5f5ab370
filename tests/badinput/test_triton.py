"""Triton repositories: Triton loads every folder it finds in a repository, so a writer stages beside the
repository, never in it, and a writer killed at any point (or a server started during a write) leaves a repository
of model folders only. A failed export leaves nothing behind (its ONNX step included); --force replaces what
segdeploy writes in a model folder (config, manifest, version 1's model), never other versions or the user's files;
absurd instance counts and odd model names are refused before any work."""
from __future__ import annotations

import subprocess
import sys

import pytest

from hostile import Tree, assert_unchanged, cli_env, copy_artifact, corrupt_onnx_bytes, run_cli
from segdeploy.errors import ArtifactError, SegdeployError
from segdeploy.files.locking import TEST_POINTS

EXPORT = ("export", "--model", "segnext_t", "--fmt", "triton", "--size", "64", "--no-validate", "--output", "repo")


@pytest.mark.parametrize("count", ["0", "-1", "100000000", "nan", "2.5"])
def test_absurd_instance_counts_are_refused_before_any_work(workdir, capfd, count):
    """The issue: --instances 0 failed after the ONNX export (leaving it behind); 100000000 was accepted."""
    before = Tree.of(workdir)
    run_cli(capfd, *EXPORT, "--instances", count).refused("--instances")
    assert_unchanged(before, workdir)


def test_a_failed_triton_step_leaves_nothing_behind(workdir, capfd, monkeypatch):
    """Whatever fails after the ONNX step (here: the repository writer), the ONNX artifact the command wrote goes
    too, so the next export is not told that it exists."""
    import segdeploy.export.triton as triton

    def fail(*args, **kwargs):
        raise SegdeployError("the repository cannot be written (simulated)")

    with monkeypatch.context() as patched:
        patched.setattr(triton, "write_repository", fail)
        run_cli(capfd, *EXPORT).refused("simulated")
    assert Tree.of(workdir).names() == []
    run_cli(capfd, *EXPORT).succeeded()  # not "exists; pass --force"
    assert (workdir / "repo" / "segnext_t" / "config.pbtxt").is_file()


def test_an_interrupted_triton_step_leaves_nothing_behind(workdir, capfd, monkeypatch):
    import segdeploy.export.triton as triton

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(triton, "write_repository", interrupt)
    outcome = run_cli(capfd, *EXPORT)
    assert outcome.code == 130, outcome.describe()
    assert Tree.of(workdir).names() == []


def test_force_replaces_segdeploys_files_only(artifact, workdir):
    """The issue: --fmt triton --force deleted other version folders and the user's files in the model folder."""
    from segdeploy.export.triton import write_repository

    source = copy_artifact(artifact, workdir / "src", "segnext_t")
    model = workdir / "repo" / "segnext_t"
    write_repository(source, workdir / "repo", platform="onnxruntime")
    (model / "2").mkdir()
    (model / "2" / "model.onnx").write_bytes(b"the user's version 2")
    (model / "notes.txt").write_text("the user's notes")
    (model / "1" / "labels.txt").write_text("the user's labels")
    (model / "config.pbtxt").write_text("an old config")
    with pytest.warns(UserWarning, match="version"):
        write_repository(source, workdir / "repo", platform="onnxruntime", force=True)
    assert (model / "2" / "model.onnx").read_bytes() == b"the user's version 2"
    assert (model / "notes.txt").read_text() == "the user's notes"
    assert (model / "1" / "labels.txt").read_text() == "the user's labels"
    assert (model / "config.pbtxt").read_text() != "an old config"
    assert (model / "1" / "model.onnx").read_bytes() == source.read_bytes()
    assert not Tree.of(workdir / "repo").hidden() and not Tree.of(workdir).hidden()


WRITER = """
import sys
from segdeploy.export.triton import write_repository
write_repository(sys.argv[1], sys.argv[2], platform="onnxruntime", force=True)
"""


@pytest.mark.parametrize("point", [p for p in TEST_POINTS if p != "half-committed"])
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_a_killed_writer_leaves_a_repository_of_model_folders(artifact, workdir, point, sig):
    """Killed at each point of its commit: the repository holds model folders only (what Triton would load), the
    old model or the new one, never missing; the staging leftovers lie beside the repository, and the next writer
    removes them."""
    source = copy_artifact(artifact, workdir / "src", "segnext_t")
    repo = workdir / "repo"
    (repo / "other_model" / "1").mkdir(parents=True)
    (repo / "other_model" / "config.pbtxt").write_text("name: \"other_model\"")
    from segdeploy.export.triton import write_repository

    write_repository(source, repo, platform="onnxruntime")
    old_config = (repo / "segnext_t" / "config.pbtxt").read_bytes()
    done = subprocess.run([sys.executable, "-c", WRITER, str(source), str(repo)], capture_output=True, text=True,
                          env=cli_env(SEGDEPLOY_TEST_SIGNAL_AT=f"{point}:{sig}"), timeout=300)
    assert done.returncode != 0
    assert sorted(p.name for p in repo.iterdir()) == ["other_model", "segnext_t"]
    assert not Tree.of(repo).hidden()
    assert (repo / "segnext_t" / "config.pbtxt").read_bytes() == old_config
    assert (repo / "segnext_t" / "1" / "model.onnx").is_file()
    write_repository(source, repo, platform="onnxruntime", force=True)
    assert not Tree.of(workdir).hidden()


@pytest.mark.parametrize("name", [".hidden", "..", "a/b", "-x", "a b", "x" * 200])
def test_odd_model_names_are_refused(artifact, workdir, name):
    from segdeploy.export.triton import write_repository

    source = copy_artifact(artifact, workdir / "src", "segnext_t")
    before = Tree.of(workdir)
    with pytest.raises(SegdeployError, match="model name"):
        write_repository(source, workdir / "repo", model_name=name)
    assert_unchanged(before, workdir)


def test_an_edited_graph_is_not_served(artifact, workdir):
    from segdeploy.export.triton import write_repository

    source = copy_artifact(artifact, workdir / "src", "segnext_t")
    source.write_bytes(corrupt_onnx_bytes("zeroed weights", source.read_bytes()))
    with pytest.raises(ArtifactError, match="does not hash"):
        write_repository(source, workdir / "repo")
    assert not (workdir / "repo").exists()

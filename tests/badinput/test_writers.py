"""Concurrent and killed writers: real processes, paused (SIGSTOP) or killed (SIGKILL, SIGTERM, SIGINT) at named
points of segdeploy.files' commit (its SEGDEPLOY_TEST_SIGNAL_AT hook). Whatever happens, an artifact and its sidecar
on disk are one writer's pair or nothing (the old pair, when one was being replaced), never a mix or a half, and
no temp file outlives the next reader or writer.

The fast cases drive segdeploy.files directly from a small writer process; the slow ones run real exports."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hostile import ROOT, Tree, answer_lines, cli_env, interruptible, pair_state, resume, start_writer, wait_stopped
from segdeploy.errors import ArtifactError
from segdeploy.files.journal import wait_for_writers
from segdeploy.files.locking import TEST_POINTS

SIGNALS = ("SIGKILL", "SIGTERM", "SIGINT")


def _old_pair(folder):
    (folder / "a.onnx").write_bytes(b"OLD" * 4096)
    (folder / "a.json").write_bytes(b"OLD")


def _read(path):
    """What a reader gets: the file's first bytes, or its one-line refusal (never a change on disk)."""
    try:
        wait_for_writers(path)
    except ArtifactError as exc:
        return f"refused: {exc}"
    return path.read_bytes()[:3].decode() if path.exists() else None


@pytest.mark.parametrize("replacing", [False, True], ids=["new", "replacing"])
@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("point", TEST_POINTS)
def test_a_killed_writer_leaves_one_pair_or_none(tmp_path, point, sig, replacing):
    if replacing:
        _old_pair(tmp_path)
    writer = start_writer(tmp_path, "NEW", force=replacing, signal_at=f"{point}:{sig}")
    writer.communicate(timeout=120)
    assert writer.returncode == -getattr(signal, sig)  # it died of the signal (SIGINT: after rolling back)
    before = Tree.of(tmp_path)
    seen = {name: _read(tmp_path / name) for name in ("a.onnx", "a.json")}
    assert Tree.of(tmp_path) == before  # readers never write
    if point == "committed":  # the commit point was passed: the new pair is in place, whatever came after
        assert seen == {"a.onnx": "NEW", "a.json": "NEW"}
    elif point == "half-committed" and sig != "SIGINT":  # half a unit in place, nobody left to undo it (this
        # bare writer dies of SIGTERM; the CLI turns it into an exception, as Python does SIGINT)
        assert all(v is not None and v.startswith("refused: ") and "half written" in v for v in seen.values()), seen
    else:
        assert seen == ({"a.onnx": "OLD", "a.json": "OLD"} if replacing else {"a.onnx": None, "a.json": None})
    # the next writer rolls the dead one's unit back (what it made is not "existing": no --force needed for it)
    second = start_writer(tmp_path, "BBB", force=replacing or point == "committed")
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert pair_state(tmp_path) == {"a.onnx": "BBB", "a.json": "BBB"}
    assert Tree.of(tmp_path).hidden() == []  # no temp file, no journal, no old copy once a writer came by


def test_an_interrupted_writer_cleans_up_itself(tmp_path):
    """SIGINT reaches Python as KeyboardInterrupt: the writer rolls back itself, before any reader."""
    _old_pair(tmp_path)
    writer = start_writer(tmp_path, "NEW", force=True, signal_at="half-committed:SIGINT")
    writer.communicate(timeout=120)
    assert writer.returncode == -signal.SIGINT  # Python ends on an unhandled KeyboardInterrupt by the signal
    assert Tree.of(tmp_path).names() == ["a.json", "a.onnx"]
    assert pair_state(tmp_path) == {"a.onnx": "OLD", "a.json": "OLD"}


@pytest.mark.parametrize("force", [False, True], ids=["no-force", "force"])
@pytest.mark.parametrize("point", ["locked", "written", "journaled", "half-committed"])
def test_two_writers_never_interleave(tmp_path, point, force):
    """A stops at ``point`` holding the folder's lock; B starts and waits; A resumes and finishes; then B refuses
    (the pair exists: without --force) or replaces the pair whole (with --force)."""
    first = start_writer(tmp_path, "AAA", force=force, signal_at=f"{point}:SIGSTOP")
    wait_stopped(first)
    second = start_writer(tmp_path, "BBB", force=force)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            second.wait(timeout=1.0)  # B waits for the lock, even where A's first file is there already
        # A's first file once A is past writing it, never B's
        assert pair_state(tmp_path) == ({"a.onnx": "AAA"} if point == "half-committed" else {})
    finally:
        resume(first)
    first.communicate(timeout=120)
    _, second_err = second.communicate(timeout=120)
    assert first.returncode == 0
    if force:
        assert second.returncode == 0 and pair_state(tmp_path) == {"a.onnx": "BBB", "a.json": "BBB"}
    else:
        assert second.returncode == 1 and "exists" in second_err
        assert pair_state(tmp_path) == {"a.onnx": "AAA", "a.json": "AAA"}
    assert Tree.of(tmp_path).hidden() == []


READER = """
import sys
from segdeploy.files.journal import wait_for_writers
wait_for_writers(sys.argv[1])
print(open(sys.argv[1]).read()[:3])
"""


def test_a_reader_waits_for_a_writer_in_the_middle_of_its_commit(tmp_path):
    """A reader that finds a unit half committed (a journal) waits for the live writer, then reads the whole pair."""
    _old_pair(tmp_path)
    writer = start_writer(tmp_path, "NEW", force=True, signal_at="half-committed:SIGSTOP")
    wait_stopped(writer)
    assert pair_state(tmp_path) == {"a.onnx": "NEW", "a.json": "OLD"}  # what a reader that did not wait would see
    reader = subprocess.Popen([sys.executable, "-c", READER, str(tmp_path / "a.json")], env=cli_env(),
                              stdout=subprocess.PIPE, text=True)
    with pytest.raises(subprocess.TimeoutExpired):
        reader.wait(timeout=1.0)
    resume(writer)
    writer.communicate(timeout=120)
    out, _ = reader.communicate(timeout=120)
    assert out.strip() == "NEW" and pair_state(tmp_path) == {"a.onnx": "NEW", "a.json": "NEW"}


def test_leftovers_of_a_dead_writer_are_removed_by_the_next(tmp_path):
    writer = start_writer(tmp_path, "AAA", signal_at="half-committed:SIGKILL")
    writer.communicate(timeout=120)
    assert Tree.of(tmp_path).hidden()  # its journal
    second = start_writer(tmp_path, "BBB")
    second.communicate(timeout=120)
    assert second.returncode == 0 and pair_state(tmp_path) == {"a.onnx": "BBB", "a.json": "BBB"}
    assert Tree.of(tmp_path).hidden() == []


FOLDER_WRITER = """
import sys
from segdeploy.files.atomic import write_folder_atomic
write_folder_atomic(sys.argv[1], {"1/model.onnx": sys.argv[2].encode() * 100, "config.pbtxt": sys.argv[2].encode()},
                    force=True, stage_in=sys.argv[3] if len(sys.argv) > 3 else None)
"""


def _write_folder(target, tag, stage_in=None, signal_at=None):
    extra = {"SEGDEPLOY_TEST_SIGNAL_AT": signal_at} if signal_at else {}
    argv = [sys.executable, "-c", FOLDER_WRITER, str(target), tag] + ([str(stage_in)] if stage_in else [])
    return subprocess.run(argv, env=cli_env(**extra), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("staged", ["beside", "outside"])
@pytest.mark.parametrize("point", [p for p in TEST_POINTS if p != "half-committed"])  # one rename: no half
def test_a_killed_folder_writer_leaves_the_old_folder_or_the_new(tmp_path, point, staged):
    """Triton model folders and build bundles: replaced whole, or not at all, and never missing in between (the
    old folder and the new one are swapped in one step). Staged outside (as Triton models are: beside the
    repository), the folder holding the target never sees anything but the target."""
    repo = tmp_path / "repo"
    target = repo / "model"
    (target / "1").mkdir(parents=True)
    (target / "config.pbtxt").write_text("OLD")
    (target / "1" / "model.onnx").write_text("OLD")
    stage_in = tmp_path if staged == "outside" else None
    done = _write_folder(target, "NEW", stage_in, signal_at=f"{point}:SIGKILL")
    assert done.returncode != 0
    expected = "NEW" if point == "committed" else "OLD"
    assert (target / "config.pbtxt").read_text() == expected
    assert (target / "1" / "model.onnx").read_text()[:3] == expected
    if staged == "outside":
        assert sorted(os.listdir(repo)) == ["model"]
    done = _write_folder(target, "BBB", stage_in)
    assert done.returncode == 0, done.stderr
    assert (target / "config.pbtxt").read_text() == "BBB"
    assert Tree.of(tmp_path).hidden() == []  # the next writer removed what the killed one left


# ---------------------------------------------------------------------------------------------------------------
# Real exports (slow: each runs the exporter)

EXPORT = ("export", "--model", "segnext_t", "--size", "256", "--no-validate", "--output")


def _export(folder, *extra, signal_at=None, checkpoint=None):
    env = cli_env(**({"SEGDEPLOY_TEST_SIGNAL_AT": signal_at} if signal_at else {}))
    argv = [sys.executable, "-m", "segdeploy", *EXPORT, str(folder / "a.onnx"), *extra]
    if checkpoint:
        argv += ["--checkpoint", str(checkpoint)]
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)


def _weights_of(folder):
    from segdeploy.artifact import read_manifest

    manifest = read_manifest(folder / "a.onnx")  # refuses a pair whose sidecar and embedded copy disagree
    return manifest.weights.source


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory):
    import torch

    from segdeploy import models

    model = models.create("segnext_t")
    models.load_recipe_weights(model, seed=1)
    path = tmp_path_factory.mktemp("ckpt") / "seed1.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("force", [False, True], ids=["no-force", "force"])
def test_two_exports_to_one_path(tmp_path, other_checkpoint, force):
    """The issue's reproduction: two exports to a.onnx, one from a checkpoint, the first paused in its commit."""
    extra = ("--force",) if force else ()
    first = _export(tmp_path, *extra, signal_at="journaled:SIGSTOP", checkpoint=other_checkpoint)
    wait_stopped(first, timeout=600)
    second = _export(tmp_path, *extra)
    with pytest.raises(subprocess.TimeoutExpired):
        second.wait(timeout=5.0)  # it finished exporting, and waits for the folder's lock
    resume(first)
    _, first_err = first.communicate(timeout=600)
    _, second_err = second.communicate(timeout=600)
    assert first.returncode == 0, first_err
    if force:
        assert second.returncode == 0, second_err
        assert _weights_of(tmp_path) == "recipe"  # the second writer's pair, whole
    else:
        assert second.returncode == 2 and len(answer_lines(second_err)) == 1 and "exists" in second_err
        assert _weights_of(tmp_path) == "checkpoint"  # the first writer's pair, untouched
    assert Tree.of(tmp_path).names() == ["a.json", "a.onnx"]


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, word", [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")])
def test_an_export_stopped_mid_commit_leaves_nothing(tmp_path, sig, code, word):
    process = _export(tmp_path, signal_at=f"half-committed:{sig}")
    _, err = process.communicate(timeout=600)
    assert process.returncode == code and answer_lines(err) == [f"segdeploy export: {word}"], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_export_killed_mid_commit_is_refused_by_readers_and_rolled_back_by_the_next_export(tmp_path, capfd):
    from hostile import run_cli

    process = _export(tmp_path, signal_at="half-committed:SIGKILL")
    process.communicate(timeout=600)
    assert process.returncode == -signal.SIGKILL
    assert (tmp_path / "a.onnx").exists() and not (tmp_path / "a.json").exists()  # half a unit, for now
    before = Tree.of(tmp_path)
    run_cli(capfd, "info", tmp_path / "a.onnx").refused("half written")
    assert Tree.of(tmp_path) == before  # a reader changes nothing
    process = _export(tmp_path)  # no --force: what the dead export made is not "existing"
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    assert Tree.of(tmp_path).names() == ["a.json", "a.onnx"]


@pytest.mark.slow
def test_an_export_killed_while_tracing_leaves_nothing(tmp_path):
    process = _export(tmp_path)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:  # until it has imported torch and started
        try:
            with open(f"/proc/{process.pid}/status") as f:
                rss_kb = int(next(line for line in f if line.startswith("VmRSS")).split()[1])
        except (OSError, StopIteration, ValueError):
            rss_kb = 0
        if rss_kb > 400_000:
            break
        time.sleep(0.1)
    process.kill()
    process.communicate(timeout=60)
    assert list(tmp_path.iterdir()) == []

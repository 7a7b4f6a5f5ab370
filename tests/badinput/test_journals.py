"""Commit journals nobody vouches for: a hidden ``.<name>.unit`` planted in a folder (by another user of a shared
folder, in an archive of artifacts) must make no reader delete, move or create anything, and no writer act on more
than what it can prove its own dead predecessor made. Hypothesis fuzzes the journals (their JSON, their entries,
the identities they claim) against readers and writers of the folder."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile import PHOTO, Tree, assert_unchanged, copy_artifact, run_cli
from segdeploy.errors import ArtifactError
from segdeploy.files.atomic import write_files_atomic
from segdeploy.files.journal import wait_for_writers

# the journal of the reproduction, verbatim
PLANTED = {"entries": [{"name": "thesis.txt", "backup": None}, {"name": "photos", "backup": None}]}


def _share(folder: Path) -> Path:
    share = folder / "share"
    (share / "photos").mkdir(parents=True)
    (share / "photos" / "holiday.jpg").write_bytes(PHOTO.read_bytes())
    (share / "thesis.txt").write_text("four years of work\n")
    return share


def _identity(path: Path) -> list[int]:
    st = os.lstat(path)
    return [st.st_dev, st.st_ino]


READERS = {
    "info": lambda a: ("info", a),
    "info --json": lambda a: ("info", a, "--json", "-"),
    "validate": lambda a: ("validate", a, "--n", "1"),
    "predict": lambda a: ("predict", "--artifact", a, "--source", PHOTO, "--backend", "onnxruntime"),
}


@pytest.mark.parametrize("journal", [".x.unit", ".m.onnx.unit", ".m.engine.unit", ".m.json.unit"])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_planted_journal_deletes_nothing(artifact, workdir, capfd, reader, journal):
    """The issue's reproduction: a read-only command used to roll back any journal in the artifact's folder and
    delete what it named (a thesis, a folder of photos)."""
    share = _share(workdir)
    target = copy_artifact(artifact, share, "m")
    (share / journal).write_text(json.dumps(PLANTED))
    before = Tree.of(share)
    outcome = run_cli(capfd, *READERS[reader](target))
    outcome.succeeded()
    assert_unchanged(before, share)


def test_a_planted_journal_deletes_nothing_beside_an_engine(workdir, capfd):
    share = _share(workdir)
    (share / "m.engine").write_bytes(b"ftrt" + bytes(64))  # a bare plan, as info describes it
    (share / ".x.unit").write_text(json.dumps(PLANTED))
    before = Tree.of(share)
    run_cli(capfd, "info", share / "m.engine")
    assert_unchanged(before, share)


def test_a_planted_journal_knowing_the_identities_still_deletes_nothing(artifact, workdir, capfd):
    """Even a journal in the new format that names the very files (their device and inode) is no reader's to act
    on, and no writer's whose own files it does not name."""
    share = _share(workdir)
    target = copy_artifact(artifact, share, "m")
    entries = [{"name": "m.onnx", "made": [0, 0], "backup": None, "kept": None},
               {"name": "thesis.txt", "made": _identity(share / "thesis.txt"), "backup": None, "kept": None},
               {"name": "photos", "made": _identity(share / "photos"), "backup": None, "kept": None}]
    time.sleep(0.05)  # planted after the files were made (a real unit links its files after its journal)
    (share / ".m.onnx.unit").write_text(json.dumps({"pid": 1, "entries": entries}))
    before = Tree.of(share)
    run_cli(capfd, "info", target).succeeded()
    assert_unchanged(before, share)
    # a writer of m.onnx and m.json: the journal names other files too, so it is not that writer's unit
    write_files_atomic([(share / "m.onnx", b"new graph"), (share / "m.json", b"{}")], force=True)
    assert (share / "thesis.txt").read_text() == "four years of work\n"
    assert (share / "photos" / "holiday.jpg").read_bytes() == PHOTO.read_bytes()


def test_a_planted_backup_never_replaces_an_artifact(artifact, workdir, capfd):
    """A journal claiming m.onnx was being replaced, and a planted 'backup' holding another graph: readers read the
    artifact as it is; the next writer does not 'restore' the planted file over anything."""
    share = _share(workdir)
    target = copy_artifact(artifact, share, "m")
    original = target.read_bytes()
    backup = ".m.onnx.0123456789ab.old.tmp"
    (share / backup).write_bytes(b"another graph")
    for entry in ({"name": "m.onnx", "backup": backup},  # the old format
                  {"name": "m.onnx", "made": _identity(target), "backup": backup, "kept": [1, 2]}):
        (share / ".m.onnx.unit").write_text(json.dumps({"entries": [entry]}))
        before = Tree.of(share)
        run_cli(capfd, "info", target).succeeded()
        assert_unchanged(before, share)
    assert target.read_bytes() == original


def test_readers_refuse_half_a_unit_without_touching_it(tmp_path):
    """A real dead writer's half-committed pair: readers say so in one line and leave it to the next writer."""
    from hostile import start_writer

    writer = start_writer(tmp_path, "NEW", signal_at="half-committed:SIGKILL")
    writer.communicate(timeout=120)
    before = Tree.of(tmp_path)
    for name in ("a.onnx", "a.json"):
        with pytest.raises(ArtifactError, match="half written"):
            wait_for_writers(tmp_path / name)
    assert_unchanged(before, tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# Fuzzing: planted journals against a reader and a writer of the folder

USER_FILES = {"thesis.txt": b"thesis", "photos/a.jpg": b"jpeg", "notes.md": b"notes",
              ".a.onnx.unit.txt": b"a hidden file of the user's"}
NAMES = ["a.onnx", "a.json", "thesis.txt", "photos", "notes.md", "../outside.txt", "/etc/passwd", "photos/a.jpg",
         ".", "..", "", ".a.onnx.0123456789ab.old.tmp", ".thesis.txt.0123456789ab.old.tmp"]


@st.composite
def journals(draw, identities: list):
    def identity():
        return draw(st.one_of(st.sampled_from(identities), st.lists(st.integers(0, 2**40), min_size=2, max_size=2),
                              st.none(), st.text(max_size=3)))

    entry = st.fixed_dictionaries({"name": st.one_of(st.sampled_from(NAMES), st.text(max_size=8))},
                                  optional={"made": st.builds(identity), "backup": st.one_of(
                                      st.none(), st.sampled_from(NAMES)), "kept": st.builds(identity)})
    document = {"pid": 1, "entries": draw(st.lists(entry, max_size=4))}
    raw = json.dumps(document).encode()
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=8))
    return draw(st.sampled_from([".a.onnx.unit", ".a.json.unit", ".thesis.txt.unit", ".x.unit"])), raw


def _plant(folder: Path) -> list:
    for rel, data in USER_FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    (folder / ".thesis.txt.0123456789ab.old.tmp").write_bytes(b"planted backup")
    return [_identity(folder / rel) for rel in USER_FILES] + [_identity(folder / "photos")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_journals(tmp_path, data):
    folder = tmp_path / "f"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    identities = _plant(folder)
    name, raw = data.draw(journals(identities))
    (folder / name).write_bytes(raw)
    before = Tree.of(folder)
    for reader in ("a.onnx", "thesis.txt"):
        try:
            wait_for_writers(folder / reader)
        except ArtifactError:
            pass
    assert_unchanged(before, folder)  # readers never write
    write_files_atomic([(folder / "a.onnx", b"graph"), (folder / "a.json", b"{}")], force=data.draw(st.booleans()))
    for rel, content in USER_FILES.items():  # nothing the writer does not write is touched
        assert (folder / rel).read_bytes() == content, rel
    assert (folder / "a.onnx").read_bytes() == b"graph" and (folder / "a.json").read_bytes() == b"{}"
    assert not (tmp_path / "outside.txt").exists()

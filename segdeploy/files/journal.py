"""The journal of a unit of files being committed, and the recovery of a unit whose writer died.

Committing a unit of several files is not one system call, so it is journaled: the writer first records, in a
hidden ``.<first file>.unit`` journal, which files it is about to put in place, the identity (device, inode) of
each new file, and where it keeps the files they replace (hard links, ``.<name>.<random>.old.tmp``, with their
identity), then links or renames its files into place, then deletes the journal (the commit point) and the old
copies. A journal that is still there belongs to a writer that died in the middle (SIGKILL, power loss).

Recovery belongs to writers, never to readers: a reader never deletes, moves or creates anything. A reader that
finds a journal naming its file waits for a live writer (a shared lock on the folder), and refuses the file only
when the dead writer's unit is provably half in place. The next writer of one of the journal's files rolls the unit
back under the folder's lock, and only what it can prove the dead writer made or kept: a journal written by this
user, naming files of the writer's own unit inside its folder, a file removed only when it is the very file the
journal recorded (same device and inode), a backup restored only when it is the very file that was kept. A
journal planted in a shared folder (naming a thesis, a photo folder, a swapped graph) is never acted on.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat

from segdeploy.errors import ArtifactError
from segdeploy.files.locking import folder_lock, interrupt_point, is_same_file, remove_path, sync_folder
from segdeploy.files.staging import Pending

JOURNAL_SUFFIX = ".unit"

_MAX_JOURNAL_BYTES = 1 << 16


def _journal_path(folder: str, first: str) -> str:
    return os.path.join(folder, f".{unit_tag(first)}{JOURNAL_SUFFIX}")


def unit_tag(rel: str) -> str:
    """The name a unit's hidden files carry for the (relative) target ``rel``: "a.onnx", "triton.segnext_t"."""
    return rel.replace("/", ".")


def plain_name(name) -> bool:
    return isinstance(name, str) and bool(name) and os.sep not in name and name not in (".", "..") and \
        (os.altsep is None or os.altsep not in name) and "\x00" not in name


def relative_name(name) -> bool:
    return isinstance(name, str) and 0 < name.count("/") + 1 <= 2 and all(plain_name(p) for p in name.split("/"))


def _is_identity(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(type(v) is int and v >= 0 for v in value)


def _read_journal(path: str) -> list[dict] | None:
    """The entries of a journal this user's writer could have written, or None for anything else (unreadable, not
    this user's, malformed, naming anything but files of its own folder and backups named as segdeploy names them).
    Nothing a journal says is used unless all of it is well-formed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_size > _MAX_JOURNAL_BYTES:
            return None
        raw = os.read(fd, _MAX_JOURNAL_BYTES + 1)
        since = st.st_mtime_ns
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        entries = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)["entries"]
    except (ValueError, KeyError, TypeError, RecursionError, UnicodeDecodeError):
        return None  # its writer died writing it, before committing anything (or it is not a journal)
    if not isinstance(entries, list) or not entries:
        return None
    for entry in entries:
        if not isinstance(entry, dict) or not relative_name(entry.get("name")) or \
                not _is_identity(entry.get("made")):
            return None
        backup, kept = entry.get("backup"), entry.get("kept")
        if backup is None and kept is None:
            continue
        if not (isinstance(backup, str) and _is_identity(kept) and
                re.fullmatch(re.escape(f".{unit_tag(entry['name'])}") + r"\.[0-9a-f]{12}(?:\.old)?\.tmp", backup)):
            return None
    if os.path.basename(path) != f".{unit_tag(entries[0]['name'])}{JOURNAL_SUFFIX}":
        return None  # a journal is named after the first file of its unit
    return [dict(e, since=since) for e in entries]


def _no_constant(name: str):
    raise ValueError(name)


def _journals(folder: str) -> list[str]:
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if n.startswith(".") and n.endswith(JOURNAL_SUFFIX)]


def write_journal(folder: str, first: str, entries: list[dict]) -> str:
    path = _journal_path(folder, first)
    item = Pending(path, folder)
    try:
        item.write(json.dumps({"pid": os.getpid(), "entries": entries}).encode("utf-8"))
        item.commit()
    finally:
        item.discard()
    sync_folder(folder)
    return path


def roll_back(folder: str, entries: list[dict]) -> None:
    """Undo a unit: remove what it provably put in place, restore what it provably kept aside. Anything a journal
    names that is not the very file it recorded is left as it is."""
    for entry in reversed(entries):
        target = os.path.join(folder, *entry["name"].split("/"))
        since = entry.get("since", 0)
        if is_same_file(target, entry["made"], since):
            remove_path(target)
        backup = entry.get("backup")
        if not backup:
            continue
        backup = os.path.join(folder, backup)
        if not is_same_file(backup, entry["kept"], since):
            continue  # never made, or not what the journal recorded: not ours to move
        if is_same_file(target, entry["kept"]):
            os.unlink(backup)  # a hard link to the file still in place (rename() would keep both names)
        elif not os.path.lexists(target):
            os.replace(backup, target)
    sync_folder(folder)


def recover(folder: str, names: list[str]) -> None:
    """Roll back the units of ``folder`` whose writer died mid-commit and that were units of this writer's files
    (every name they journal is one of ``names``, relative to ``folder``), as far as their journals prove (the
    caller holds the folder's lock); then delete those journals. A journal naming anything else is not this
    writer's to act on."""
    for journal in _journals(folder):
        entries = _read_journal(journal)
        if entries is None or not {e["name"] for e in entries} <= set(names):
            continue
        roll_back(folder, entries)
        os.unlink(journal)
        sync_folder(folder)


def _unit_state(folder: str, entries: list[dict]) -> tuple[list[str], list[str]]:
    """(names in place from the dead unit, names still as before it) of a unit whose journal is still there."""
    new, old = [], []
    for entry in entries:
        target = os.path.join(folder, *entry["name"].split("/"))
        (new if is_same_file(target, entry["made"], entry["since"]) else old).append(entry["name"])
    return new, old


def _naming(folder: str, name: str) -> list[list[dict]]:
    """The well-formed journals of ``folder`` whose unit names ``name`` (relative to ``folder``)."""
    found = []
    for journal in _journals(folder):
        entries = _read_journal(journal)
        if entries is not None and name in {e["name"] for e in entries}:
            found.append(entries)
    return found


def uncommitted_made(path: str, work: str | None = None) -> bool:
    """True when ``path`` is what a writer's unit (live or dead) put in place before its commit point, as its journal
    (in ``work``, default ``path``'s folder) proves: a live writer may yet roll it back, a dead one's is the next
    writer's to remove, so whether it exists is decided under the folder's lock. Reads only."""
    path = os.path.abspath(path)
    work = work or os.path.dirname(path)
    rel = os.path.relpath(path, work)
    return any(any(e["name"] == rel and is_same_file(path, e["made"], e["since"]) for e in entries)
               for entries in _naming(work, rel))


def dead_unit_made(path: str, work: str | None = None) -> bool:
    """True when ``path`` is what a dead writer's unit put in place without committing it: the next writer removes
    it, so it does not count as existing. Reads only."""
    work = work or os.path.dirname(os.path.abspath(path))
    return uncommitted_made(path, work) and _no_live_writer(work)


def _no_live_writer(folder: str) -> bool:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def finish_unit(folder: str, journal: str, entries: list[dict]) -> None:
    sync_folder(folder)
    os.unlink(journal)  # the commit point
    sync_folder(folder)
    interrupt_point("committed")
    for entry in entries:
        if entry.get("backup"):
            remove_path(os.path.join(folder, entry["backup"]))


def wait_for_writers(path: str | os.PathLike) -> None:
    """Before reading ``path``: wait for a live writer of its folder that is committing a unit naming it, and refuse
    it, with one line, when a writer died with the unit half in place (its new files beside the old ones). Never
    changes anything on disk: the next writer of the file rolls such a unit back."""
    path = os.fspath(path)
    folder, name = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    if not _naming(folder, name):
        return
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(OSError):  # a folder this user cannot open: nothing to wait for
            stack.enter_context(folder_lock(folder, shared=True))  # a live writer holds it until its commit ends
        for entries in _naming(folder, name):
            new, old = _unit_state(folder, entries)
            if new and old:
                raise ArtifactError(f"{path} is half written: a writer of {', '.join(sorted(new + old))} was killed "
                                    "in the middle of its commit; write it again (the next write rolls the unit "
                                    "back)")


def keep_aside(path: str, backup: str) -> None:
    """Keep the file at ``path`` as ``backup``: a hard link, so readers keep seeing ``path`` until the new file
    replaces it; a rename where the file system has no hard links."""
    try:
        os.link(path, backup, follow_symlinks=False)
    except OSError:
        os.rename(path, backup)

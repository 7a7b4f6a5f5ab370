"""Atomic writes: a file, a set of files that belong together (an artifact and its manifest), or a folder (a Triton
model, a build bundle) appears whole or not at all, and nothing that exists is replaced without ``force``.

How: the destination is checked before any long work (``check_destination``); writers of one folder take an
exclusive lock on the folder itself (flock on its descriptor: no lock files to leak), then, under the lock, check
again that nothing exists that they may not replace and write every file to a temp file (fsynced). Temp files are
unnamed (O_TMPFILE) where the file system allows, so a writer killed with SIGKILL before its commit leaves nothing
behind; elsewhere a named ``.<name>.<random>.tmp`` is used and the next writer of that name removes such leftovers
(it holds the folder's lock, so they cannot belong to a live writer).

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
journal planted in a shared folder (naming a thesis, a photo folder, a swapped graph) is never acted on. So two
concurrent exports to one path cannot interleave (without ``--force`` the second stops without touching the
first's files; with it, the pair on disk is one writer's or the other's, never a mix), and a killed writer leaves
the old unit or nothing, never half of the new one that any reader would use.

Tests interrupt writers at named points of this sequence: ``SEGDEPLOY_TEST_SIGNAL_AT=<point>:<SIGNAL>`` makes a
writer send itself SIGNAL there (``TEST_POINTS``); it is read in ``_test_point`` only and does nothing when unset.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import stat

from segdeploy.errors import ArtifactError

TEST_SIGNAL_ENV = "SEGDEPLOY_TEST_SIGNAL_AT"
# locked: the folder lock is held; written: the temp files are complete; journaled: the journal is on disk and the
# old files are kept aside; half-committed: the first file of a unit is in place, the others not yet; committed:
# the journal is gone (the unit is in place)
TEST_POINTS = ("locked", "written", "journaled", "half-committed", "committed")
JOURNAL_SUFFIX = ".unit"


def _test_point(name: str) -> None:
    spec = os.environ.get(TEST_SIGNAL_ENV)
    if spec:
        point, _, sig = spec.partition(":")
        if point == name:
            os.kill(os.getpid(), getattr(signal, sig or "SIGSTOP"))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _first_existing(path: str) -> str:
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_destination(path: str | os.PathLike, force: bool = False, what: str = "output",
                      need_bytes: int | None = None) -> str:
    """Fail now, with one line, if ``path`` cannot be written later: it is a folder or a device, it exists and
    ``force`` is not set, a parent is a file, the folder it goes into cannot be written, or (given ``need_bytes``)
    its file system has less room than that. Creates nothing."""
    path = os.fspath(path)
    if not path:
        raise ArtifactError(f"the {what} path is empty")
    if os.path.isdir(path):
        raise ArtifactError(f"{path} is a folder; give a file name for the {what}")
    if os.path.lexists(path):
        mode = os.lstat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise ArtifactError(f"{path} is not a regular file (a device, pipe or socket); segdeploy replaces files "
                                "only (use '-' for stdout where a command offers it)")
        if not force and not _uncommitted_made(path):  # a unit's uncommitted file: decided under the lock
            raise ArtifactError(f"{path} exists; pass --force to overwrite it")
    parent = os.path.dirname(os.path.abspath(path))
    existing = _first_existing(parent)
    if not os.path.isdir(existing):
        raise ArtifactError(f"cannot write {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ArtifactError(f"cannot write {path}: no permission to write in {existing}")
    if _read_only_fs(existing):
        raise ArtifactError(f"cannot write {path}: {existing} is on a read-only file system")
    if need_bytes:
        free = free_bytes(existing)
        if free is not None and free < need_bytes:
            raise ArtifactError(f"cannot write {path}: it needs about {need_bytes / 2**20:.0f} MiB and its file "
                                f"system has {free / 2**20:.0f} MiB free")
    return path


def check_writable(path: str | os.PathLike, force: bool) -> str:  # the name export and commands used so far
    return check_destination(path, force)


def free_bytes(path: str) -> int | None:
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def _read_only_fs(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def make_parents(folder: str) -> list[str]:
    """Create ``folder`` and its missing parents; return the ones created, deepest first, for ``remove_made``."""
    made = []
    while not os.path.isdir(folder):
        made.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for f in reversed(made):
        try:
            os.mkdir(f)
        except FileExistsError:  # a concurrent writer made it: not ours to remove
            made.remove(f)
    return made


def remove_made(made: list[str]) -> None:
    """Remove the folders ``make_parents`` created, where they are still empty (a failed write leaves none)."""
    for f in made:
        with contextlib.suppress(OSError):
            os.rmdir(f)


_make_parents = make_parents


@contextlib.contextmanager
def folder_lock(folder: str, shared: bool = False):
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def _sync_folder(folder: str) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino]


def _is(path: str, identity, since: int = 0) -> bool:
    """True when ``path`` is the very file (or folder) ``identity`` ([device, inode]) recorded, not a symlink, and
    was linked or renamed there no earlier than ``since`` (ns): a journal is written before its unit touches any
    name, so a file whose inode has not changed since is not one the unit put anywhere."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return not stat.S_ISLNK(st.st_mode) and _identity(st) == list(identity) and st.st_ctime_ns >= since


class _Pending:
    """One file being written: an unnamed temp file where the file system has them, a named one otherwise."""

    def __init__(self, path: str, folder: str):
        self.path, self.folder, self.fd, self.named = path, folder, None, None
        try:
            self.fd = os.open(folder, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o666 & ~_current_umask())
        except (OSError, AttributeError):
            self.fd, self.named = _create_temp(path, folder)

    @property
    def identity(self) -> list[int]:
        return _identity(os.fstat(self.fd))

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        os.fsync(self.fd)
        if self.named:
            # a private temp file (0600); an artifact gets the permissions any new file would get
            os.chmod(self.named, 0o666 & ~_current_umask())

    def commit(self) -> None:
        if self.named is None:
            if not os.path.lexists(self.path):
                self._link(self.path)  # appears whole, at once
                return
            _, name = _temp_name(self.path, self.folder)
            self._link(name)
            self.named = name
        os.replace(self.named, self.path)
        self.named = None

    def _link(self, path: str) -> None:
        # linkat(..., AT_SYMLINK_FOLLOW) through /proc gives the unnamed file a name; CPython passes that flag only
        # when a dir_fd is given (plain link() would try to link the /proc symlink itself and fail with EXDEV)
        folder_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.link(f"/proc/self/fd/{self.fd}", os.path.basename(path), dst_dir_fd=folder_fd, follow_symlinks=True)
        finally:
            os.close(folder_fd)

    def discard(self) -> None:
        if self.named and os.path.lexists(self.named):
            with contextlib.suppress(OSError):
                os.unlink(self.named)
        self.named = None
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def _temp_name(path: str, folder: str, kind: str = "") -> tuple[str, str]:
    prefix = f".{os.path.basename(path)}."
    return prefix, os.path.join(folder, prefix + os.urandom(6).hex() + kind + ".tmp")


def _create_temp(path: str, folder: str) -> tuple[int, str]:
    while True:
        _, name = _temp_name(path, folder)
        try:
            return os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), name
        except FileExistsError:
            continue


# The temp names segdeploy makes: ".<name>.<12 hex>[.old|.plan].tmp[.<suffix>]" (and tempfile's 8 characters, which
# the TensorRT builder's bare plans use); nothing else in a folder is ever taken for a leftover.
_LEFTOVER = r"\.(?:[0-9a-f]{12}|[a-z0-9_]{8})(?:\.old|\.plan)?\.tmp(?:\.[A-Za-z0-9]{1,8})?"


def _is_leftover(name: str, prefix: str) -> bool:
    return name.startswith(prefix) and re.fullmatch(re.escape(prefix[:-1]) + _LEFTOVER, name) is not None


def _remove_leftovers(path: str, folder: str) -> None:
    """Remove the temp files and folders dead writers of ``path`` left (the caller holds the folder's lock): only
    names segdeploy makes, and only this user's."""
    prefix = f".{os.path.basename(path)}."
    for name in os.listdir(folder):
        if _is_leftover(name, prefix) and _owned(os.path.join(folder, name)):
            _remove_path(os.path.join(folder, name))


def _owned(path: str) -> bool:
    try:
        return os.lstat(path).st_uid == os.geteuid()
    except OSError:
        return False


def _remove_path(path: str) -> None:
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


# ----------------------------------------------------------------------------------------------------------------
# The commit journal (see the module docstring)
#
# {"pid": ..., "entries": [{"name": N, "made": [dev, ino], "backup": B | null, "kept": [dev, ino] | null}, ...]}
# N: the file (or folder) the unit puts in place, relative to the journal's folder (a name, or "<folder>/<name>" for
# a folder staged outside its parent, as Triton models are); made: the identity of what the unit puts there;
# B: where it keeps the file N held before (".<N's name>.<12 hex>.old.tmp" beside the journal); kept: that file's
# identity.

_MAX_JOURNAL_BYTES = 1 << 16


def _journal_path(folder: str, first: str) -> str:
    return os.path.join(folder, f".{_tag(first)}{JOURNAL_SUFFIX}")


def _tag(rel: str) -> str:
    """The name a unit's hidden files carry for the (relative) target ``rel``: "a.onnx", "triton.segnext_t"."""
    return rel.replace("/", ".")


def _plain_name(name) -> bool:
    return isinstance(name, str) and bool(name) and os.sep not in name and name not in (".", "..") and \
        (os.altsep is None or os.altsep not in name) and "\x00" not in name


def _relative_name(name) -> bool:
    return isinstance(name, str) and 0 < name.count("/") + 1 <= 2 and all(_plain_name(p) for p in name.split("/"))


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
        if not isinstance(entry, dict) or not _relative_name(entry.get("name")) or \
                not _is_identity(entry.get("made")):
            return None
        backup, kept = entry.get("backup"), entry.get("kept")
        if backup is None and kept is None:
            continue
        if not (isinstance(backup, str) and _is_identity(kept) and
                re.fullmatch(re.escape(f".{_tag(entry['name'])}") + r"\.[0-9a-f]{12}(?:\.old)?\.tmp", backup)):
            return None
    if os.path.basename(path) != f".{_tag(entries[0]['name'])}{JOURNAL_SUFFIX}":
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


def _write_journal(folder: str, first: str, entries: list[dict]) -> str:
    path = _journal_path(folder, first)
    item = _Pending(path, folder)
    try:
        item.write(json.dumps({"pid": os.getpid(), "entries": entries}).encode("utf-8"))
        item.commit()
    finally:
        item.discard()
    _sync_folder(folder)
    return path


def _roll_back(folder: str, entries: list[dict]) -> None:
    """Undo a unit: remove what it provably put in place, restore what it provably kept aside. Anything a journal
    names that is not the very file it recorded is left as it is."""
    for entry in reversed(entries):
        target = os.path.join(folder, *entry["name"].split("/"))
        since = entry.get("since", 0)
        if _is(target, entry["made"], since):
            _remove_path(target)
        backup = entry.get("backup")
        if not backup:
            continue
        backup = os.path.join(folder, backup)
        if not _is(backup, entry["kept"], since):
            continue  # never made, or not what the journal recorded: not ours to move
        if _is(target, entry["kept"]):
            os.unlink(backup)  # a hard link to the file still in place (rename() would keep both names)
        elif not os.path.lexists(target):
            os.replace(backup, target)
    _sync_folder(folder)


def _recover(folder: str, names: list[str]) -> None:
    """Roll back the units of ``folder`` whose writer died mid-commit and that were units of this writer's files
    (every name they journal is one of ``names``, relative to ``folder``), as far as their journals prove (the
    caller holds the folder's lock); then delete those journals. A journal naming anything else is not this
    writer's to act on."""
    for journal in _journals(folder):
        entries = _read_journal(journal)
        if entries is None or not {e["name"] for e in entries} <= set(names):
            continue
        _roll_back(folder, entries)
        os.unlink(journal)
        _sync_folder(folder)


def _unit_state(folder: str, entries: list[dict]) -> tuple[list[str], list[str]]:
    """(names in place from the dead unit, names still as before it) of a unit whose journal is still there."""
    new, old = [], []
    for entry in entries:
        target = os.path.join(folder, *entry["name"].split("/"))
        (new if _is(target, entry["made"], entry["since"]) else old).append(entry["name"])
    return new, old


def _naming(folder: str, name: str) -> list[list[dict]]:
    """The well-formed journals of ``folder`` whose unit names ``name`` (relative to ``folder``)."""
    found = []
    for journal in _journals(folder):
        entries = _read_journal(journal)
        if entries is not None and name in {e["name"] for e in entries}:
            found.append(entries)
    return found


def _uncommitted_made(path: str) -> bool:
    """True when ``path`` is what a writer's unit (live or dead) put in place before its commit point, as its journal
    proves: a live writer may yet roll it back, a dead one's is the next writer's to remove, so whether it exists is
    decided under the folder's lock. Reads only."""
    path = os.path.abspath(path)
    work = os.path.dirname(path)
    rel = os.path.relpath(path, work)
    return any(any(e["name"] == rel and _is(path, e["made"], e["since"]) for e in entries)
               for entries in _naming(work, rel))


def _dead_unit_made(path: str, work: str | None = None) -> bool:
    """True when ``path`` is what a dead writer's unit put in place without committing it, as its journal (in
    ``work``, default ``path``'s folder) proves: the next writer removes it, so it does not count as existing. Reads
    only."""
    path = os.path.abspath(path)
    work = work or os.path.dirname(path)
    rel = os.path.relpath(path, work)
    for entries in _naming(work, rel):
        if any(e["name"] == rel and _is(path, e["made"], e["since"]) for e in entries) and _no_live_writer(work):
            return True
    return False


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


def _finish(folder: str, journal: str, entries: list[dict]) -> None:
    _sync_folder(folder)
    os.unlink(journal)  # the commit point
    _sync_folder(folder)
    _test_point("committed")
    for entry in entries:
        if entry.get("backup"):
            _remove_path(os.path.join(folder, entry["backup"]))


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


def _keep_aside(path: str, backup: str) -> None:
    """Keep the file at ``path`` as ``backup``: a hard link, so readers keep seeing ``path`` until the new file
    replaces it; a rename where the file system has no hard links."""
    try:
        os.link(path, backup, follow_symlinks=False)
    except OSError:
        os.rename(path, backup)


# ----------------------------------------------------------------------------------------------------------------
# Writers


def write_files_atomic(files: list[tuple[str | os.PathLike, bytes]], force: bool = False) -> list[str]:
    """Write several files of one folder as a unit (see the module docstring); returns their paths."""
    paths = [os.fspath(p) for p, _ in files]
    for path in paths:
        check_destination(path, force)
    folders = {os.path.dirname(os.path.abspath(p)) for p in paths}
    if len(folders) != 1:
        raise ValueError("files written as one unit must share a folder")
    folder = folders.pop()
    made: list[str] = []
    try:
        made = make_parents(folder)
        with folder_lock(folder):
            _test_point("locked")
            _commit_files(folder, paths, [data for _, data in files], force)
    except BaseException as exc:
        remove_made(made)
        if isinstance(exc, OSError):
            raise ArtifactError(f"cannot write {paths[0]}: {_os_reason(exc)}") from None
        raise
    return paths


def _commit_files(folder: str, paths: list[str], contents: list[bytes], force: bool) -> None:
    _recover(folder, [os.path.basename(p) for p in paths])
    for path in paths:  # again, under the lock: another writer may have finished meanwhile
        if os.path.lexists(path) and not force:
            raise ArtifactError(f"{path} exists (written meanwhile by another process); pass --force to overwrite it")
        _remove_leftovers(path, folder)
    pending: list[_Pending] = []
    entries = None
    journal = None
    try:
        for path, data in zip(paths, contents):
            item = _Pending(path, folder)
            pending.append(item)
            item.write(data)
        _test_point("written")
        # record what is about to be put in place, and where the files being replaced are kept, before touching any
        entries = []
        for path, item in zip(paths, pending):
            entry = {"name": os.path.basename(path), "made": item.identity, "backup": None, "kept": None}
            if os.path.lexists(path):
                entry["backup"] = os.path.basename(_temp_name(path, folder, ".old")[1])
                entry["kept"] = _identity(os.lstat(path))
            entries.append(entry)
        journal = _write_journal(folder, os.path.basename(paths[0]), entries)
        for entry in entries:
            if entry["backup"]:
                _keep_aside(os.path.join(folder, entry["name"]), os.path.join(folder, entry["backup"]))
        _test_point("journaled")
        for i, item in enumerate(pending):
            item.commit()
            if i == 0 and len(pending) > 1:
                _test_point("half-committed")
        _finish(folder, journal, entries)
        journal = None
    except BaseException:
        if journal is not None and os.path.lexists(journal):
            with contextlib.suppress(OSError):
                _roll_back(folder, entries)  # from what this writer recorded itself, not from the file
                os.unlink(journal)
        raise
    finally:
        for item in pending:
            item.discard()


def folder_holds(folder: str | os.PathLike, files: dict[str, bytes]) -> bool:
    """True when ``folder`` holds exactly ``files`` (the same relative paths with the same bytes, nothing else), so
    writing them again would change nothing: an export that made it reuses it instead of asking for --force."""
    folder = os.path.abspath(os.fspath(folder))
    wait_for_writers(folder)
    if os.path.islink(folder) or not os.path.isdir(folder):
        return False
    found = set()
    for root, dirs, names in os.walk(folder):
        if any(os.path.islink(os.path.join(root, d)) for d in dirs):
            return False
        found.update(os.path.relpath(os.path.join(root, n), folder).replace(os.sep, "/") for n in names)
    if found != set(files):
        return False
    for rel, data in files.items():
        path = os.path.join(folder, *rel.split("/"))
        if os.path.islink(path) or os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as f:
            if f.read() != data:
                return False
    return True


def write_folder_atomic(target: str | os.PathLike, files: dict[str, bytes], force: bool = False,
                        executable: tuple[str, ...] = (), *, stage_in: str | os.PathLike | None = None,
                        keep_others: bool = False) -> str:
    """Write a folder of files (relative paths -> bytes) as a unit: built as a hidden folder, then renamed into
    place under a lock (journaled like a unit of files). An existing ``target`` is replaced only with ``force``, and
    only when it is a folder. Returns the folder's path.

    ``stage_in``: where the hidden folder, the old folder kept aside and the journal live (default: ``target``'s
    parent). A Triton model is staged beside the repository, not in it: Triton loads every folder of a repository.
    It must be on the same file system as ``target``, so the commit is a rename. ``keep_others``: when replacing,
    the new folder keeps every file of the old one that is not in ``files`` (hard links: other version folders and
    the user's files survive a --force), so only what the writer writes is replaced."""
    target = os.path.abspath(os.fspath(target))
    name = os.path.basename(target)
    if not _plain_name(name) or name.startswith("."):
        raise ArtifactError(f"cannot write a folder named {name!r}")
    parent = os.path.dirname(target)
    work = os.path.abspath(os.fspath(stage_in)) if stage_in is not None else parent
    rel = os.path.relpath(target, work)
    if not _relative_name(rel):
        raise ValueError(f"{target} must be in {work} or one folder below it")
    if os.path.lexists(target) and not os.path.isdir(target):
        raise ArtifactError(f"{target} exists and is a file, not a folder; remove it or choose another path")
    if os.path.lexists(target) and not force and not _dead_unit_made(target, work):
        raise ArtifactError(f"{target} exists; pass --force to replace it")
    for path in files:
        parts = path.split("/")
        if not all(_plain_name(p) for p in parts):
            raise ValueError(f"not a relative path inside the folder: {path!r}")
    check_destination(os.path.join(work, f".{_tag(rel)}.probe"), force=True, what="folder")
    if work != parent:
        check_destination(os.path.join(parent, f".{name}.probe"), force=True, what="folder")
    made: list[str] = []
    try:
        made = make_parents(parent)
        if work != parent and os.stat(work).st_dev != os.stat(parent).st_dev:
            raise ArtifactError(f"cannot write {target}: {parent} is another file system than {work}, where it is "
                                "staged (a model repository that is a mount point: write the repository one folder "
                                "below it)")
        with folder_lock(work):
            _test_point("locked")
            _commit_folder(work, rel, files, force, executable, keep_others)
    except BaseException as exc:
        remove_made(made)
        if isinstance(exc, OSError):
            raise ArtifactError(f"cannot write {target}: {_os_reason(exc)}") from None
        raise
    return target


def _link_others(old: str, staging: str, files: dict[str, bytes]) -> None:
    """Hard-link every file of the folder ``old`` that ``files`` does not replace into ``staging``."""
    ours = set(files)
    ours_dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    for root, dirs, names in os.walk(old):
        rel_root = os.path.relpath(root, old)
        rel_root = "" if rel_root == "." else rel_root.replace(os.sep, "/")
        for entry in sorted(dirs) + sorted(names):
            rel = f"{rel_root}/{entry}" if rel_root else entry
            src, dst = os.path.join(root, entry), os.path.join(staging, *rel.split("/"))
            if rel in ours or (rel in ours_dirs and not os.path.isdir(src)) or os.path.lexists(dst):
                continue
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
            elif os.path.isdir(src):
                os.mkdir(dst)
            else:
                try:
                    os.link(src, dst, follow_symlinks=False)
                except OSError as exc:
                    raise ArtifactError(f"cannot keep {src} in the new folder ({_os_reason(exc)}): its file "
                                        "system has no hard links; move it aside and write again") from None
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]


_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the kernel or the file system
    cannot."""
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd = -100
    if function(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), b)


def _commit_folder(work: str, rel: str, files: dict[str, bytes], force: bool, executable,
                   keep_others: bool) -> None:
    target = os.path.join(work, *rel.split("/"))
    tag = _tag(rel)
    _recover(work, [rel])
    if os.path.lexists(target) and not force:
        raise ArtifactError(f"{target} exists (written meanwhile by another process); pass --force to replace it")
    _remove_leftovers(os.path.join(work, tag), work)
    _, staging = _temp_name(tag, work)
    journal = None
    entries = None
    try:
        os.mkdir(staging)
        for path, data in files.items():
            full = os.path.join(staging, *path.split("/"))
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if path in executable:
                os.chmod(full, 0o777 & ~_current_umask())
        if keep_others and os.path.isdir(target):
            _link_others(target, staging, files)
        _test_point("written")
        entry = {"name": rel, "made": _identity(os.lstat(staging)), "backup": None, "kept": None}
        if os.path.lexists(target):
            # the old folder ends where the new one was staged: swapped in one step where the kernel can, so that a
            # reader (a Triton server) never finds the model missing
            entry["backup"], entry["kept"] = os.path.basename(staging), _identity(os.lstat(target))
        entries = [entry]
        journal = _write_journal(work, rel, entries)
        _test_point("journaled")
        if not entry["backup"]:
            os.rename(staging, target)
        elif not _exchange(staging, target):
            _, moved = _temp_name(tag, work)  # each step leaves what the journal proves, or a leftover
            os.rename(staging, moved)
            os.rename(target, staging)
            os.rename(moved, target)
        _finish(work, journal, entries)
        journal = None
    except BaseException:
        if journal is not None and os.path.lexists(journal):
            with contextlib.suppress(OSError):
                _roll_back(work, entries)
                os.unlink(journal)
        raise
    finally:
        if os.path.lexists(staging) and (entries is None or _is(staging, entries[0]["made"])):
            _remove_path(staging)  # what this writer made and did not put in place (never the old folder)


def identities(*paths) -> dict[str, list[int]]:
    """The identity (device, inode) of each of ``paths`` that exists now: what :func:`remove_unchanged` takes."""
    found = {}
    for path in paths:
        with contextlib.suppress(OSError):
            found[os.path.abspath(os.fspath(path))] = _identity(os.lstat(path))
    return found


def remove_unchanged(recorded: dict[str, list[int]]) -> None:
    """Remove the files ``identities`` recorded, each only while it is still that very file (under its folder's
    lock): how a command that fails after writing an intermediate artifact leaves nothing behind, without ever
    removing what another writer has put there since."""
    for path, identity in recorded.items():
        folder = os.path.dirname(path)
        with contextlib.suppress(OSError), folder_lock(folder):
            if _is(path, identity):
                os.unlink(path)
                _sync_folder(folder)


def move_into_place(temp: str, path: str, force: bool = False) -> str:
    """Rename a finished temp file (one a library wrote by name, e.g. a video) onto ``path`` under the folder's lock,
    refusing an existing ``path`` without ``force``."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with folder_lock(folder):
            if os.path.lexists(path) and not force:
                raise ArtifactError(f"{path} exists (written meanwhile by another process); pass --force to "
                                    "overwrite it")
            os.replace(temp, path)
            _sync_folder(folder)
    except OSError as exc:
        raise ArtifactError(f"cannot write {path}: {_os_reason(exc)}") from None
    return path


def _os_reason(exc: OSError) -> str:
    reasons = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
               errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded", errno.EISDIR: "is a folder",
               errno.ENOTDIR: "a parent is a file, not a folder", errno.EEXIST: "exists",
               errno.EPERM: "operation not permitted", errno.EFBIG: "file too large for the file system"}
    return reasons.get(exc.errno, exc.strerror or str(exc))


def os_reason(exc: OSError) -> str:
    """A short, human reason for an OSError (no errno numbers, no repeated path)."""
    return _os_reason(exc)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, force: bool = False) -> str:
    return write_files_atomic([(path, data)], force)[0]


def write_text_atomic(path: str | os.PathLike, text: str, force: bool = False) -> str:
    return write_bytes_atomic(path, text.encode("utf-8"), force)


# ----------------------------------------------------------------------------------------------------------------
# JSON nobody vouches for (manifests, build plans, a dataset's description)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_untrusted_json(raw: bytes | str, source: str, what: str, max_bytes: int, error=ArtifactError):
    """JSON from bytes nobody vouches for, as one ``error`` line whatever is wrong with them: not UTF-8, not JSON,
    NaN/Infinity (Python's json takes them, JSON does not), nesting too deep, integers too long to convert, or more
    than ``max_bytes`` (too large to be ``what``)."""
    if len(raw) > max_bytes:
        raise error(f"{source} is {len(raw) / 2**20:.0f} MiB: too large to be {what}")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise error(f"{source} is corrupt: not UTF-8 text, so not {what}") from None
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise error(f"{source} is corrupt: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise error(f"{source} is corrupt: its JSON is nested too deeply to be {what}") from None
    except ValueError as exc:  # NaN/Infinity, or an integer beyond Python's digit limit
        raise error(f"{source} is corrupt: not valid JSON ({' '.join(str(exc).split())[:120]})") from None


def read_untrusted_json(path: str | os.PathLike, what: str, max_bytes: int, error=ArtifactError):
    """The JSON document in the file at ``path``, read as :func:`parse_untrusted_json` reads bytes (after waiting
    for a live writer of it)."""
    path = os.fspath(path)
    wait_for_writers(path)
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise error(f"{path} is {size / 2**20:.0f} MiB: too large to be {what}")
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise error(f"cannot read {path}: {_os_reason(exc)}") from None
    return parse_untrusted_json(raw, path, what, max_bytes, error)


def user_cache_dir(*parts: str) -> str:
    """segdeploy's cache folder for things that are slow to make and safe to re-make (complexity counts, trained
    fixtures): ``$SEGDEPLOY_CACHE``, else ``$XDG_CACHE_HOME/segdeploy``, else ``~/.cache/segdeploy``."""
    root = os.environ.get("SEGDEPLOY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "segdeploy")
    return os.path.join(root, *parts)

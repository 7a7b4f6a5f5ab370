"""Atomic writes: a file, a set of files that belong together (an artifact and its manifest), or a folder (a Triton
model, a build bundle) appears whole or not at all, and nothing that exists is replaced without ``force``.

How: the destination is checked before any long work (``check_destination``); writers of one folder take an
exclusive lock on the folder itself (flock on its descriptor: no lock files to leak), then, under the lock, check
again that nothing exists that they may not replace and write every file to a temp file (fsynced). Temp files are
unnamed (O_TMPFILE) where the file system allows, so a writer killed with SIGKILL before its commit leaves nothing
behind; elsewhere a named ``.<name>.<random>.tmp`` is used and the next writer of that name removes such leftovers
(it holds the folder's lock, so they cannot belong to a live writer).

Committing a unit of several files is not one system call, so it is journaled: the writer first records, in a
hidden ``.<first file>.unit`` journal, which files it is about to put in place and where it keeps the files they
replace (hard links, ``.<name>.<random>.old.tmp``), then links or renames its files into place, then deletes the
journal (the commit point) and the old copies. A journal that is still there belongs to a writer that died in the
middle (SIGKILL, power loss): the next writer of the folder, or the next reader of a file the journal names
(``settle``), rolls that unit back under the lock, restoring the files it had replaced. So two concurrent exports
to one path cannot interleave (without ``--force`` the second stops without touching the first's files; with it,
the pair on disk is one writer's or the other's, never a mix), and a killed writer leaves the old unit or nothing,
never half of the new one.

Tests interrupt writers at named points of this sequence: ``SEGDEPLOY_TEST_SIGNAL_AT=<point>:<SIGNAL>`` makes a
writer send itself SIGNAL there (``TEST_POINTS``); it is read in ``_test_point`` only and does nothing when unset.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import stat
import tempfile

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
        if not force:
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
def folder_lock(folder: str):
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
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


class _Pending:
    """One file being written: an unnamed temp file where the file system has them, a named one otherwise."""

    def __init__(self, path: str, folder: str):
        self.path, self.folder, self.fd, self.named = path, folder, None, None
        try:
            self.fd = os.open(folder, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o666 & ~_current_umask())
        except (OSError, AttributeError):
            self.fd, self.named = _mkstemp(path, folder)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        os.fsync(self.fd)
        if self.named:
            # mkstemp makes the file private (0600); an artifact gets the permissions any new file would get
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


def _mkstemp(path: str, folder: str) -> tuple[int, str]:
    fd, name = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    return fd, name


def _is_leftover(name: str, prefix: str) -> bool:
    return name.startswith(prefix) and (name.endswith(".tmp") or ".tmp." in name)


def _remove_leftovers(path: str, folder: str) -> None:
    """Remove the temp files and folders dead writers of ``path`` left (the caller holds the folder's lock)."""
    prefix = f".{os.path.basename(path)}."
    for name in os.listdir(folder):
        if _is_leftover(name, prefix):
            _remove_path(os.path.join(folder, name))


def _remove_path(path: str) -> None:
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


# ----------------------------------------------------------------------------------------------------------------
# The commit journal (see the module docstring)


def _journal_path(folder: str, first: str) -> str:
    return os.path.join(folder, f".{os.path.basename(first)}{JOURNAL_SUFFIX}")


def _plain_name(name) -> bool:
    return isinstance(name, str) and bool(name) and os.sep not in name and name not in (".", "..") and \
        (os.altsep is None or os.altsep not in name)


def _read_journal(path: str) -> list[dict]:
    """The entries of a journal; [] when it is unreadable (its writer died writing it, before committing anything)."""
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read().decode("utf-8"))
        entries = document["entries"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return []
    if not isinstance(entries, list):
        return []
    # a journal only ever names files of its own folder; anything else is not ours to touch
    return [e for e in entries if isinstance(e, dict) and _plain_name(e.get("name")) and
            (e.get("backup") is None or _plain_name(e.get("backup")))]


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


def _roll_back(folder: str, journal: str) -> None:
    """Undo the unit ``journal`` describes: restore the files it replaced, remove the ones it added."""
    for entry in _read_journal(journal):
        target = os.path.join(folder, entry["name"])
        backup = os.path.join(folder, entry["backup"]) if entry.get("backup") else None
        if backup is None:
            if os.path.lexists(target):  # it did not exist when the unit began: the unit made it
                _remove_path(target)
        elif os.path.lexists(backup):
            if os.path.lexists(target) and os.path.samefile(backup, target):
                os.unlink(backup)  # a hard link to the file still in place (rename() would keep both names)
            else:
                if os.path.isdir(backup) and os.path.lexists(target):
                    _remove_path(target)
                os.replace(backup, target)
        # a backup that was never made means the target was never touched
    _sync_folder(folder)
    os.unlink(journal)
    _sync_folder(folder)


def _recover(folder: str) -> None:
    """Roll back every unit of ``folder`` whose writer died mid-commit (the caller holds the folder's lock)."""
    for name in os.listdir(folder):
        if name.startswith(".") and name.endswith(JOURNAL_SUFFIX):
            _roll_back(folder, os.path.join(folder, name))


def _finish(folder: str, journal: str, entries: list[dict]) -> None:
    _sync_folder(folder)
    os.unlink(journal)  # the commit point
    _sync_folder(folder)
    _test_point("committed")
    for entry in entries:
        if entry.get("backup"):
            _remove_path(os.path.join(folder, entry["backup"]))


def settle(path: str | os.PathLike) -> None:
    """Before reading ``path``: when a writer of its folder died mid-commit, roll its unit back now, and remove the
    temp files dead writers of ``path`` left (under the folder's lock, so a live writer finishes first): no reader
    ever sees half a unit."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    try:
        names = os.listdir(folder)
    except OSError:
        return
    prefix = f".{os.path.basename(os.fspath(path))}."
    if not any((n.startswith(".") and n.endswith(JOURNAL_SUFFIX)) or _is_leftover(n, prefix) for n in names):
        return
    try:
        with folder_lock(folder):
            _recover(folder)
            _remove_leftovers(os.fspath(path), folder)
    except OSError as exc:
        raise ArtifactError(f"{os.fspath(path)}: a writer in {folder} was killed while writing and the half-written "
                            f"files cannot be rolled back from here ({_os_reason(exc)}); write them again") from None


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
        settle(path)  # a unit a killed writer left half committed is rolled back before its files are judged
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
    _recover(folder)
    for path in paths:  # again, under the lock: another writer may have finished meanwhile
        if os.path.lexists(path) and not force:
            raise ArtifactError(f"{path} exists (written meanwhile by another process); pass --force to overwrite it")
        _remove_leftovers(path, folder)
    pending: list[_Pending] = []
    journal = None
    try:
        for path, data in zip(paths, contents):
            item = _Pending(path, folder)
            pending.append(item)
            item.write(data)
        _test_point("written")
        # record where the files being replaced are kept before touching any of them
        entries = [{"name": os.path.basename(p), "backup": os.path.basename(_temp_name(p, folder, ".old")[1])
                    if os.path.lexists(p) else None} for p in paths]
        journal = _write_journal(folder, paths[0], entries)
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
                _roll_back(folder, journal)
        raise
    finally:
        for item in pending:
            item.discard()


def folder_holds(folder: str | os.PathLike, files: dict[str, bytes]) -> bool:
    """True when ``folder`` holds exactly ``files`` (the same relative paths with the same bytes, nothing else), so
    writing them again would change nothing: an export that made it reuses it instead of asking for --force."""
    folder = os.path.abspath(os.fspath(folder))
    settle(folder)
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
                        executable: tuple[str, ...] = ()) -> str:
    """Write a folder of files (relative paths -> bytes) as a unit: built as a hidden sibling, then renamed into
    place under the parent's lock (journaled like a unit of files). An existing ``target`` is replaced only with
    ``force``, and only when it is a folder. Returns the folder's path."""
    target = os.path.abspath(os.fspath(target))
    name = os.path.basename(target)
    if not _plain_name(name):
        raise ArtifactError(f"cannot write a folder named {name!r}")
    settle(target)
    if os.path.lexists(target) and not os.path.isdir(target):
        raise ArtifactError(f"{target} exists and is a file, not a folder; remove it or choose another path")
    if os.path.lexists(target) and not force:
        raise ArtifactError(f"{target} exists; pass --force to replace it")
    for rel in files:
        parts = rel.split("/")
        if not all(_plain_name(p) for p in parts):
            raise ValueError(f"not a relative path inside the folder: {rel!r}")
    parent = os.path.dirname(target)
    check_destination(os.path.join(parent, f".{name}.probe"), force=True, what="folder")
    made: list[str] = []
    try:
        made = make_parents(parent)
        with folder_lock(parent):
            _test_point("locked")
            _commit_folder(parent, target, files, force, executable)
    except BaseException as exc:
        remove_made(made)
        if isinstance(exc, OSError):
            raise ArtifactError(f"cannot write {target}: {_os_reason(exc)}") from None
        raise
    return target


def _commit_folder(parent: str, target: str, files: dict[str, bytes], force: bool, executable) -> None:
    _recover(parent)
    if os.path.lexists(target) and not force:
        raise ArtifactError(f"{target} exists (written meanwhile by another process); pass --force to replace it")
    _remove_leftovers(target, parent)
    _, staging = _temp_name(target, parent)
    journal = None
    try:
        os.mkdir(staging)
        for rel, data in files.items():
            path = os.path.join(staging, *rel.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if rel in executable:
                os.chmod(path, 0o777 & ~_current_umask())
        _test_point("written")
        backup = os.path.basename(_temp_name(target, parent, ".old")[1]) if os.path.lexists(target) else None
        entries = [{"name": os.path.basename(target), "backup": backup}]
        journal = _write_journal(parent, target, entries)
        if backup:
            os.rename(target, os.path.join(parent, backup))
        _test_point("journaled")
        os.rename(staging, target)
        _finish(parent, journal, entries)
        journal = None
    except BaseException:
        if journal is not None and os.path.lexists(journal):
            with contextlib.suppress(OSError):
                _roll_back(parent, journal)
        raise
    finally:
        if os.path.lexists(staging):
            _remove_path(staging)


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


def user_cache_dir(*parts: str) -> str:
    """segdeploy's cache folder for things that are slow to make and safe to re-make (complexity counts, trained
    fixtures): ``$SEGDEPLOY_CACHE``, else ``$XDG_CACHE_HOME/segdeploy``, else ``~/.cache/segdeploy``."""
    root = os.environ.get("SEGDEPLOY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "segdeploy")
    return os.path.join(root, *parts)

"""Atomic writes: a file (or a set of files that belong together, like an artifact and its manifest) appears whole
or not at all, and nothing that exists is replaced without ``force``.

How: the destination is checked before any long work (``check_destination``); writers of one folder take an
exclusive lock on the folder itself (flock on its descriptor: no lock files to leak), then, under the lock, check
again that nothing exists that they may not replace, write every file to a temp file, fsync, and rename the temp
files into place. Two concurrent exports to one path therefore cannot interleave: without ``--force`` the second
finds the first's files and stops without touching them; with ``--force`` the pair on disk is one writer's or the
other's, never a mix. Temp files are unnamed (O_TMPFILE) where the file system allows, so a writer killed with
SIGKILL leaves nothing behind; elsewhere a named ``.<name>.<random>.tmp`` is used and the next writer of that name
removes such leftovers (it holds the folder's lock, so they cannot belong to a live writer).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile

from segdeploy.errors import ArtifactError


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


def check_destination(path: str | os.PathLike, force: bool = False, what: str = "output") -> str:
    """Fail now, with one line, if ``path`` cannot be written later: it is a folder, it exists and ``force`` is not
    set, a parent is a file, or the folder it goes into cannot be written. Creates nothing."""
    path = os.fspath(path)
    if not path:
        raise ArtifactError(f"the {what} path is empty")
    if os.path.isdir(path):
        raise ArtifactError(f"{path} is a folder; give a file name for the {what}")
    if os.path.lexists(path) and not force:
        raise ArtifactError(f"{path} exists; pass --force to overwrite it")
    parent = os.path.dirname(os.path.abspath(path))
    existing = _first_existing(parent)
    if not os.path.isdir(existing):
        raise ArtifactError(f"cannot write {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ArtifactError(f"cannot write {path}: no permission to write in {existing}")
    if _read_only_fs(existing):
        raise ArtifactError(f"cannot write {path}: {existing} is on a read-only file system")
    return path


def check_writable(path: str | os.PathLike, force: bool) -> str:  # the name export and commands used so far
    return check_destination(path, force)


def _read_only_fs(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _make_parents(folder: str) -> list[str]:
    """Create ``folder`` and its missing parents; return the ones created (to remove them if the write fails)."""
    made = []
    while not os.path.isdir(folder):
        made.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for f in reversed(made):
        os.mkdir(f)
    return made


@contextlib.contextmanager
def folder_lock(folder: str):
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


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


def _temp_name(path: str, folder: str) -> tuple[str, str]:
    prefix = f".{os.path.basename(path)}."
    return prefix, os.path.join(folder, prefix + os.urandom(6).hex() + ".tmp")


def _mkstemp(path: str, folder: str) -> tuple[int, str]:
    fd, name = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    return fd, name


def _remove_leftovers(path: str, folder: str) -> None:
    prefix = f".{os.path.basename(path)}."
    for name in os.listdir(folder):
        if name.startswith(prefix) and name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))


def write_files_atomic(files: list[tuple[str | os.PathLike, bytes]], force: bool = False) -> list[str]:
    """Write several files of one folder as a unit (see the module docstring); returns their paths."""
    paths = [os.fspath(p) for p, _ in files]
    for path in paths:
        check_destination(path, force)
    folders = {os.path.dirname(os.path.abspath(p)) for p in paths}
    if len(folders) != 1:
        raise ValueError("files written as one unit must share a folder")
    folder = folders.pop()
    made = []
    pending: list[_Pending] = []
    committed: list[str] = []
    try:
        made = _make_parents(folder)
        with folder_lock(folder):
            for path in paths:  # again, under the lock: another writer may have finished meanwhile
                if os.path.lexists(path) and not force:
                    raise ArtifactError(f"{path} exists (written meanwhile by another process); pass --force to "
                                        "overwrite it")
                _remove_leftovers(path, folder)
            for path, (_, data) in zip(paths, files):
                item = _Pending(path, folder)
                pending.append(item)
                item.write(data)
            for item in pending:
                item.commit()
                committed.append(item.path)
            with contextlib.suppress(OSError):
                dfd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
    except BaseException as exc:
        for item in pending:
            item.discard()
        if len(committed) < len(paths):
            for path in committed:  # half a unit is worse than none
                with contextlib.suppress(OSError):
                    os.unlink(path)
        for f in made:
            with contextlib.suppress(OSError):
                os.rmdir(f)
        if isinstance(exc, OSError):
            raise ArtifactError(f"cannot write {paths[0]}: {_os_reason(exc)}") from None
        raise
    finally:
        for item in pending:
            item.discard()
    return paths


def _os_reason(exc: OSError) -> str:
    reasons = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
               errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded", errno.EISDIR: "is a folder",
               errno.ENOTDIR: "a parent is a file, not a folder", errno.EEXIST: "exists"}
    return reasons.get(exc.errno, exc.strerror or str(exc))


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

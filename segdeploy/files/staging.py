"""Temp files a writer stages its output in before the commit: unnamed (O_TMPFILE) where the file system allows,
else a named ``.<name>.<random>.tmp`` whose leftovers the next writer of that name removes (it holds the folder's
lock, so they cannot belong to a live writer).
"""
from __future__ import annotations

import contextlib
import os
import re

from segdeploy.files.locking import identity_of, owned, remove_path


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class Pending:
    """One file being written: an unnamed temp file where the file system has them, a named one otherwise."""

    def __init__(self, path: str, folder: str):
        self.path, self.folder, self.fd, self.named = path, folder, None, None
        try:
            self.fd = os.open(folder, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o666 & ~current_umask())
        except (OSError, AttributeError):
            self.fd, self.named = _create_temp(path, folder)

    @property
    def identity(self) -> list[int]:
        return identity_of(os.fstat(self.fd))

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        os.fsync(self.fd)
        if self.named:
            # a private temp file (0600); an artifact gets the permissions any new file would get
            os.chmod(self.named, 0o666 & ~current_umask())

    def commit(self) -> None:
        if self.named is None:
            if not os.path.lexists(self.path):
                self._link(self.path)  # appears whole, at once
                return
            _, name = temp_name(self.path, self.folder)
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


def temp_name(path: str, folder: str, kind: str = "") -> tuple[str, str]:
    prefix = f".{os.path.basename(path)}."
    return prefix, os.path.join(folder, prefix + os.urandom(6).hex() + kind + ".tmp")


def _create_temp(path: str, folder: str) -> tuple[int, str]:
    while True:
        _, name = temp_name(path, folder)
        try:
            return os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), name
        except FileExistsError:
            continue

# The temp names segdeploy makes: ".<name>.<12 hex>[.old|.plan].tmp[.<suffix>]" (and tempfile's 8 characters, which
# the TensorRT builder's bare plans use); nothing else in a folder is ever taken for a leftover.
_LEFTOVER = r"\.(?:[0-9a-f]{12}|[a-z0-9_]{8})(?:\.old|\.plan)?\.tmp(?:\.[A-Za-z0-9]{1,8})?"


def _is_leftover(name: str, prefix: str) -> bool:
    return name.startswith(prefix) and re.fullmatch(re.escape(prefix[:-1]) + _LEFTOVER, name) is not None


def remove_leftovers(path: str, folder: str) -> None:
    """Remove the temp files and folders dead writers of ``path`` left (the caller holds the folder's lock): only
    names segdeploy makes, and only this user's."""
    prefix = f".{os.path.basename(path)}."
    for name in os.listdir(folder):
        if _is_leftover(name, prefix) and owned(os.path.join(folder, name)):
            remove_path(os.path.join(folder, name))

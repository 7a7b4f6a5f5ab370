"""What every writer of a folder stands on: the folder's lock, files' identities, fsync of a folder, removal of
only what a writer owns, an OSError said in words, and the test hook that interrupts a writer at a named point
(``SEGDEPLOY_TEST_SIGNAL_AT=<point>:<SIGNAL>``, read in ``interrupt_point`` only; it does nothing when unset).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import stat

TEST_SIGNAL_ENV = "SEGDEPLOY_TEST_SIGNAL_AT"

# locked: the folder lock is held; written: the temp files are complete; journaled: the journal is on disk and the
# old files are kept aside; half-committed: the first file of a unit is in place, the others not yet; committed:
# the journal is gone (the unit is in place)
TEST_POINTS = ("locked", "written", "journaled", "half-committed", "committed")


def interrupt_point(name: str) -> None:
    spec = os.environ.get(TEST_SIGNAL_ENV)
    if spec:
        point, _, sig = spec.partition(":")
        if point == name:
            os.kill(os.getpid(), getattr(signal, sig or "SIGSTOP"))


@contextlib.contextmanager

def folder_lock(folder: str, shared: bool = False):
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def sync_folder(folder: str) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def identity_of(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino]


def is_same_file(path: str, identity, since: int = 0) -> bool:
    """True when ``path`` is the very file (or folder) ``identity`` ([device, inode]) recorded, not a symlink, and
    was linked or renamed there no earlier than ``since`` (ns): a journal is written before its unit touches any
    name, so a file whose inode has not changed since is not one the unit put anywhere."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return not stat.S_ISLNK(st.st_mode) and identity_of(st) == list(identity) and st.st_ctime_ns >= since


def owned(path: str) -> bool:
    try:
        return os.lstat(path).st_uid == os.geteuid()
    except OSError:
        return False


def remove_path(path: str) -> None:
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def os_reason(exc: OSError) -> str:
    """A short, human reason for an OSError (no errno numbers, no repeated path)."""
    reasons = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
               errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded", errno.EISDIR: "is a folder",
               errno.ENOTDIR: "a parent is a file, not a folder", errno.EEXIST: "exists",
               errno.EPERM: "operation not permitted", errno.EFBIG: "file too large for the file system"}
    return reasons.get(exc.errno, exc.strerror or str(exc))


"""Where output may go: a destination checked before any long work (it exists without ``force``, a parent is a
file, no permission, a read-only or full file system), parent folders made and removed again on failure, and the
user's cache folder.
"""
from __future__ import annotations

import contextlib
import os
import stat

from segdeploy.errors import ArtifactError
from segdeploy.files.journal import uncommitted_made


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
        if not force and not uncommitted_made(path):  # a unit's uncommitted file: decided under the lock
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


def user_cache_dir(*parts: str) -> str:
    """segdeploy's cache folder for things that are slow to make and safe to re-make (complexity counts, trained
    fixtures): ``$SEGDEPLOY_CACHE``, else ``$XDG_CACHE_HOME/segdeploy``, else ``~/.cache/segdeploy``."""
    root = os.environ.get("SEGDEPLOY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "segdeploy")
    return os.path.join(root, *parts)

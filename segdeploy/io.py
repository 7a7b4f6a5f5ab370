"""Atomic artifact writes: a temp file in the target's folder, fsync, then rename; never a half-written file."""
from __future__ import annotations

import os
import tempfile

from segdeploy.errors import ArtifactError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike, force: bool) -> str:
    path = os.fspath(path)
    if os.path.exists(path) and not force:
        raise ArtifactError(f"{path} exists; pass --force to overwrite it")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes, force: bool = False) -> str:
    path = check_writable(path, force)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=os.path.dirname(
        os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); an artifact gets the permissions any new file would get
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str, force: bool = False) -> str:
    return write_bytes_atomic(path, text.encode("utf-8"), force)

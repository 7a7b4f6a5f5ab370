"""Atomic writes: a file, a set of files that belong together (an artifact and its manifest), or a folder (a Triton
model, a build bundle) appears whole or not at all, and nothing that exists is replaced without ``force``.

How: the destination is checked before any long work (destinations.py); writers of one folder take an exclusive
lock on the folder itself (locking.py: flock on its descriptor, no lock files to leak), then, under the lock,
check again that nothing exists that they may not replace and write every file to a temp file (staging.py,
fsynced), then commit the unit through a journal (journal.py). So two concurrent exports to one path cannot
interleave (without ``--force`` the second stops without touching the first's files; with it, the pair on disk is
one writer's or the other's, never a mix), and a killed writer leaves the old unit or nothing, never half of the
new one that any reader would use.
"""
from __future__ import annotations

import contextlib
import errno
import os

from segdeploy.errors import ArtifactError
from segdeploy.files.destinations import check_destination, make_parents, remove_made
from segdeploy.files.journal import (
    dead_unit_made,
    finish_unit,
    keep_aside,
    plain_name,
    recover,
    relative_name,
    roll_back,
    unit_tag,
    wait_for_writers,
    write_journal,
)
from segdeploy.files.locking import (
    folder_lock,
    identity_of,
    interrupt_point,
    is_same_file,
    os_reason,
    remove_path,
    sync_folder,
)
from segdeploy.files.staging import Pending, current_umask, remove_leftovers, temp_name


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
            interrupt_point("locked")
            _commit_files(folder, paths, [data for _, data in files], force)
    except BaseException as exc:
        remove_made(made)
        if isinstance(exc, OSError):
            raise ArtifactError(f"cannot write {paths[0]}: {os_reason(exc)}") from None
        raise
    return paths


def _commit_files(folder: str, paths: list[str], contents: list[bytes], force: bool) -> None:
    recover(folder, [os.path.basename(p) for p in paths])
    for path in paths:  # again, under the lock: another writer may have finished meanwhile
        if os.path.lexists(path) and not force:
            raise ArtifactError(f"{path} exists (written meanwhile by another process); pass --force to overwrite it")
        remove_leftovers(path, folder)
    pending: list[Pending] = []
    entries = None
    journal = None
    try:
        for path, data in zip(paths, contents):
            item = Pending(path, folder)
            pending.append(item)
            item.write(data)
        interrupt_point("written")
        # record what is about to be put in place, and where the files being replaced are kept, before touching any
        entries = []
        for path, item in zip(paths, pending):
            entry = {"name": os.path.basename(path), "made": item.identity, "backup": None, "kept": None}
            if os.path.lexists(path):
                entry["backup"] = os.path.basename(temp_name(path, folder, ".old")[1])
                entry["kept"] = identity_of(os.lstat(path))
            entries.append(entry)
        journal = write_journal(folder, os.path.basename(paths[0]), entries)
        for entry in entries:
            if entry["backup"]:
                keep_aside(os.path.join(folder, entry["name"]), os.path.join(folder, entry["backup"]))
        interrupt_point("journaled")
        for i, item in enumerate(pending):
            item.commit()
            if i == 0 and len(pending) > 1:
                interrupt_point("half-committed")
        finish_unit(folder, journal, entries)
        journal = None
    except BaseException:
        if journal is not None and os.path.lexists(journal):
            with contextlib.suppress(OSError):
                roll_back(folder, entries)  # from what this writer recorded itself, not from the file
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
    if not plain_name(name) or name.startswith("."):
        raise ArtifactError(f"cannot write a folder named {name!r}")
    parent = os.path.dirname(target)
    work = os.path.abspath(os.fspath(stage_in)) if stage_in is not None else parent
    rel = os.path.relpath(target, work)
    if not relative_name(rel):
        raise ValueError(f"{target} must be in {work} or one folder below it")
    if os.path.lexists(target) and not os.path.isdir(target):
        raise ArtifactError(f"{target} exists and is a file, not a folder; remove it or choose another path")
    if os.path.lexists(target) and not force and not dead_unit_made(target, work):
        raise ArtifactError(f"{target} exists; pass --force to replace it")
    for path in files:
        parts = path.split("/")
        if not all(plain_name(p) for p in parts):
            raise ValueError(f"not a relative path inside the folder: {path!r}")
    check_destination(os.path.join(work, f".{unit_tag(rel)}.probe"), force=True, what="folder")
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
            interrupt_point("locked")
            _commit_folder(work, rel, files, force, executable, keep_others)
    except BaseException as exc:
        remove_made(made)
        if isinstance(exc, OSError):
            raise ArtifactError(f"cannot write {target}: {os_reason(exc)}") from None
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
                    raise ArtifactError(f"cannot keep {src} in the new folder ({os_reason(exc)}): its file "
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
    tag = unit_tag(rel)
    recover(work, [rel])
    if os.path.lexists(target) and not force:
        raise ArtifactError(f"{target} exists (written meanwhile by another process); pass --force to replace it")
    remove_leftovers(os.path.join(work, tag), work)
    _, staging = temp_name(tag, work)
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
                os.chmod(full, 0o777 & ~current_umask())
        if keep_others and os.path.isdir(target):
            _link_others(target, staging, files)
        interrupt_point("written")
        entry = {"name": rel, "made": identity_of(os.lstat(staging)), "backup": None, "kept": None}
        if os.path.lexists(target):
            # the old folder ends where the new one was staged: swapped in one step where the kernel can, so that a
            # reader (a Triton server) never finds the model missing
            entry["backup"], entry["kept"] = os.path.basename(staging), identity_of(os.lstat(target))
        entries = [entry]
        journal = write_journal(work, rel, entries)
        interrupt_point("journaled")
        if not entry["backup"]:
            os.rename(staging, target)
        elif not _exchange(staging, target):
            _, moved = temp_name(tag, work)  # each step leaves what the journal proves, or a leftover
            os.rename(staging, moved)
            os.rename(target, staging)
            os.rename(moved, target)
        finish_unit(work, journal, entries)
        journal = None
    except BaseException:
        if journal is not None and os.path.lexists(journal):
            with contextlib.suppress(OSError):
                roll_back(work, entries)
                os.unlink(journal)
        raise
    finally:
        if os.path.lexists(staging) and (entries is None or is_same_file(staging, entries[0]["made"])):
            remove_path(staging)  # what this writer made and did not put in place (never the old folder)


def identities(*paths) -> dict[str, list[int]]:
    """The identity (device, inode) of each of ``paths`` that exists now: what :func:`remove_unchanged` takes."""
    found = {}
    for path in paths:
        with contextlib.suppress(OSError):
            found[os.path.abspath(os.fspath(path))] = identity_of(os.lstat(path))
    return found


def remove_unchanged(recorded: dict[str, list[int]]) -> None:
    """Remove the files ``identities`` recorded, each only while it is still that very file (under its folder's
    lock): how a command that fails after writing an intermediate artifact leaves nothing behind, without ever
    removing what another writer has put there since."""
    for path, identity in recorded.items():
        folder = os.path.dirname(path)
        with contextlib.suppress(OSError), folder_lock(folder):
            if is_same_file(path, identity):
                os.unlink(path)
                sync_folder(folder)


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
            sync_folder(folder)
    except OSError as exc:
        raise ArtifactError(f"cannot write {path}: {os_reason(exc)}") from None
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes, force: bool = False) -> str:
    return write_files_atomic([(path, data)], force)[0]


def write_text_atomic(path: str | os.PathLike, text: str, force: bool = False) -> str:
    return write_bytes_atomic(path, text.encode("utf-8"), force)

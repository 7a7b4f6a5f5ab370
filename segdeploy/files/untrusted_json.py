"""JSON from bytes nobody vouches for (a manifest, a bundle's plan, a results file), read as one clear error line
whatever is wrong with it.
"""
from __future__ import annotations

import json
import os

from segdeploy.errors import ArtifactError
from segdeploy.files.journal import wait_for_writers
from segdeploy.files.locking import os_reason


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
        raise error(f"cannot read {path}: {os_reason(exc)}") from None
    return parse_untrusted_json(raw, path, what, max_bytes, error)

"""NVIDIA's real TensorRT Python bindings of the pinned releases, imported on a machine without TensorRT or a GPU.

``scripts/trt_bindings.py`` (``make trt-bindings``; ``make test`` runs it first) fetches the binding wheels, unpacks
each release's module under a package name of its own and builds the link stubs its extension module needs. Here
each release is imported into the test process: the stubs are loaded globally first (so ``tensorrt.so`` resolves its
nine entry points without LD_LIBRARY_PATH), then the package. The three releases live side by side in one process
because their packages have different names (an extension module of the same full name would be handed back from
the first import).

Without the harness the tests that need it skip with the reason, except under CI, where they fail.
"""
from __future__ import annotations

import ctypes
import importlib
import json
import os
import sys

import pytest

RELEASES = ("10.3.0", "10.16.1.11", "11.4.0.106")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.environ.get("SEGDEPLOY_TRT_BINDINGS") or os.path.join(ROOT, "build", "trt-bindings")
_loaded: dict[str, object] = {}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_reason() -> str | None:
    """Why the real bindings are not here, or None."""
    index = os.path.join(HARNESS, "releases.json")
    if not os.path.isfile(index):
        return f"NVIDIA's TensorRT bindings are not prepared ({index} is missing): run `make trt-bindings`"
    with open(index) as f:
        entries = json.load(f)
    absent = [r for r in RELEASES if r not in entries]
    if absent:
        return f"{index} lacks TensorRT {', '.join(absent)}: run `make trt-bindings` again"
    return None


def load(release: str):
    """The ``tensorrt`` module of ``release`` (NVIDIA's bindings over link stubs)."""
    if release in _loaded:
        return _loaded[release]
    reason = missing_reason()
    if reason:
        if in_ci():
            pytest.fail(f"CI runs the real-bindings tests: {reason}")
        pytest.skip(reason)
    with open(os.path.join(HARNESS, "releases.json")) as f:
        entry = json.load(f)[release]
    for stub in entry["stubs"]:
        ctypes.CDLL(stub, mode=ctypes.RTLD_GLOBAL)
    if entry["path"] not in sys.path:
        sys.path.append(entry["path"])
    module = importlib.import_module(entry["package"])
    assert module.__version__ == release, (module.__version__, release)
    _loaded[release] = module
    return module


def release_id(release: str) -> str:
    return "trt" + ".".join(release.split(".")[:2])

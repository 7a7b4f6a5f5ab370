"""segdeploy's core dependencies, computed at install time for one reason: ONNX Runtime.

The module ``onnxruntime`` comes in several distributions (onnxruntime for CPUs, onnxruntime-gpu on NVIDIA machines,
NVIDIA's wheels on Jetsons, onnxruntime-openvino, -directml, -rocm). They overwrite each other's files, so requiring
the CPU ``onnxruntime`` where onnxruntime-gpu is installed would break that machine. segdeploy therefore requires
the distribution that is already installed, and ``onnxruntime`` only where there is none. ``SEGDEPLOY_ONNXRUNTIME``
(a requirement such as ``onnxruntime-gpu>=1.18``) overrides the choice. Everything else is in pyproject.toml.
"""
from __future__ import annotations

import os
import subprocess
import sys

from setuptools import setup

BASE = [
    # torch is installed by `make install` only where absent (torch==2.13.0 CPU); any recent torch works
    "torch>=2.4",
    "numpy>=1.24",
    "opencv-python-headless>=4.8",
    "onnx>=1.16",
    "onnxslim>=0.1.40",  # the simplifier: pure Python, so a plain install exports (onnxsim is the optional fallback)
    "rich>=13",
    "jsonschema>=4.18",
]
ONNXRUNTIME_DISTRIBUTIONS = ("onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml", "onnxruntime-rocm",
                             "onnxruntime-silicon", "onnxruntime")
MIN_ONNXRUNTIME = "1.18"

_PROBE = ("import importlib.metadata as m\n"
          f"for d in {ONNXRUNTIME_DISTRIBUTIONS!r}:\n"
          "    try:\n"
          "        m.version(d); print(d); break\n"
          "    except m.PackageNotFoundError:\n"
          "        pass\n")


def installed_onnxruntime() -> str | None:
    """The ONNX Runtime distribution installed for this interpreter. pip builds in an isolated environment that
    hides the target's packages, so ask a fresh interpreter without pip's path changes."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME")}
    try:
        found = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None


def onnxruntime_requirement() -> str:
    override = os.environ.get("SEGDEPLOY_ONNXRUNTIME")
    if override:
        return override
    return f"{installed_onnxruntime() or 'onnxruntime'}>={MIN_ONNXRUNTIME}"


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import it for the functions above
    setup(install_requires=[*BASE, onnxruntime_requirement()])

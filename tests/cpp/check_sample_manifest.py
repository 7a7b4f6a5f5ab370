"""The C++ unit tests' sample manifest (cpp/tests/data/manifest.json) is one the Python reader accepts, and is
tests/manifests.py's sample: the two readers are tested on the same document. Needs tests/ on PYTHONPATH."""
from __future__ import annotations

import os
import sys

from manifests import sample_manifest
from segdeploy.artifact.manifest_store import read_sidecar

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
path = os.path.join(REPO, "cpp", "tests", "data", "manifest.json")
same = read_sidecar(path) == sample_manifest()
print(f"{path}: {'valid, and equal to tests/manifests.py sample_manifest()' if same else 'differs from the sample'}")
print("1 passed, 0 failed" if same else "0 passed, 1 failed")
sys.exit(0 if same else 1)

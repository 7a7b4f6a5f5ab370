"""Packaging: a plain install exports (the simplifier is a core dependency) and requires ONNX Runtime as a module,
keeping whichever distribution of it is installed (onnxruntime-gpu and onnxruntime clash)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def setup_module():
    spec = importlib.util.spec_from_file_location("segdeploy_setup", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: defines the functions, does not run setup()
    return module


def test_the_installed_onnxruntime_distribution_is_kept(setup_module, monkeypatch):
    monkeypatch.delenv("SEGDEPLOY_ONNXRUNTIME", raising=False)
    import importlib.metadata

    here = next(d for d in setup_module.ONNXRUNTIME_DISTRIBUTIONS if _installed(importlib.metadata, d))
    assert setup_module.installed_onnxruntime() == here  # asked of a fresh interpreter, as pip's build would
    monkeypatch.setattr(setup_module, "installed_onnxruntime", lambda: "onnxruntime-gpu")
    assert setup_module.onnxruntime_requirement() == "onnxruntime-gpu>=1.18"
    monkeypatch.setattr(setup_module, "installed_onnxruntime", lambda: None)
    assert setup_module.onnxruntime_requirement() == "onnxruntime>=1.18"
    monkeypatch.setenv("SEGDEPLOY_ONNXRUNTIME", "onnxruntime-openvino==1.20.0")
    assert setup_module.onnxruntime_requirement() == "onnxruntime-openvino==1.20.0"


def _installed(metadata, dist: str) -> bool:
    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def test_core_dependencies_export_without_extras(setup_module):
    names = {req.split(">")[0].split("=")[0] for req in setup_module.BASE}
    assert "onnxslim" in names and "onnxsim" not in names and "jsonschema" in names
    assert not {"openvino", "tensorrt", "matplotlib", "timm", "torchvision"} & names


def test_the_dev_extra_installs_what_ci_runs():
    """CI runs what users run: OpenVINO (the default CPU backend where installed) is in the test extra, and stays
    an extra for users."""
    import tomllib

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    dev = {req.split(">")[0].split("[")[0] for req in extras["dev"]}
    assert {"openvino", "onnxsim", "matplotlib", "tritonclient", "hypothesis"} <= dev
    assert extras["openvino"] == ["openvino>=2024.0"]


def _pyproject_version() -> str:
    import tomllib

    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def test_version_is_the_packages_version():
    import subprocess
    import sys

    import segdeploy
    from segdeploy.hostinfo import tool_versions

    proc = subprocess.run([sys.executable, "-m", "segdeploy", "--version"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == f"segdeploy {_pyproject_version()}"
    assert segdeploy.__version__ == _pyproject_version() == tool_versions()["segdeploy"]  # what manifests record


def test_version_of_a_source_tree_that_was_never_installed(monkeypatch):
    from importlib import metadata

    import segdeploy

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert segdeploy._version() == _pyproject_version()

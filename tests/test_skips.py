"""The suite's skip rule (tests/skips.py, enforced in tests/conftest.py): under CI=1 a skip for a missing package
or tool fails the run, at collection and in a test; a skip for absent hardware stays a skip; outside CI all skip."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import skips

TESTS = Path(__file__).resolve().parent

CASES = {
    "test_cases.py": """
import pytest
import skips

def test_missing_package():
    pytest.importorskip("no_such_package_here")

def test_missing_tool():
    pytest.skip("needs a tool that is not installed")

@skips.skipif(True, skips.NO_TENSORRT, "TensorRT is not installed")
def test_absent_hardware():
    pass

def test_present_hardware():
    skips.skip(skips.GPU_PRESENT, "this case is for machines without one")

def test_runs():
    pass
""",
    "test_module_level.py": """
import pytest
pytest.importorskip("no_such_package_either")

def test_never_collected():
    pass
""",
}


def run_pytest(folder: Path, ci: str | None, *files: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", *files],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("skiprule")
    for name in ("conftest.py", "skips.py", "real_tensorrt.py"):
        shutil.copy(TESTS / name, folder / name)
    for name, text in CASES.items():
        (folder / name).write_text(text)
    return folder


def test_under_ci_only_hardware_skips_pass(project):
    code, out = run_pytest(project, "1", "test_cases.py")
    assert code == 1, out
    assert "2 failed, 1 passed, 2 skipped" in out, out
    for name in ("test_missing_package", "test_missing_tool"):
        assert f"FAILED test_cases.py::{name}" in out, out
    assert "skipped under CI=1: could not import 'no_such_package_here'" in out, out
    # the reported line is the test's, not the helper's
    assert re.search(rf"SKIPPED \[1\] test_cases.py:\d+: {skips.NO_TENSORRT}: TensorRT is not installed", out), out
    assert re.search(rf"SKIPPED \[1\] test_cases.py:\d+: {skips.GPU_PRESENT}: this case is for machines", out), out


def test_under_ci_a_skipped_module_stops_the_run(project):
    code, out = run_pytest(project, "1", "test_module_level.py", "test_cases.py")
    assert code == 2, out  # a collection error: nothing runs
    assert "ERROR test_module_level.py" in out and "skipped under CI=1: could not import" in out, out


def test_outside_ci_every_skip_is_a_skip(project):
    code, out = run_pytest(project, None, "test_module_level.py", "test_cases.py")
    assert code == 0, out
    assert "1 passed, 5 skipped" in out, out


@pytest.mark.parametrize("value, ci", [("1", True), ("true", True), ("0", False), ("", False), ("false", False)])
def test_ci_is_any_value_but_off(monkeypatch, value, ci):
    monkeypatch.setenv("CI", value)
    assert skips.under_ci() is ci


def test_only_hardware_reasons_are_allowed():
    with pytest.raises(ValueError, match="only for absent"):
        skips.skip("openvino is not installed")
    assert skips.allowed_under_ci(f"{skips.NO_GPU}: torch sees no CUDA GPU")
    assert not skips.allowed_under_ci("could not import 'openvino': No module named 'openvino'")

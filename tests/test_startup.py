"""Start-up: --help, --version, every COMMAND --help and every argument error answer without importing PyTorch, ONNX,
ONNX Runtime or OpenVINO (seconds and hundreds of MB before the first word). How long they take and how much memory
is a benchmark (benchmarks/startup.py), not a test; what they import is checked here, each in a fresh interpreter."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from segdeploy.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnx", "onnxruntime", "openvino")

# Runs main(argv) and reports its exit code and which heavy modules it left imported.
PROBE = r"""
import json, sys
from segdeploy.cli import main
code = main(json.loads(sys.argv[1]))
heavy = sorted(name for name in json.loads(sys.argv[2]) if name in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""

COMMAND_NAMES = [name.replace("_", "-") for name in COMMANDS]
ARGUMENT_ERRORS = [
    ["bogus"],  # no such command
    ["export"],  # a required option missing
    ["export", "--model", "cgrseg_t", "--bogus"],  # an unknown option
    ["export", "--model", "cgrseg_t", "--fmt", "tflite"],  # not one of the choices
    ["export", "--model", "cgrseg_t", "--batch", "0"],  # a bad value
    ["predict", "--model", "cgrseg_t"],  # --source missing
    ["predict", "--model", "cgrseg_t", "--artifact", "x.onnx", "--source", "a.jpg"],  # mutually exclusive
    ["eval", "--model", "cgrseg_t"],  # --data missing
    ["validate"],  # the artifact missing
    ["bench", "--threads", "-1"],
    ["dataset", "synth"],  # --out missing
    ["fixtures", "--json"],  # an option without its value
]


def probe(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.stdout.strip(), proc.stderr
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "stderr": proc.stderr}


@pytest.mark.parametrize("argv", [["--help"], ["--version"]] + [[name, "--help"] for name in COMMAND_NAMES],
                         ids=lambda argv: " ".join(argv))
def test_help_and_version_import_nothing_heavy(argv):
    result = probe(argv)
    assert result["code"] == 0 and result["heavy"] == [], result


@pytest.mark.parametrize("argv", ARGUMENT_ERRORS, ids=lambda argv: " ".join(argv))
def test_argument_errors_import_nothing_heavy(argv):
    result = probe(argv)
    assert result["code"] == 2 and result["heavy"] == [], result
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0], result["stderr"]


def test_the_probe_sees_heavy_imports():
    """The check above can fail: a command that does its work imports what it needs."""
    result = probe(["info", "cgrseg_t", "--json", "-"])
    assert result["code"] == 0 and "torch" in result["heavy"], result

"""The GPU acceptance run (benchmarks/trt_acceptance.py) stops with one line where TensorRT or a GPU is missing;
its report names the machine's versions."""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "trt_acceptance.py")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import trt_acceptance  # noqa: E402


def test_missing_tensorrt_or_gpu_is_named():
    absent = SimpleNamespace(available=False, reason="the TensorRT Python package is not installed")
    assert "needs TensorRT and an NVIDIA GPU: the TensorRT Python package is not installed" in \
        trt_acceptance.missing_requirement(lambda name: absent, lambda i: object())
    present = SimpleNamespace(available=True, reason="")
    assert "needs an NVIDIA GPU" in trt_acceptance.missing_requirement(lambda name: present, lambda i: None)
    assert trt_acceptance.missing_requirement(lambda name: present, lambda i: object()) is None


def test_without_tensorrt_it_exits_with_one_line(tmp_path):
    from segdeploy.runtimes.registry import backend_status

    if backend_status("tensorrt").available:
        pytest.skip("TensorRT and a GPU are here; the acceptance itself runs on such machines")
    done = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("trt_acceptance.py: needs TensorRT and an NVIDIA GPU") and not os.listdir(tmp_path)


def test_markdown_names_the_versions_and_every_step():
    step = {"command": "python -m segdeploy export ...", "exit": 0, "seconds": 1.0, "last_line": "done"}
    failed = dict(step, exit=1, last_line="[E] out of memory")
    report = {"date": "2026-12-07", "versions": {"gpu": "NVIDIA L4", "compute_capability": "8.9", "platform": "x86_64",
                                                 "driver": "580.65", "cuda": "12.8", "tensorrt": "10.16.1.11",
                                                 "torch": "2.13.0", "commit": "abc1234"},
              "engines": [{"model": "cgrseg_t", "precision": "fp16", "dynamic": True,
                           "steps": {"export": step, "validate": failed, "bench": step}, "bench": None}],
              "cpp": [step]}
    text = trt_acceptance.markdown(report)
    for fragment in ("NVIDIA L4", "driver 580.65", "CUDA 12.8", "TensorRT 10.16.1.11", "| cgrseg_t | fp16 | dynamic",
                     "FAILED: [E] out of memory", "see the JSON report"):
        assert fragment in text

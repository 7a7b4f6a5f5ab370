"""The README's quick start, run as written in a fresh folder: export -> validate -> --fmt trt -> --fmt triton -> the
quick fixture -> INT8 on it -> eval, every step exit 0, none with --force, the later exports reusing the first.
Minutes (an export, an INT8 calibration, the quick fixture when it is not cached yet): `make test-full`."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def quick_start() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, flags=re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_the_quick_start_has_the_steps_the_issue_asks_for():
    steps = quick_start()
    assert [s.split()[1] for s in steps] == ["export", "validate", "export", "export", "fixtures", "export", "eval"]
    assert "--fmt trt" in steps[2] and "--fmt triton" in steps[3] and "--precision int8" in steps[5]
    assert not [s for s in steps if "--force" in s]


@pytest.mark.slow
def test_the_quick_start_runs_as_written(tmp_path):
    (tmp_path / "tests").mkdir()
    os.symlink(REPO / "tests" / "data", tmp_path / "tests" / "data")  # the photos it validates on
    env = dict(os.environ, PYTHONPATH=str(REPO))
    outputs = []
    for line in quick_start():
        argv = shlex.split(line)
        assert argv[0] == "segdeploy"
        done = subprocess.run([sys.executable, "-m", "segdeploy", *argv[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}\n{done.stdout[-3000:]}"
        outputs.append(done.stdout)
    assert "reused artifacts/cgrseg_t_256x256.onnx" in outputs[2] and "reused artifacts/cgrseg_t_256x256.onnx" in \
        outputs[3]
    assert "PASSED" in outputs[1] and "mIoU" in outputs[6]
    assert (tmp_path / "artifacts" / "triton" / "cgrseg_t" / "config.pbtxt").is_file()
    assert (tmp_path / "artifacts" / "cgrseg_t_256x256_int8_cpu.onnx").is_file()
    # the INT8 export again (same weights, calibration images and held-out set): reused, not calibrated again
    again = subprocess.run([sys.executable, "-m", "segdeploy", *shlex.split(quick_start()[5])[1:]], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0 and "reused artifacts/cgrseg_t_256x256_int8_cpu.onnx" in again.stdout, again.stderr

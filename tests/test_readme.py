"""The README's examples work as written: its Python blocks run, and every `segdeploy ...` command line it shows
(and every example in the commands' --help) parses with the real command line. Blocks marked ```py (they need a
server) are shown, not run."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from segdeploy.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def command_lines(text: str) -> list[str]:
    lines = []
    for line in text.replace("\\\n", " ").splitlines():  # join shell continuation lines
        line = line.strip().split("  #")[0].strip()
        if line.startswith("segdeploy ") and "<" not in line and "[" not in line:
            lines.append(line)
    return lines


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"block{i}" for i in range(len(PYTHON_BLOCKS))])
def test_python_examples_run(block):
    proc = subprocess.run([sys.executable, "-c", block], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_there_is_something_to_check():
    assert PYTHON_BLOCKS and len(command_lines(README)) >= 5


def _parses(line: str) -> None:
    try:
        build_parser().parse_args(shlex.split(line)[1:])
    except SystemExit as exc:  # argparse exits on an unknown flag or a missing argument
        raise AssertionError(f"does not parse: {line}") from exc


def test_readme_command_lines_parse():
    for line in command_lines(README):
        _parses(line)


def test_help_examples_parse():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    for name, sub in subparsers.choices.items():
        examples = command_lines(sub.epilog or "")
        assert examples, f"{name} --help shows no example"
        for line in examples:
            _parses(line)

"""The bad-input suite: every command against corrupt, truncated, empty, foreign and lying inputs, absurd sizes,
unwritable destinations, and concurrent and killed writers (see tests/hostile.py for the contract it checks).

One small real export (SegNeXt-T at 256x256, verified against PyTorch) is shared by the session; every corrupt
variant is made from a copy of it. At the end, a table of the suite's cases per area (passed, failed, skipped) is
printed: the counts the issue asks for, from the suite itself.
"""
from __future__ import annotations

import collections
from pathlib import Path

import pytest

from exports import export

SIZE = 256


@pytest.fixture(scope="session")
def artifact(tmp_path_factory) -> Path:
    """A real, verified segnext_t 256x256 ONNX artifact and its sidecar. Read-only: copy it before changing it."""
    folder = tmp_path_factory.mktemp("badinput_artifact")
    return Path(export("segnext_t", folder / "segnext_t.onnx", height=SIZE, width=SIZE).path)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """The test's own folder as the working directory (relative default outputs land here, not in the repo)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


_RESULTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def pytest_runtest_logreport(report):
    if "tests/badinput/" not in report.nodeid.replace("\\", "/"):
        return
    area = report.nodeid.split("::")[0].rsplit("/", 1)[-1].removeprefix("test_").removesuffix(".py")
    if report.when == "call":
        _RESULTS[area][report.outcome] += 1
    elif report.when == "setup" and report.outcome != "passed":
        _RESULTS[area]["skipped" if report.skipped else "failed"] += 1


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    write = terminalreporter.write_line
    write("")
    write(f"bad-input suite: {'area':<14} {'cases':>6} {'passed':>7} {'failed':>7} {'skipped':>8}")
    total = collections.Counter()
    for area in sorted(_RESULTS):
        counts = _RESULTS[area]
        cases = sum(counts.values())
        total.update(counts)
        write(f"                 {area:<14} {cases:>6} {counts['passed']:>7} {counts['failed']:>7} "
              f"{counts['skipped']:>8}")
    write(f"                 {'total':<14} {sum(total.values()):>6} {total['passed']:>7} {total['failed']:>7} "
          f"{total['skipped']:>8}")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/badinput/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.badinput)

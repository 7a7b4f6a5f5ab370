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


# ---------------------------------------------------------------------------------------------------------------
# Every published figure comes from a results file a benchmark script wrote (benchmarks/README.md, record.py)

RESULTS = REPO / "benchmarks" / "results"
DOCUMENTS = ("README.md", "benchmarks/README.md")
sys.path.insert(0, str(REPO / "benchmarks"))
import tables  # noqa: E402

# A measured figure: a number (or a range) with the unit of a ratio, a time, a share or an accuracy. Sizes (512x512)
# and inline code are not figures.
UNITS = {"×": "ratio", "x": "ratio", "ms": "ms", "%": "%", "mIoU": "points", "point": "points", "points": "points",
         "img/s": "img/s", "s": "s", "minutes": "minutes"}
FIGURE = re.compile(r"(?<![\w.\-/])(?P<value>\d+(?:\.\d+)?(?:\s?[–-]\s?\d+(?:\.\d+)?)?)\s?"
                    r"(?P<unit>×|x(?![\w×])|ms\b|%|mIoU\b|points?\b|img/s|s\b|minutes\b)|\b\d+m\d\ds\b")
SIZE = re.compile(r"\d+\s?[×x]\s?\d+")
CITED = re.compile(r"`(?:benchmarks/)?(?:results/)?([\w.*-]+\.(?:md|json))`")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def specification_figures(document: str = "README.md") -> set[tuple[str, str]]:
    """The figures of ``document`` that are settings of the code, not measurements: the tolerances and the INT8 speed
    target in README.md; the targets and the timing protocol's defaults in benchmarks/README.md."""
    import run_cpu_matrix

    from segdeploy.evaluation.bench import precision as pb
    from segdeploy.evaluation.bench import run as bench_run
    from segdeploy.evaluation.bench.memory import RssSampler
    from segdeploy.evaluation.bench.protocol import Protocol
    from segdeploy.evaluation.tolerances import TOLERANCES

    if document == "README.md":
        figures = {(f"{t.min_agreement * 100:g}", "%") for t in TOLERANCES.values()}
        figures |= {(f"{t.max_miou_drop:g}", "points") for t in TOLERANCES.values() if t.max_miou_drop is not None}
        return figures | {(f"{pb.SPEED_TARGET:g}", "ratio")}
    return {(f"{pb.SPEED_TARGET:g}", "ratio"), (f"{run_cpu_matrix.TARGET_ORT_OVER_EAGER:g}", "ratio"),
            (f"{Protocol().warmup_s:g}", "s"), (f"{Protocol().min_s:g}", "s"),
            (f"{RssSampler().interval_s * 1e3:g}", "ms"), (f"{bench_run.MAX_BATCH_MIN_GAIN * 100:g}", "%"),
            (f"{bench_run.MAX_BATCH_CALL_S:g}", "s")}


def paragraphs(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = tables.BLOCK.sub("", text)  # generated blocks: checked against their files as a whole
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def figures(paragraph: str) -> list[tuple[str, str]]:
    prose = SIZE.sub(" ", re.sub(r"`[^`]*`", " ", paragraph))
    return [(m["value"] or m.group(0), UNITS.get(m["unit"], "duration")) for m in FIGURE.finditer(prose)]


def cited_files(paragraph: str) -> list[Path]:
    return sorted({path for name in CITED.findall(paragraph) for path in RESULTS.glob(name)})


def numbers_in(path: Path) -> list[str]:
    """The numbers a results file shows: its report (.md) as printed, else every number of its JSON."""
    return NUMBER.findall(path.read_text(encoding="utf-8"))


def held(value: str, numbers: list[str]) -> bool:
    """A figure as quoted, without its sign, is one of the file's numbers as the file prints it (0.38 is +0.38, not
    0.384 nor 0.4); a whole number may round one (51 mIoU points: -51.16)."""
    decimals = len(value.partition(".")[2])
    return any(n.lstrip("-") == value or (decimals == 0 and f"{abs(float(n)):.0f}" == value) for n in numbers)


def untraced(document: str) -> list[str]:
    specs = specification_figures(document)
    problems = []
    for paragraph in paragraphs((REPO / document).read_text(encoding="utf-8")):
        found = [(v, u) for v, u in figures(paragraph) if (v, u) not in specs]
        if not found:
            continue
        files = cited_files(paragraph)
        numbers = [n for path in files for n in numbers_in(path)]
        for value, unit in found:
            ends = re.split(r"\s?[–-]\s?", value) if unit != "duration" else [value]
            if not files or not all(held(end, numbers) for end in ends):
                where = paragraph.strip().splitlines()[0][:70]
                problems.append(f"{document}: {value} {unit} in '{where}...' is in no results file it names "
                                f"({', '.join(p.name for p in files) or 'none named'})")
    return problems


def test_generated_tables_say_what_their_results_files_say():
    generated = 0
    for document in DOCUMENTS:
        text = (REPO / document).read_text(encoding="utf-8")
        generated += len(tables.blocks(text))
        assert tables.render(text) == text, f"{document}: python benchmarks/tables.py --write"
    assert generated >= 2


def test_every_figure_traces_to_a_results_file():
    assert untraced("README.md") == []
    assert untraced("benchmarks/README.md") == []


def test_an_untraced_figure_is_caught(tmp_path):
    specs = specification_figures()
    assert ("99.9", "%") in specs and ("1.3", "ratio") in specs
    cited = "On offseg_t, 1.37–1.39× (`precision-2026-12-01-offseg-proj*.md`)."
    assert figures(cited) == [("1.37–1.39", "ratio")]
    numbers = [n for path in cited_files(cited) for n in numbers_in(path)]
    assert held("1.37", numbers) and held("1.39", numbers) and not held("2.71", numbers)
    assert figures("512×512 at `--size 512`, 19m31s, 0.3–0.5× and 45 % of 2 threads") == [
        ("19m31s", "duration"), ("0.3–0.5", "ratio"), ("45", "%")]

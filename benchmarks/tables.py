"""The tables of measured figures in README.md and benchmarks/README.md, made from the results files they quote.

A generated block sits between two comments; the first names its generator and the results files (under
benchmarks/results/) it is made from, or ``latest`` for the newest file of that kind:

    <!-- results: precision-speedups precision-2026-12-01-rerun.json precision-2026-12-01-rerun-blocks.json -->

    | fixture | ...

    <!-- end results -->

    python benchmarks/tables.py            # check: exit 1 naming each block that differs from its files
    python benchmarks/tables.py --write    # rewrite the blocks from their files

tests/test_readme.py runs the check, and traces every other figure of both READMEs to a results file it names.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
DOCUMENTS = ("README.md", os.path.join("benchmarks", "README.md"))
BLOCK = re.compile(r"(<!-- results: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- end results -->)", re.S)


def load(name: str) -> dict:
    with open(os.path.join(RESULTS, name), encoding="utf-8") as f:
        return json.load(f)


def _fixture_label(name: str) -> str:
    return name.replace("_synth16", "").replace("_lowmargin", ", low margin")


def _rows(fixture: dict) -> dict:
    return {(r["precision"], r.get("backend")): r for r in fixture.get("rows", []) if r.get("status") == "ok"}


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}×"


# (column title, precision, backend): the speed-up of that row over the best FP32 CPU path of its run
SPEEDUP_COLUMNS = (("openvino flavour on OpenVINO", "int8-openvino", "openvino"),
                   ("cpu flavour on ONNX Runtime", "int8-cpu", "onnxruntime"),
                   ("tensorrt flavour on OpenVINO", "int8-tensorrt", "openvino"),
                   ("tensorrt flavour on ONNX Runtime", "int8-tensorrt", "onnxruntime"))


def precision_speedups(files: list[str]) -> str:
    """Per fixture: each INT8 flavour's speed-up over the best FP32 CPU path in every named run (single calls,
    blocks, ...), and the openvino flavour's mIoU delta to FP32 (the first run's; the graphs are the same)."""
    runs = [load(name) for name in files]
    runs = [run.get("results", run) if "run" in run else run for run in runs]  # record.py's layout, or the older
    labels = " / ".join("blocks" if run.get("block", 1) > 1 else "single" for run in runs)
    lines = ["| fixture | " + " | ".join(f"{title} ({labels})" for title, _, _ in SPEEDUP_COLUMNS)
             + " | INT8 mIoU delta |", "|---" * (len(SPEEDUP_COLUMNS) + 2) + "|"]
    for i, fixture in enumerate(runs[0]["fixtures"]):
        per_run = [_rows(run["fixtures"][i]) for run in runs]
        cells = [" / ".join(_ratio(rows.get((precision, backend), {}).get("speedup_vs_best_fp32"))
                            for rows in per_run) for _, precision, backend in SPEEDUP_COLUMNS]
        delta = per_run[0].get(("int8-openvino", "openvino"), {}).get("miou_delta")
        lines.append(f"| {_fixture_label(fixture['fixture'])} | " + " | ".join(cells)
                     + f" | {'-' if delta is None else f'{delta:+.2f}'} |")
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def make_test(files: list[str]) -> str:
    """The sentence on how long `make test` took, from benchmarks/make_test_time.py's run."""
    if not files:
        return ("No run of `python benchmarks/make_test_time.py` is recorded yet for this version of the suite.\n")
    data = load(files[0])
    run, results = data["run"], data["results"]
    pytest_part, ctest = results["pytest"], results["ctest"]
    skipped = f", {pytest_part['skipped']} skipped" if pytest_part.get("skipped") else ""
    setup = " (pip install included)" if results.get("install") else ""
    return (f"`make {results['target']}` took {_duration(results['wall_s'])} from a fresh clone{setup} on "
            f"{run['host']} ({run['cpu']['model']}, {run['cpu']['usable_cores']} usable cores, load average "
            f"{run['machine']['load_average'][0]:.1f} at the start): pytest {_duration(pytest_part['seconds'])} for "
            f"{pytest_part['passed']:,} tests{skipped}, then {ctest['tests']} CTest cases "
            f"(`{os.path.basename(files[0])}`, exit {results['exit_code']}).\n")


def startup(files: list[str]) -> str:
    """The sentence on start-up time and memory, from benchmarks/startup.py's run."""
    if not files:
        return "No run of `python benchmarks/startup.py` is recorded yet.\n"
    data = load(files[0])
    run, rows = data["run"], data["results"]["rows"]
    commands = [r for r in rows if r["command"].startswith("segdeploy ")]
    slowest = max(commands, key=lambda r: r["wall_s"]["median"])
    largest = max(commands, key=lambda r: r["rss_mb"]["median"])
    bare = next(r for r in rows if r["command"] == "python -c pass")
    return (f"On {run['host']} ({run['cpu']['model']}, load average {run['machine']['load_average'][0]:.1f} at the "
            f"start), the slowest of `--version`, `--help`, every `COMMAND --help` and the argument errors took "
            f"{slowest['wall_s']['median']:.2f} s (`{slowest['command']}`, median of {data['results']['repeat']} "
            f"fresh interpreters; `python -c pass` {bare['wall_s']['median']:.2f} s) and at most "
            f"{largest['rss_mb']['median']:.0f} MB peak RSS (`{os.path.basename(files[0])}`).\n")


GENERATORS = {"precision-speedups": (precision_speedups, "precision_matrix-*.json"),
              "make-test": (make_test, "make_test_time-*.json"),
              "startup": (startup, "startup-*.json")}


def resolve(spec: str) -> tuple[str, list[str]]:
    """A block's generator and files; ``latest`` is the newest results file of the generator's kind."""
    kind, *files = spec.split()
    if kind not in GENERATORS:
        raise SystemExit(f"tables.py: unknown generator {kind!r} (known: {', '.join(GENERATORS)})")
    if files == ["latest"]:
        found = sorted(glob.glob(os.path.join(RESULTS, GENERATORS[kind][1])), key=_started)
        files = [os.path.basename(found[-1])] if found else []
    return kind, files


def _started(path: str) -> tuple[str, float]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)["run"]["started"], os.path.getmtime(path)  # two runs in one second: the later written


def render(text: str) -> str:
    def block(match: re.Match) -> str:
        kind, files = resolve(match["spec"])
        return match.group(1) + "\n" + GENERATORS[kind][0](files) + "\n" + match.group(4)  # blank lines: Markdown
    return BLOCK.sub(block, text)


def blocks(text: str) -> list[tuple[str, list[str], str]]:
    """Each generated block of ``text``: its generator, its files and its current body."""
    return [(*resolve(m["spec"]), m["body"]) for m in BLOCK.finditer(text)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="rewrite the blocks (default: check them)")
    args = p.parse_args(argv)
    stale = []
    for document in DOCUMENTS:
        path = os.path.join(ROOT, document)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        fresh = render(text)
        if fresh != text:
            stale.append(document)
            if args.write:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(fresh)
    if stale:
        print(("rewrote: " if args.write else "differs from its results files: ") + ", ".join(stale))
    return 1 if stale and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())

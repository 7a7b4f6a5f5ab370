"""How long `segdeploy --help`, `--version`, every `COMMAND --help` and argument errors take, and how much memory,
in fresh interpreters: wall time, peak RSS and the import time Python itself reports (`python -X importtime`).

    python benchmarks/startup.py [--repeat 7] [--note "what else ran"]

Each case runs --repeat times, interleaved (case 1..n, then again), so that the load of a shared machine hits all
alike; the report gives medians (and the spread) next to the bare interpreter's (`python -c pass`). It also lists
the heavy modules (PyTorch, ONNX, ONNX Runtime, OpenVINO, NumPy) each case imported; tests/test_startup.py asserts
that the first four stay out. Results: a new benchmarks/results/startup-<date>-<host>-<run id>.{json,md} per run
(benchmarks/record.py: the command line, the commit, the CPU and its flags, the versions, the load).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HEAVY = ("torch", "onnx", "onnxruntime", "openvino", "numpy")
TARGET_S, TARGET_MB = 0.5, 60
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")


def cases() -> list[list[str]]:
    sys.path.insert(0, ROOT)
    from segdeploy.cli import COMMANDS

    return ([["--version"], ["--help"]] + [[c.replace("_", "-"), "--help"] for c in COMMANDS]
            + [["export"], ["export", "--model", "cgrseg_t", "--batch", "0"], ["predict", "--model", "cgrseg_t"]])


# The child reports its own peak RSS (VmHWM of the memory map exec gave it) as it exits. The rusage of a child
# is no measure on Linux: a forked child's high-water mark starts at its parent's RSS and survives exec.
PEAK_PROBE = """import atexit, sys
def _peak():
    with open('/proc/self/status') as f:
        sys.stderr.write(''.join('STARTUP-PEAK ' + l.split()[1] + chr(10) for l in f if l.startswith('VmHWM:')))
atexit.register(_peak)
"""
PEAK_LINE = re.compile(r"^STARTUP-PEAK (\d+)$", re.M)


def child_code(argv: list[str]) -> str:
    """``python -c pass`` or ``python -m segdeploy ARGS`` run behind the peak probe."""
    if argv[0] == "-c":
        return PEAK_PROBE + argv[1]
    return PEAK_PROBE + f"import runpy; sys.argv = {['segdeploy', *argv[2:]]!r}; " \
                        "runpy.run_module('segdeploy', run_name='__main__', alter_sys=True)"


def run_once(argv: list[str]) -> dict:
    """One fresh interpreter: wall seconds, peak RSS (MB), total import seconds and the heavy modules imported."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", child_code(argv)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    stderr = proc.stderr.decode("utf-8", "replace")
    peak = PEAK_LINE.search(stderr)
    imports_us, modules = 0, set()
    for line in stderr.splitlines():
        found = IMPORT_LINE.match(line)
        if found:
            modules.add(found.group(4).split(".")[0])
            if not found.group(3):  # a top-level import: its cumulative time covers everything below it
                imports_us += int(found.group(2))
    return {"code": proc.returncode, "wall_s": wall, "rss_mb": int(peak.group(1)) / 1024 if peak else None,
            "imports_s": imports_us / 1e6,
            "heavy": sorted(m for m in HEAVY if m in modules)}


def summarise(runs: list[dict]) -> dict:
    def stat(key):
        values = [r[key] for r in runs]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {"wall_s": stat("wall_s"), "rss_mb": stat("rss_mb"), "imports_s": stat("imports_s"),
            "codes": sorted({r["code"] for r in runs}), "heavy": runs[0]["heavy"]}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Start-up", "",
             f"Python {m['python']}, segdeploy {m['segdeploy']}. Each case ran {report['repeat']} times in fresh "
             f"interpreters, interleaved; medians (min-max). Targets: under {TARGET_S} s and {TARGET_MB} MB.", ""]
    if report.get("note"):
        lines += [report["note"], ""]
    lines += ["| command | wall s | peak RSS MB | imports s | exit | heavy modules imported |",
              "|---|---|---|---|---|---|"]
    for row in report["rows"]:
        w, r, i = row["wall_s"], row["rss_mb"], row["imports_s"]
        lines.append(f"| `{row['command']}` | {w['median']:.3f} ({w['min']:.3f}-{w['max']:.3f}) | "
                     f"{r['median']:.1f} ({r['min']:.1f}-{r['max']:.1f}) | {i['median']:.3f} | "
                     f"{','.join(map(str, row['codes']))} | {', '.join(row['heavy']) or 'none'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="folder of the results files")
    parser.add_argument("--note", default="", help="a sentence for the report (e.g. what else ran on the machine)")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    import record
    import segdeploy

    run = record.start("startup", args, out_dir=args.out)

    argvs = [["-c", "pass"]] + [["-m", "segdeploy", *argv] for argv in cases()]
    runs: dict[int, list[dict]] = {i: [] for i in range(len(argvs))}
    for _ in range(args.repeat):
        for i, argv in enumerate(argvs):
            runs[i].append(run_once(argv))
    rows = [{"command": "python -c pass" if argv[0] == "-c" else "segdeploy " + " ".join(argv[2:]),
             **summarise(runs[i])} for i, argv in enumerate(argvs)]
    report = {"repeat": args.repeat, "note": args.note, "targets": {"wall_s": TARGET_S, "rss_mb": TARGET_MB},
              "machine": {"python": platform.python_version(), "segdeploy": segdeploy.__version__,
                          "os": platform.platform()},
              "rows": rows, "samples": {rows[i]["command"]: runs[i] for i in runs}}
    print(markdown(report))
    for path in run.write(report, markdown(report)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

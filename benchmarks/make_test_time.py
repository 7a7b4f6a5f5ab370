"""How long `make test` takes from a fresh clone: the figure the README states, measured the way CI runs it.

Clones the checkout's HEAD into a temporary folder, runs `make test` there with CI=1 (so every test that CI has the
packages for runs, and only TensorRT/GPU tests may skip), and records the wall time, pytest's counts and time, the
CTest count and the exit code in a new results file (benchmarks/record.py: results/make_test_time-<date>-<host>-<run
id>.json, with the command, the commit and the machine). The clone's own code is what runs (PYTHONPATH points at
it), whatever checkout the environment's editable install points at. Needs a quiet machine to mean anything; then
`python benchmarks/tables.py --write` quotes it in the README.

    python benchmarks/make_test_time.py              # make test in an environment already set up (no pip install)
    python benchmarks/make_test_time.py --install    # with make's install step, as on a fresh machine: it points the
                                                     # environment's editable install at the temporary clone
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import record

PYTEST_SUMMARY = re.compile(r"^=*\s*(?P<counts>(?:\d+ \w+(?:, )?)+) in (?P<seconds>[\d.]+)s", re.M)
CTEST_SUMMARY = re.compile(r"(\d+)% tests passed, (\d+) tests failed out of (\d+)")


def parse_pytest(log: str) -> dict:
    matches = list(PYTEST_SUMMARY.finditer(log))
    if not matches:
        return {"seconds": None, "passed": None}
    last = matches[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last["counts"])}
    return {"seconds": float(last["seconds"]), "summary": last.group(0).strip("= "), **counts}


def parse_ctest(log: str) -> dict:
    found = CTEST_SUMMARY.findall(log)
    return {"tests": int(found[-1][2]), "failed": int(found[-1][1])} if found else {"tests": None, "failed": None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="test", help="the make target (default: test)")
    p.add_argument("--install", action="store_true",
                   help="run make's install step too (pip install -e .[dev] from the clone; default: the clone's "
                        "install stamp is made first, so no make, sub-makes included, installs: the environment as "
                        "it is)")
    p.add_argument("--out", default=record.RESULTS, help="folder of the results files (default: benchmarks/results)")
    args = p.parse_args(argv)
    run = record.start("make_test_time", args, out_dir=args.out, argv=None if argv is None else [__file__, *argv])
    with tempfile.TemporaryDirectory(prefix="segdeploy-clone-") as tmp:
        clone = os.path.join(tmp, "segdeploy")
        subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", record.ROOT, clone], check=True)
        env = dict(os.environ, CI="1", PYTHONPATH=clone)
        if not args.install:  # `make -o` would not reach the sub-makes (test-cpp), which would then install
            os.makedirs(os.path.join(clone, ".make"))
            Path(clone, ".make", "installed").touch()
        make = ["make", args.target]
        started = time.perf_counter()
        done = subprocess.run(make, cwd=clone, env=env, capture_output=True, text=True)
        wall_s = time.perf_counter() - started
    log = done.stdout + done.stderr
    results = {"target": args.target, "install": args.install, "exit_code": done.returncode,
               "wall_s": round(wall_s, 1), "pytest": parse_pytest(log), "ctest": parse_ctest(log),
               "skip_reasons": re.findall(r"^SKIPPED \[\d+\] (.*)$", log, flags=re.M), "log_tail": log[-4000:]}
    for path in run.write(results):
        print(f"wrote {path}")
    print(f"make {args.target}: exit {done.returncode} after {wall_s:.0f} s; pytest {results['pytest']}, "
          f"ctest {results['ctest']}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())

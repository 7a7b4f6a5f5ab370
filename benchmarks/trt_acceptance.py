"""The TensorRT acceptance run, for a machine with TensorRT and an NVIDIA GPU (a workstation, a server or a Jetson).

For each T variant, static and dynamic, it exports FP32, FP16 and INT8 (TensorRT flavour) engines with
``segdeploy export --fmt trt``, checks each against PyTorch with ``segdeploy validate`` and its precision's tolerance,
times it with ``segdeploy bench`` (the papers' V100 figures beside), then builds the C++ library with its TensorRT
backend (cpp/install-deps.sh, CMake -DSEGDEPLOY_WITH_TENSORRT=ON) and runs its CTest suite. One Markdown and one JSON
report name the GPU, driver, CUDA, TensorRT and torch versions and every command that ran. A step that fails is
recorded with its last line and the run goes on; the exit code is 1 when any step failed.

Without TensorRT or an NVIDIA GPU it stops at once with one line (exit 2): nothing here can run on a CPU.

    python benchmarks/trt_acceptance.py                          # all T variants, reports in benchmarks/results
    python benchmarks/trt_acceptance.py --models cgrseg_t --out /tmp/acceptance --calib data/train_images
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import record  # noqa: E402

PRECISIONS = ("fp32", "fp16", "int8")
SIZE = "512x512"


def missing_requirement(backend_status=None, gpu_info=None) -> str | None:
    """Why this machine cannot run the acceptance, or None."""
    from segdeploy.runtimes.registry import backend_status as status_of
    from segdeploy.tensorrt_host import gpu_info as gpu_of

    status = (backend_status or status_of)("tensorrt")
    if not status.available:
        return f"needs TensorRT and an NVIDIA GPU: {status.reason}"
    if (gpu_info or gpu_of)(0) is None:
        return "needs an NVIDIA GPU: neither torch, nvidia-smi nor a Jetson device tree reports one"
    return None


def versions() -> dict:
    import torch

    from segdeploy.tensorrt_host import gpu_info, host_platform

    gpu = gpu_info(0)
    driver = None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
        driver = done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    import tensorrt

    return {"gpu": gpu.name if gpu else None, "compute_capability": gpu.compute_capability if gpu else None,
            "driver": driver or "unknown (no nvidia-smi; a Jetson reports it in /etc/nv_tegra_release)",
            "cuda": torch.version.cuda, "tensorrt": tensorrt.__version__, "torch": torch.__version__,
            "platform": host_platform().name}


def run_step(argv: list[str], log) -> dict:
    log(f"$ {shlex.join(argv)}")
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in (done.stdout + "\n" + done.stderr).splitlines() if line.strip()]
    step = {"command": shlex.join(argv), "exit": done.returncode, "seconds": round(time.perf_counter() - start, 1),
            "last_line": lines[-1][:300] if lines else ""}
    log(f"  exit {done.returncode} in {step['seconds']} s: {step['last_line']}")
    return step


def segdeploy(*args) -> list[str]:
    return [sys.executable, "-m", "segdeploy", *args]


def engine_rows(models, out, calib, log) -> list[dict]:
    rows = []
    for model in models:
        for dynamic in (False, True):
            for precision in PRECISIONS:
                stem = os.path.join(out, "engines", f"{model}_{precision}{'_dynamic' if dynamic else ''}")
                engine = stem + ".engine"
                export = ["export", "--model", model, "--fmt", "trt", "--size", SIZE, "--precision", precision,
                          "--output", engine, "--force"] + (["--dynamic"] if dynamic else [])
                if precision == "int8":
                    export += ["--calib", calib]
                row = {"model": model, "precision": precision, "dynamic": dynamic, "engine": engine,
                       "steps": {"export": run_step(segdeploy(*export), log)}}
                if row["steps"]["export"]["exit"] == 0:
                    row["steps"]["validate"] = run_step(segdeploy(
                        "validate", engine, "--n", "4", "--images", os.path.join(ROOT, "tests", "data", "images"),
                        "--json", stem + ".validate.json", "--force"), log)
                    row["steps"]["bench"] = run_step(segdeploy(
                        "bench", "--artifact", engine, "--batch", "1", "--min-s", "3", "--json", stem + ".bench.json",
                        "--force"), log)
                    row.update(_read_results(stem))
                rows.append(row)
    return rows


def _read_results(stem) -> dict:
    found = {}
    for kind in ("validate", "bench"):
        try:
            with open(f"{stem}.{kind}.json") as f:
                found[kind] = json.load(f)
        except (OSError, ValueError):
            found[kind] = None
    return found


def cpp_steps(out, log) -> list[dict]:
    build, deps = os.path.join(out, "cpp-trt"), os.path.join(ROOT, "build", "cpp-deps")
    steps = [run_step(["bash", os.path.join(ROOT, "cpp", "install-deps.sh"), deps], log)]
    steps.append(run_step(["cmake", "-S", os.path.join(ROOT, "cpp"), "-B", build, "-DCMAKE_BUILD_TYPE=Release",
                           f"-DSEGDEPLOY_DEPS_DIR={deps}", "-DSEGDEPLOY_WITH_TENSORRT=ON",
                           f"-DSEGDEPLOY_PYTHON={sys.executable}"]
                          + ([f"-DTENSORRT_ROOT={os.environ['TENSORRT_ROOT']}"] if os.environ.get("TENSORRT_ROOT")
                             else []), log))
    steps.append(run_step(["cmake", "--build", build, f"-j{os.cpu_count() or 2}"], log))
    steps.append(run_step(["ctest", "--test-dir", build, "--output-on-failure"], log))
    return steps


def _bench_cell(bench) -> str:
    """p50 latency and throughput, with the paper's figure beside (bench's own flat row)."""
    from segdeploy.evaluation.bench.reports import flat_row

    try:
        row = flat_row(bench["results"][0])
        text = f"{row['latency_p50_ms']:.2f} ms, {row['throughput_ips']:.1f} img/s"
        if row.get("paper_ips"):
            text += f" (paper: {row['paper_ips']} img/s on {row['paper_device']}, {row['paper_label']})"
        return text
    except (KeyError, IndexError, TypeError, ValueError):
        return "see the JSON report"


def markdown(report) -> str:
    v = report["versions"]
    lines = ["# TensorRT acceptance", "",
             f"GPU {v['gpu']} (SM {v['compute_capability']}, {v['platform']}), driver {v['driver']}, CUDA {v['cuda']}, "
             f"TensorRT {v['tensorrt']}, torch {v['torch']}, commit {v['commit']}.", "",
             "| model | precision | shapes | export | validate | latency (bench, batch 1) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in report["engines"]:
        steps = row["steps"]
        status = {k: ("ok" if s["exit"] == 0 else f"FAILED: {s['last_line']}") for k, s in steps.items()}
        lines.append(f"| {row['model']} | {row['precision']} | {'dynamic' if row['dynamic'] else 'static'} | "
                     f"{status['export']} | {status.get('validate', '-')} | "
                     f"{_bench_cell(row.get('bench')) if 'bench' in steps else '-'} |")
    lines += ["", "C++ library with its TensorRT backend:", ""]
    lines += [f"- `{s['command']}`: {'ok' if s['exit'] == 0 else 'FAILED'} ({s['last_line']})" for s in report["cpp"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from segdeploy import models as registry

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(n for n in registry.list_models()
                                                     if registry.get_spec(n).variant == "T"),
                        help="comma-separated models (default: every T variant)")
    parser.add_argument("--calib", default=os.path.join(ROOT, "tests", "data", "images"),
                        help="INT8 calibration images (default: the test photos)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"),
                        help="where the report (trt_acceptance-<date>-<host>-<run id>.md/.json) and the engines go")
    parser.add_argument("--no-cpp", dest="cpp", action="store_false", help="skip the C++ build and CTest")
    args = parser.parse_args(argv)
    problem = missing_requirement()
    if problem:
        print(f"trt_acceptance.py: {problem}; run it on a machine with TensorRT and an NVIDIA GPU", file=sys.stderr)
        return 2
    run = record.start("trt_acceptance", args, out_dir=args.out, argv=[__file__, *(sys.argv[1:] if argv is None
                                                                                   else argv)])
    os.makedirs(os.path.join(args.out, "engines"), exist_ok=True)
    report = {"versions": versions(), "engines": [], "cpp": []}
    report["engines"] = engine_rows([m for m in args.models.split(",") if m], args.out, args.calib, print)
    if args.cpp:
        report["cpp"] = cpp_steps(args.out, print)
    for path in run.write(report, markdown(report)):
        print(f"wrote {path}")
    failed = [s for row in report["engines"] for s in row["steps"].values() if s["exit"] != 0]
    failed += [s for s in report["cpp"] if s["exit"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

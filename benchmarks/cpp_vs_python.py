"""End to end, C++ against Python, on one artifact: read the image, preprocess, infer, resize the logits and argmax
to the image's size, per image, one request at a time, with the same ONNX Runtime (the onnxruntime wheel's
libonnxruntime on both sides) and the same thread count.

    python benchmarks/cpp_vs_python.py --infer build/cpp/segdeploy-infer --artifact artifacts/cgrseg_t_512x512.onnx

C++ is segdeploy-infer on a folder of N links to the photo (it prints each image's stage times); Python is
segdeploy.preprocess (cv2) + onnxruntime + preprocess.logits_to_mask (torch), timed the same way. The two run in
alternating rounds so that a change in the machine's load hits both. Each run writes a new results file
(benchmarks/record.py: results/cpp_vs_python-<date>-<host>-<run id>.json and .md) with the command, the commit, the
machine and every image's stage times.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch

import record
from segdeploy import preprocess
from segdeploy.artifact import read_manifest

STAGES = ("read", "preprocess", "infer", "postprocess", "total")
LINE = re.compile(r"read ([\d.]+) ms  preprocess ([\d.]+) ms  infer ([\d.]+) ms  postprocess ([\d.]+) ms  "
                  r"total ([\d.]+) ms")


def cpp_round(binary: str, artifact: str, image: str, n: int, threads: int, work: str) -> list[dict]:
    folder = os.path.join(work, "images")
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.splitext(image)[1]
    for i in range(n):
        link = os.path.join(folder, f"{i:04d}{suffix}")
        if not os.path.exists(link):
            os.symlink(os.path.abspath(image), link)
    run = subprocess.run([binary, artifact, folder, "-o", os.path.join(work, "out"), "--force",
                          "--threads", str(threads)], capture_output=True, text=True, check=True)
    return [dict(zip(STAGES, map(float, m.groups()))) for m in LINE.finditer(run.stdout)]


def python_round(session, manifest, image_path: str, n: int) -> list[dict]:
    pre = manifest.preprocessing
    batch, h, w = manifest.profile.opt
    rows = []
    for _ in range(n):
        t0 = time.perf_counter()
        image = preprocess.read_image(image_path)
        t1 = time.perf_counter()
        x = preprocess.prepare(image, pre, (h, w))
        t2 = time.perf_counter()
        logits = session.run([manifest.output.name], {manifest.input.name: x})[0]
        t3 = time.perf_counter()
        preprocess.logits_to_mask(logits, image.shape[:2], pre.align_corners)
        t4 = time.perf_counter()
        times = [1e3 * (b - a) for a, b in ((t0, t1), (t1, t2), (t2, t3), (t3, t4))]
        rows.append(dict(zip(STAGES, [*times, sum(times)])))
    return rows


def summary(rows: list[dict], stage: str) -> tuple[float, float]:
    values = [r[stage] for r in rows]
    return statistics.median(values), float(np.mean(values))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--infer", required=True, help="the segdeploy-infer binary")
    p.add_argument("--artifact", required=True, help="a static logits export (cgrseg_t 512x512)")
    p.add_argument("--image", default="tests/data/images/grace_hopper.jpg")
    p.add_argument("--images", type=int, default=20, help="images per round and side")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3, help="images dropped at the start of every round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=record.RESULTS, help="folder of the results files (default: benchmarks/results)")
    args = p.parse_args()
    run = record.start("cpp_vs_python", args, out_dir=args.out)

    manifest = read_manifest(args.artifact)
    if not manifest.profile.static or manifest.output.kind != "logits":
        sys.exit("cpp_vs_python.py: error: give a static export with logits output")
    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(args.artifact, options, providers=["CPUExecutionProvider"])
    load_before = os.getloadavg()
    cpp, python = [], []
    with tempfile.TemporaryDirectory() as work:
        for r in range(args.rounds):
            cpp += cpp_round(args.infer, args.artifact, args.image, args.images + args.warmup, args.threads,
                             work)[args.warmup:]
            python += python_round(session, manifest, args.image, args.images + args.warmup)[args.warmup:]
            print(f"round {r + 1}/{args.rounds}: C++ total p50 {summary(cpp, 'total')[0]:.1f} ms, "
                  f"Python {summary(python, 'total')[0]:.1f} ms", flush=True)
    load_after = os.getloadavg()

    h, w = preprocess.read_image(args.image).shape[:2]
    lines = [
        f"# C++ vs Python end to end: {manifest.model.name} {manifest.profile.height.opt}x"
        f"{manifest.profile.width.opt}, ONNX Runtime CPU",
        "",
        f"- CPU: {run.header['cpu']['model']}, {os.cpu_count()} logical cores; {args.threads} threads on both sides "
        f"(ONNX Runtime intra-op; torch for Python's resize+argmax, OpenCV's pool for C++'s)",
        f"- load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f}"
        + (" (above the core count: other work shared the cores, so absolute times are inflated; the sides ran in "
           "alternating rounds, so their ratio is the result)" if max(load_before[0], load_after[0]) > os.cpu_count()
           else ""),
        f"- ONNX Runtime {ort.__version__} (the wheel's library in both), torch {torch.__version__}, "
        f"Python {platform.python_version()}",
        f"- image: {os.path.basename(args.image)} ({h}x{w}), mask at the image's size; {args.rounds} alternating "
        f"rounds of {args.images} images a side after {args.warmup} warm-up images each",
        "- stages: read = cv2.imread / cv::imread; preprocess = resize + normalise to NCHW float; infer = "
        "session run; postprocess = bilinear resize of the logits to the image size + argmax",
        "",
        "| stage | C++ p50 (ms) | C++ mean (ms) | Python p50 (ms) | Python mean (ms) | Python / C++ (p50) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for stage in STAGES:
        c, py = summary(cpp, stage), summary(python, stage)
        ratio = py[0] / c[0] if c[0] > 0 else float("nan")
        lines.append(f"| {stage} | {c[0]:.1f} | {c[1]:.1f} | {py[0]:.1f} | {py[1]:.1f} | {ratio:.2f}x |")
    lines.append("")
    report = "\n".join(lines)
    print(report)
    results = {"artifact": args.artifact, "image": args.image, "threads": args.threads, "rounds": args.rounds,
               "images": args.images, "warmup": args.warmup, "load_before": list(load_before),
               "load_after": list(load_after), "samples_ms": {"cpp": cpp, "python": python}}
    for path in run.write(results, report):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

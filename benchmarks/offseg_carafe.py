"""OffSeg's exportable FreqFusion (plain-op CARAFE, gather-based sampler) in ONNX Runtime vs PyTorch eager.

Exports offseg_t (golden-recipe weights) at 512x512 with torch.onnx.export (opset 17 by default) + onnxsim, counts the
graph's nodes by op type, and times PyTorch eager (NCHW and channels_last) and ONNX Runtime (CPU EP, full graph
optimisation) with the same thread count: warm-up calls, then the median of several timed calls, alternating the
backends so that a change in machine load hits both. ``--profile`` adds ORT's per-op-type kernel time. A benchmark,
not a test; run it on a quiet machine. Each run writes a new results file (benchmarks/record.py:
results/offseg_carafe-<date>-<host>-<run id>.json and .md) with the command, the commit, the machine and every timed
call:

    python benchmarks/offseg_carafe.py
    python benchmarks/offseg_carafe.py --threads 1,2 --profile
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

import record  # noqa: E402
from segdeploy import models  # noqa: E402
from segdeploy.hostinfo import cpu_info  # noqa: E402

TARGET_ORT_OVER_EAGER = 1.5  # the goal, not a test


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="offseg_t")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--threads", default="2", help="comma-separated thread counts, e.g. 1,2 (one table row each)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--profile", action="store_true", help="add ORT's kernel time per op type (separate session)")
    p.add_argument("--out", default=record.RESULTS, help="folder of the results files (default: benchmarks/results)")
    return p.parse_args(argv)


def export(model: torch.nn.Module, x: torch.Tensor, opset: int) -> tuple[onnx.ModelProto, int]:
    from onnxsim import simplify

    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, opset_version=opset, input_names=["input"], output_names=["logits"],
                      dynamo=False)
    traced = onnx.load_from_string(buffer.getvalue())
    simplified, ok = simplify(traced)
    if not ok:
        raise RuntimeError("onnxsim could not verify the simplified graph")
    return simplified, len(traced.graph.node)


def session(proto: onnx.ModelProto, threads: int, profile_prefix: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def time_alternating(calls: dict, warmup: int, runs: int) -> dict[str, list[float]]:
    for _ in range(warmup):
        for call in calls.values():
            call()
    times = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(1000 * (time.perf_counter() - start))
    return times


def kernel_time_by_op(sess: ort.InferenceSession, feed: dict, runs: int) -> list[tuple[str, float]]:
    for _ in range(runs):
        sess.run(None, feed)
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    per_op = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1000
    # the first run (allocations) is in the profile too; divide by all runs, warm-up included
    return [(op, total / (runs + 1)) for op, total in per_op.most_common()]


def main(argv=None) -> int:
    args = parse_args(argv)
    run = record.start("offseg_carafe", args, out_dir=args.out, argv=None if argv is None else [__file__, *argv])
    thread_counts = [int(t) for t in args.threads.split(",")]
    torch.set_num_threads(thread_counts[0])
    model = models.load_recipe_weights(models.create(args.model))
    channels_last = models.load_recipe_weights(models.create(args.model)).to(memory_format=torch.channels_last)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, args.size, args.size), dtype=np.float32))
    x_cl = x.to(memory_format=torch.channels_last)
    feed = {"input": x.numpy()}
    load_before = os.getloadavg()

    start = time.perf_counter()
    proto, traced_nodes = export(model, x, args.opset)
    export_s = time.perf_counter() - start
    ops = collections.Counter(node.op_type for node in proto.graph.node)

    rows, max_diff = [], 0.0
    for threads in thread_counts:
        torch.set_num_threads(threads)
        sess = session(proto, threads)
        with torch.no_grad():
            max_diff = max(max_diff, float(np.abs(sess.run(None, feed)[0] - model(x).numpy()).max()))
            times = time_alternating({
                "eager NCHW": lambda: model(x),
                "eager channels_last": lambda: channels_last(x_cl),
                "onnxruntime": lambda sess=sess: sess.run(None, feed),
            }, args.warmup, args.runs)
        medians = {name: statistics.median(t) for name, t in times.items()}
        best_eager = min(medians["eager NCHW"], medians["eager channels_last"])
        rows.append((threads, times, best_eager / medians["onnxruntime"]))
    load_after = os.getloadavg()

    lines = [
        f"# {args.model}: exportable FreqFusion / CARAFE in ONNX Runtime vs PyTorch eager",
        "",
        f"Input 1x3x{args.size}x{args.size}, golden-recipe weights, torch and ORT with the same intra-op thread "
        f"count, opset {args.opset} + onnxsim, {args.warmup} warm-up and {args.runs} timed calls per backend, "
        "alternating; median (min-max) ms.",
        "",
        f"* machine: {cpu_info()}, {os.cpu_count()} logical CPUs; {platform.platform()}",
        f"* load average (1/5/15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}; after: "
        f"{', '.join(f'{v:.2f}' for v in load_after)}",
        f"* torch {torch.__version__}, onnxruntime {ort.__version__}, onnx {onnx.__version__}",
        f"* export + simplify: {export_s:.1f} s; nodes {traced_nodes} traced -> {len(proto.graph.node)} simplified",
        f"* max |ORT - eager| logits: {max_diff:.2e}",
        "",
        "| threads | eager NCHW | eager channels_last | onnxruntime | ORT speed-up over the faster eager |",
        "|---:|---:|---:|---:|---:|",
    ]
    for threads, times, ratio in rows:
        cells = [f"{statistics.median(t):.1f} ({min(t):.1f}-{max(t):.1f})" for t in times.values()]
        lines.append(f"| {threads} | {' | '.join(cells)} | **{ratio:.2f}x** |")
    lines += ["", f"Goal: ONNX Runtime >= {TARGET_ORT_OVER_EAGER}x the faster eager layout.", "",
              "Nodes by op type (simplified graph):", "", ", ".join(f"{op} {n}" for op, n in ops.most_common()), ""]
    per_op = None
    if args.profile:
        threads = thread_counts[-1]
        with tempfile.TemporaryDirectory() as tmp:
            per_op = kernel_time_by_op(session(proto, threads, os.path.join(tmp, "ort")), feed, args.runs)
        total = sum(ms for _, ms in per_op)
        lines += [f"ORT kernel time per op type at {threads} threads (ms per call, share):", "",
                  "| op | ms | share |", "|---|---:|---:|"]
        lines += [f"| {op} | {ms:.1f} | {100 * ms / total:.1f}% |" for op, ms in per_op[:15]]
        lines.append("")
    report = "\n".join(lines)
    print(report)
    results = {"model": args.model, "size": args.size, "opset": args.opset, "export_s": export_s,
               "nodes_traced": traced_nodes, "nodes": dict(ops), "max_abs_diff": max_diff,
               "load_before": list(load_before), "load_after": list(load_after),
               "rows": [{"threads": threads, "speedup": ratio, "samples_ms": times} for threads, times, ratio in rows],
               "ort_kernel_ms_per_op": per_op}
    for path in run.write(results, report):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

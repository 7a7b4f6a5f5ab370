"""FP32 / FP16 / INT8 (cpu, openvino and TensorRT flavours) on the trained fixtures: size, validation mIoU and its
delta to FP32, pixel agreement with FP32, latency and img/s on ONNX Runtime and OpenVINO, and the speed-up of the
fastest CPU INT8 artifact (cpu or openvino flavour) over the best FP32 CPU path against the 1.3x target.

Per fixture (made by ``segdeploy fixtures``; a missing one is skipped with a note): each precision is exported from
the fixture's checkpoint at SIZE x SIZE (INT8 calibrated on COUNT images of the training split, so the validation
split the mIoU is measured on is held out), its accuracy is measured on every backend by
segdeploy.evaluation.bench.precision (the same code as ``segdeploy bench --precision ... --data``), then all rows of
the fixture are timed together, round-robin, one call each per round, so a load that comes and goes on a shared
machine hits every row alike; p50 and min of the rounds are reported. An "off-the-shelf" row quantizes the same
FP32 graph with ONNX Runtime's ``quantize_static`` defaults (QDQ, per-tensor weights, every operator, MinMax) on the
same calibration images, for reference. A benchmark, not a test: each run writes a new results file
(benchmarks/record.py: results/precision_matrix-<date>-<host>-<run id>.json and .md) with the command, the commit,
the machine, its load and every timed call.

    python benchmarks/precision_matrix.py                                 # every fixture
    python benchmarks/precision_matrix.py --fixtures offseg_t_synth16 --block 4
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import record  # noqa: E402
from segdeploy import flavours  # noqa: E402
from segdeploy.evaluation.bench import precision as pb  # noqa: E402
from segdeploy.evaluation.bench.protocol import Protocol  # noqa: E402
from segdeploy.hostinfo import int8_speed_note, machine_info  # noqa: E402
from segdeploy.runtimes.base import random_feed  # noqa: E402
from segdeploy.runtimes.registry import backend_status, create_runner  # noqa: E402
from segdeploy.training.fixtures import FIXTURES, default_cache_dir, load_fixture  # noqa: E402

PRECISIONS = [name for name in pb.PRECISIONS if name != "int8"]  # every INT8 flavour, each by its label
CPU_INT8 = flavours.cpu_labels()  # the flavours made for CPU runtimes, which the speed target is about
TARGET = pb.SPEED_TARGET
MIOU_BUDGET = 1.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fixtures", default="cgrseg_t_synth16,segnext_t_synth16,lrformer_t_synth16,offseg_t_synth16,"
                                         "cgrseg_t_lowmargin")
    p.add_argument("--backends", default="onnxruntime,openvino")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calib-count", type=int, default=32)
    p.add_argument("--limit", type=int, help="validation images (default: all)")
    p.add_argument("--rounds", type=int, default=20, help="timed round-robin rounds per fixture")
    p.add_argument("--block", type=int, default=1,
                   help="calls of a row per round, the first not counted (1: one counted call per row per round)")
    p.add_argument("--cache-dir", default=os.path.join(ROOT, "artifacts", "cache"))
    p.add_argument("--no-baseline", action="store_true", help="skip the off-the-shelf quantize_static row")
    p.add_argument("--out", default=record.RESULTS, help="folder of the results files (default: benchmarks/results)")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def baseline_artifact(fp32_path: str, calibration_paths, feed_of, out_path: str) -> str:
    """ONNX Runtime's quantize_static with its defaults, calibrated on the same images; the FP32 manifest is kept
    (same I/O), its precision relabelled."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    from segdeploy.artifact import manifest as mf
    from segdeploy.artifact.reader import read_manifest
    from segdeploy.export.onnx import write_artifact

    if os.path.isfile(out_path):
        return out_path

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([feed_of(p) for p in calibration_paths])

        def get_next(self):
            return next(self.feeds, None)

    tmp = out_path + ".tmp.onnx"
    quantize_static(fp32_path, tmp, Reader())
    model = onnx.load(tmp)
    os.remove(tmp)
    manifest = read_manifest(fp32_path)
    manifest = manifest.replace(precision=mf.Precision("int8", "cpu", "float32", {
        "note": "onnxruntime.quantization.quantize_static defaults: QDQ, per-tensor weights, every operator, MinMax"}))
    from segdeploy.artifact.onnx_file import graph_sha256

    manifest = manifest.replace(graph_sha256=graph_sha256(model))
    write_artifact(out_path, model, manifest, force=True)
    return out_path


def interleaved_timing(rows: list[dict], size: int, threads: int, rounds: int, block: int = 1) -> None:
    """Time every ok row round-robin after two warm-up calls each: per round, ``block`` calls of each row in a row.
    With a block above 1 the first call of each block is not counted: it runs with the caches full of the previous
    row's model (measured on offseg_t: OpenVINO INT8 at 177 ms right after another model, 159 ms back to back), and
    a deployed model runs back to back."""
    live = []
    for row in rows:
        if row["status"] != "ok":
            continue
        runner = create_runner(row["backend"], artifact=row["artifact"], threads=threads)
        feed = random_feed(runner, 1, size, size)
        for _ in range(2):
            runner.infer(feed)
        live.append((row, runner, feed, []))
    for _ in range(rounds):
        for _row, runner, feed, samples in live:
            for call in range(block):
                start = time.perf_counter()
                runner.infer(feed)
                if block == 1 or call > 0:
                    samples.append((time.perf_counter() - start) * 1e3)
    for row, runner, _, samples in live:
        runner.close()
        row["rounds"] = len(samples)
        row["samples_ms"] = [round(s, 4) for s in samples]
        row["p50_ms"] = float(np.median(samples))
        row["min_ms"] = float(np.min(samples))
        row["throughput_ips"] = 1e3 / row["p50_ms"]


def summarize(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    fp32 = [r for r in ok if r["precision"] == "fp32"]
    int8 = [r for r in ok if r["precision"] in CPU_INT8 and r.get("within_tolerance") is not False]
    out = {}
    if fp32 and int8:
        best32 = min(fp32, key=lambda r: r["p50_ms"])
        best8 = min(int8, key=lambda r: r["p50_ms"])
        out = {"best_fp32": f"{best32['backend']} {best32['p50_ms']:.1f} ms",
               "best_int8": f"{best8['precision']} on {best8['backend']} {best8['p50_ms']:.1f} ms",
               "speedup": best32["p50_ms"] / best8["p50_ms"],
               "speedup_min": min(r["min_ms"] for r in fp32) / best8["min_ms"],
               "miou_delta": best8.get("miou_delta"),
               "per_flavour": {flavour: round(best32["p50_ms"] / min(r["p50_ms"] for r in rows), 3)
                               for flavour in CPU_INT8
                               if (rows := [r for r in int8 if r["precision"] == flavour])}}
        for row in ok:
            row["speedup_vs_best_fp32"] = best32["p50_ms"] / row["p50_ms"]
    return out


def run_fixture(recipe, args, machine) -> dict:
    fixture = load_fixture(recipe, default_cache_dir())
    if fixture is None:
        return {"fixture": recipe.name, "skipped": "not trained yet (segdeploy fixtures --model " + recipe.name + ")"}
    log(f"{recipe.name}: exports and accuracy")
    request = pb.PrecisionBench(model=fixture.model, precisions=PRECISIONS, backends=args.backends,
                                height=args.size, width=args.size, checkpoint=fixture.checkpoint,
                                data=fixture.dataset_dir, calib_count=args.calib_count, limit=args.limit,
                                threads=args.threads, protocol=Protocol(warmup_s=0.0, min_s=0.0, min_iters=1),
                                cache_dir=args.cache_dir)
    started = time.monotonic()
    report = pb.compare_precisions(request, progress=lambda text, fraction=None: None)
    rows = report["rows"]
    if not args.no_baseline:
        rows += baseline_rows(request, rows, report, args)
    log(f"{recipe.name}: timing {len([r for r in rows if r['status'] == 'ok'])} rows x {args.rounds} rounds")
    interleaved_timing(rows, args.size, args.threads, args.rounds, args.block)
    return {"fixture": recipe.name, "model": fixture.model, "fixture_miou_torch": fixture.miou,
            "data": report["data"], "calibration": report["calibration"], "rows": rows, "summary": summarize(rows),
            "seconds": time.monotonic() - started}


def baseline_rows(request, rows, report, args) -> list[dict]:
    from segdeploy.artifact.reader import read_manifest
    from segdeploy.evaluation.accuracy import held_out
    from segdeploy.evaluation.feeds import manifest_image_feed
    from segdeploy.export.precision.calibration_images import select_images
    from segdeploy.preprocess import read_image

    fp32 = next((r for r in rows if r["precision"] == "fp32" and r["status"] == "ok"), None)
    if fp32 is None:
        return []
    manifest = read_manifest(fp32["artifact"])
    images = select_images(request.data, request.calib_count)
    from segdeploy.runtimes.base import TensorInfo

    info = TensorInfo(manifest.input.name, tuple(manifest.input.shape), manifest.input.dtype)
    path = fp32["artifact"].replace("_fp32_", "_int8-ort-default_")
    try:
        baseline_artifact(fp32["artifact"], images.paths, lambda p: manifest_image_feed(read_image(p), info, manifest),
                          path)
    except Exception as exc:  # noqa: BLE001 - the reference row may fail without losing the others
        return [{"precision": "int8-ort-default", "status": "failed", "error": f"{type(exc).__name__}: {exc}"}]
    held = held_out(request.data, request.limit)
    _, reference_masks = pb.measure_row(request, fp32["backend"], "fp32", fp32["artifact"], manifest, held, None, None)
    out = []
    for backend in request.backends:
        row, _ = pb.measure_row(request, backend, "int8-cpu", path, read_manifest(path), held, reference_masks, None)
        row["precision"] = "int8-ort-default"
        if row.get("miou") is not None and fp32.get("miou") is not None:
            row["miou_delta"] = row["miou"] - fp32["miou"]
        row["within_tolerance"] = pb.within_tolerance(dict(row, precision="int8-cpu"))
        out.append(row)
    return out


def markdown(result: dict) -> str:
    m = result["machine"]
    cpu = m["cpu"]
    lines = [f"# Precision matrix: FP32 / FP16 / INT8 on the trained fixtures ({result['date']})", "",
             f"Machine: {cpu['model']}, {cpu['usable_cores']} usable cores, ISA {' '.join(cpu['isa'])}; "
             f"{result['int8_note']}. Load average at the start {result['load_start']}, at the end "
             f"{result['load_end']}. {result['versions']}.", "",
             f"Protocol: {result['size']}x{result['size']}, batch 1, {result['threads']} threads; INT8 calibrated on "
             f"{result['calib_count']} images of each fixture's training split, accuracy on its validation split; all "
             f"rows of a fixture timed round-robin, {result['rounds']} rounds"
             + (f" of {result['block']} calls per row (the first not counted: it starts with another model's data in "
                "the caches)" if result.get("block", 1) > 1 else "") + f", after 2 warm-up calls each; 'vs best "
             f"FP32' is the best FP32 p50 (ONNX Runtime or OpenVINO) over the row's p50; the target is >= "
             f"{TARGET}x for the fastest CPU INT8 artifact within tolerance (int8-cpu, made for ONNX Runtime, or "
             f"int8-openvino, made for OpenVINO) with mIoU within {MIOU_BUDGET} point; 'speed-up (min)' is the "
             "same ratio of the fastest single calls.", "",
             "| fixture | best FP32 | best CPU INT8 | speed-up (p50) | speed-up (min) | target | INT8 mIoU delta | "
             + " | ".join(CPU_INT8) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(CPU_INT8)]
    for f in result["fixtures"]:
        s = f.get("summary") or {}
        if f.get("skipped"):
            lines.append(f"| {f['fixture']} | {f['skipped']} | | | | | | | |")
            continue
        if not s:
            lines.append(f"| {f['fixture']} | (no timing) | | | | | | | |")
            continue
        met = s["speedup"] >= TARGET and (s["miou_delta"] is None or -s["miou_delta"] <= MIOU_BUDGET)
        delta = "-" if s["miou_delta"] is None else f"{s['miou_delta']:+.2f}"
        lines.append(f"| {f['fixture']} | {s['best_fp32']} | {s['best_int8']} | {s['speedup']:.2f}x | "
                     f"{s['speedup_min']:.2f}x | {'met' if met else 'missed'} | {delta} | "
                     + " | ".join(f"{s['per_flavour'][k]:.2f}x" if k in s.get("per_flavour", {}) else "-"
                                  for k in CPU_INT8) + " |")
    for f in result["fixtures"]:
        if f.get("skipped"):
            continue
        lines += ["", f"## {f['fixture']} ({f['model']}; PyTorch validation mIoU {f['fixture_miou_torch']:.2f} at the "
                      "test policy's size)", "",
                  "| precision | backend | size MB | mIoU | delta vs FP32 | agreement % | p50 ms | min ms | img/s | "
                  "vs best FP32 | status |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in f["rows"]:
            def fmt(key, spec, row=r):
                value = row.get(key)
                return "-" if value is None else format(value, spec)
            status = r["status"] if r["status"] != "ok" else ("ok" if r.get("within_tolerance") is not False
                                                               else "out of tolerance")
            if r["status"] != "ok":
                status = f"failed: {r.get('error', '')[:80]}"
            lines.append(f"| {r['precision']} | {r.get('backend', '-')} | {fmt('size_mb', '.1f')} | "
                         f"{fmt('miou', '.2f')} | {fmt('miou_delta', '+.2f')} | {fmt('agreement', '.2f')} | "
                         f"{fmt('p50_ms', '.1f')} | "
                         f"{fmt('min_ms', '.1f')} | {fmt('throughput_ips', '.2f')} | "
                         f"{fmt('speedup_vs_best_fp32', '.2f')} | {status} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    unknown = [name for name in args.fixtures.split(",") if name not in FIXTURES]
    if unknown:  # refused before any work: one line, nothing written
        print(f"precision_matrix.py: unknown fixture {unknown[0]!r}; known: {', '.join(FIXTURES)}", file=sys.stderr)
        return 2
    run = record.start("precision_matrix", args, out_dir=args.out, argv=None if argv is None else [__file__, *argv])
    args.backends = [b for b in args.backends.split(",") if backend_status(b).available]
    machine = machine_info()
    result = {"date": datetime.date.today().isoformat(), "machine": machine,
              "int8_note": int8_speed_note(machine["cpu"]), "load_start": list(os.getloadavg()),
              "size": args.size, "threads": args.threads, "calib_count": args.calib_count, "rounds": args.rounds,
              "block": args.block,
              "versions": ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v), "fixtures": []}
    for name in args.fixtures.split(","):
        result["fixtures"].append(run_fixture(FIXTURES[name], args, machine))
    result["load_end"] = list(os.getloadavg())
    text = markdown(result)
    print(text)
    for path in run.write(result, text):
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

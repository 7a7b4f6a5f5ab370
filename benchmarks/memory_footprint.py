"""Measure how much host memory each model's forward pass takes per input pixel (PyTorch, CPU, batch 1), and the
memory an ONNX export (trace + simplify + ONNX Runtime verification) takes, to refresh
segdeploy/models/footprint.json, the table segdeploy's memory estimates read (export, bench, validate, predict
refuse a size that cannot fit before they allocate it).

    python benchmarks/memory_footprint.py [--models segnext_t,cgrseg_t] [--sizes 256,512] [--export-models segnext_t]

Each measurement runs in a fresh process: peak RSS (sampled every 5 ms) during the forward pass over the RSS before
it. The per-pixel figure is the slope between the two sizes; the fixed part is what the runtime adds whatever the
size; the weights are counted apart. An export is estimated as EXPORT_FORWARDS forward passes plus an overhead that
does not grow with the size, the largest measured on the export models. Each run also writes a new results file
(benchmarks/record.py: results/memory_footprint-<date>-<host>-<run id>.json) with the command, the commit, the
machine and every measurement the table was derived from.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# An export holds about three forward passes' activations at once (the trace, the PyTorch reference and ONNX
# Runtime's run during verification); the rest (ONNX Runtime, the simplifier, protobuf copies of the graph) does
# not grow with the size and is the overhead.
EXPORT_FORWARDS = 3
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TABLE = os.path.join(ROOT, "segdeploy", "models", "footprint.json")

CHILD = r"""
import sys, json, torch
from segdeploy import models
from segdeploy.evaluation.bench.memory import RssSampler, current_rss, release_free_memory
name, size, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(2)
if mode == "forward":
    model = models.create(name)
    release_free_memory()
    base = current_rss()
    x = torch.zeros(1, 3, size, size)
    with RssSampler(0.005) as rss, torch.inference_mode():
        model(x)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
else:
    import tempfile, os
    from segdeploy.evaluation.validate import verify_graph
    from segdeploy.export.onnx import export_onnx
    release_free_memory()
    base = current_rss()
    with tempfile.TemporaryDirectory() as d, RssSampler(0.005) as rss:
        export_onnx(name, os.path.join(d, "m.onnx"), height=size, width=size,
                    verify=lambda g, p, s: verify_graph(g, p, s, threads=2))
print(json.dumps({"base": base, "peak": rss.peak, "weights": weights if mode == "forward" else None}))
"""


def measure(name: str, size: int, mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", CHILD, name, str(size), mode], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    sys.path.insert(0, ROOT)
    import record
    from segdeploy.models import list_models

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(list_models()))
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--export-models", default="segnext_t,cgrseg_t")
    args = parser.parse_args()
    run = record.start("memory_footprint", args)
    measurements = []
    small, large = (int(s) for s in args.sizes.split(","))
    table = {"measured": f"peak RSS over the RSS before the call, PyTorch CPU, batch 1, 2 threads, {small}x{small} "
                         f"and {large}x{large} (benchmarks/memory_footprint.py)", "forward": {}, "export": None}
    for name in args.models.split(","):
        a, b = measure(name, small, "forward"), measure(name, large, "forward")
        measurements += [dict(a, model=name, size=small, mode="forward"), dict(b, model=name, size=large,
                                                                              mode="forward")]
        da, db = a["peak"] - a["base"], b["peak"] - b["base"]
        per_pixel = max(0.0, (db - da) / (large * large - small * small))
        fixed = max(0, da - per_pixel * small * small)
        table["forward"][name] = {"bytes_per_pixel": round(per_pixel, 1), "fixed_mb": round(fixed / 2**20, 1),
                                  "weights_mb": round(b["weights"] / 2**20, 1)}
        print(name, table["forward"][name], flush=True)
    overheads, peaks = [], {}
    for name in args.export_models.split(","):
        e = measure(name, large, "export")
        measurements.append(dict(e, model=name, size=large, mode="export"))
        f = table["forward"][name]
        forward = f["bytes_per_pixel"] * large * large + (f["fixed_mb"] + f["weights_mb"]) * 2**20
        peak = e["peak"] - e["base"]
        peaks[name] = round(peak / 2**20)
        overheads.append(peak - EXPORT_FORWARDS * forward)
        print(name, "export peak", peaks[name], "MiB", flush=True)
    table["export"] = {"forwards": EXPORT_FORWARDS, "overhead_mb": round(max(overheads) / 2**20),
                       "measured_peaks_mb": peaks, "measured_at": large}
    with open(TABLE, "w") as f:
        json.dump(table, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"wrote {TABLE}")
    for path in run.write({"table": table, "measurements": measurements}):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

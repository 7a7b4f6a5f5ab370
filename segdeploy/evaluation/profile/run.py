"""``segdeploy profile``: where the time of one artifact goes, by PyTorch module.

1. The artifact: the one given, or the model exported into the shared export cache (FP32), or calibrated and
   exported by the precision comparison's cache (FP16, INT8 flavours).
2. Its latency, unprofiled, by the benchmark protocol (warm-up, then timed calls; p50).
3. The backend's per-layer times over ``runs`` profiled calls (Runner.layer_profile).
4. Each layer placed in a module scope (scopes.py), folded at ``depth`` levels (fold.py), with the FLOPs of the
   ONNX graph's nodes folded by the same scopes (flops.py) and set against the measured FP32 peak.

The folded rows add up to the profiled layer total by construction; how close that total comes to the unprofiled
latency is reported (``coverage``), not assumed: what the profiler cannot see (the run's own scheduling, input and
output copies) and its own overhead sit in the gap.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from segdeploy import backends, flavours
from segdeploy.artifact.formats import format_of
from segdeploy.artifact.onnx_file import load_onnx
from segdeploy.artifact.reader import read_runnable_manifest
from segdeploy.errors import InputError
from segdeploy.evaluation.bench.peak import fp32_peak_gflops
from segdeploy.evaluation.bench.precision import (
    INT8_FOR_BACKEND,
    PRECISIONS,
    PrecisionBench,
    calibration_images,
    precision_artifact,
)
from segdeploy.evaluation.bench.protocol import Progress, Protocol, time_runner
from segdeploy.evaluation.profile.fold import by_operator, fold
from segdeploy.evaluation.profile.scopes import ScopeResolver, scope_of
from segdeploy.export.cache import DEFAULT_CACHE_DIR, cached_onnx
from segdeploy.export.trace import DEFAULT_OPSET
from segdeploy.hostinfo import machine_info
from segdeploy.runtimes.base import image_dims, random_feed
from segdeploy.runtimes.registry import create_runner, default_backend_for, get_backend, require_backend

SCHEMA = "segdeploy.profile/1"
STATISTICS = {"median": lambda values: float(np.median(values)), "mean": lambda values: float(np.mean(values))}
MAX_RUNS = 10_000
MAX_DEPTH = 32


@dataclass
class ProfileRequest:
    model: str | None = None
    artifact: str | None = None
    backend: str | None = None
    precision: str = "fp32"
    checkpoint: str | None = None
    calib: str | None = None
    calib_count: int = 32
    calib_method: str = "minmax"
    height: int = 512
    width: int = 512
    batch: int = 1
    threads: int | None = None
    runs: int = 20
    warmup: int = 3
    depth: int = 3
    statistic: str = "median"  # of each layer's per-run times: median (robust to other processes) or mean
    protocol: Protocol = field(default_factory=lambda: Protocol(warmup_s=1.0, min_s=3.0, min_iters=10))
    cache_dir: str = DEFAULT_CACHE_DIR
    opset: int = DEFAULT_OPSET
    force_export: bool = False
    measure_peak: bool = True


def check(request: ProfileRequest) -> None:
    """Everything that can be refused before an export or a run, one line each."""
    from segdeploy.models import get_spec

    if (request.model is None) == (request.artifact is None):
        raise InputError("profile takes a registered model or an artifact")
    if not 1 <= request.runs <= MAX_RUNS:
        raise InputError(f"--runs takes 1 to {MAX_RUNS}, not {request.runs}")
    if not 0 <= request.warmup <= MAX_RUNS:
        raise InputError(f"--warmup takes 0 to {MAX_RUNS}, not {request.warmup}")
    if request.statistic not in STATISTICS:
        raise InputError(f"--statistic takes {' or '.join(STATISTICS)}, not {request.statistic!r}")
    if not 0 <= request.depth <= MAX_DEPTH:
        raise InputError(f"--depth takes 0 (the whole graph) to {MAX_DEPTH}, not {request.depth}")
    if request.batch < 1:
        raise InputError(f"--batch must be >= 1, not {request.batch}")
    if request.artifact is not None:
        if not os.path.isfile(request.artifact):
            raise InputError(f"artifact not found: {request.artifact}")
        kind = format_of(request.artifact).kind
        backend = request.backend or default_backend_for(kind)
        if get_backend(backend).consumes != kind:
            raise InputError(f"backend {backend} runs {get_backend(backend).consumes} artifacts, not {kind}")
        if request.precision not in ("fp32", "bf16") or (request.precision == "bf16" and
                                                          not get_backend(backend).precision_hint):
            raise InputError("an artifact runs the precision its graph carries; --precision picks the export of a "
                             "model (or bf16 on openvino)")
        if kind == "onnx":
            manifest = read_runnable_manifest(request.artifact, required=False)
            if manifest is not None:
                from segdeploy.models.facts import check_manifest

                check_manifest(manifest, request.artifact)
    else:
        spec = get_spec(request.model)
        if request.height % spec.size_multiple or request.width % spec.size_multiple:
            raise InputError(f"{request.model} needs a size that is a multiple of {spec.size_multiple}, not "
                             f"{request.height}x{request.width}")
        backend = request.backend or default_backend_for("onnx")
        if get_backend(backend).consumes != "onnx":
            raise InputError(f"backend {backend} has no per-layer profiler for a model; profile on onnxruntime or "
                             "openvino (or pass an engine for tensorrt)")
        label = export_label(request, backend)
        if label.startswith("int8") and request.calib is None:
            raise InputError("an int8 profile of a model exports it calibrated: give --calib DIR (images, or a "
                             "dataset folder's training split)")
    require_backend(backend)


def hinted() -> list[str]:
    """The backends that run an ONNX artifact in an inference precision they are asked for."""
    return [b.name for b in backends.BACKENDS.values() if b.precision_hint]


def export_label(request: ProfileRequest, backend: str) -> str:
    """The precision comparison's label of the export a model is profiled in (a bare int8: the backend's flavour)."""
    if request.precision == "bf16":
        if not get_backend(backend).precision_hint:
            raise InputError(f"bf16 is {', '.join(backends.label(n) for n in hinted())}'s inference precision; on "
                             f"{backend} export fp16 or int8 instead")
        return "fp32"
    label = INT8_FOR_BACKEND.get(backend, flavours.get(flavours.DEFAULT).label) if request.precision == "int8" \
        else request.precision
    if label not in PRECISIONS:
        raise InputError(f"--precision takes fp32, fp16, bf16 (openvino), int8 or one of "
                         f"{', '.join(p for p in PRECISIONS if p.startswith('int8-'))}, not {request.precision!r}")
    return label


def artifact_for(request: ProfileRequest, backend: str, progress: Progress | None) -> str:
    if request.artifact is not None:
        return request.artifact
    label = export_label(request, backend)
    say = (lambda step, *_: progress(step, 0.0)) if progress else None
    if label == "fp32":
        return cached_onnx(request.model, checkpoint=request.checkpoint, height=request.height, width=request.width,
                           batch=request.batch, opset=request.opset, cache_dir=request.cache_dir,
                           rebuild=request.force_export, progress=say)

    bench = PrecisionBench(model=request.model, precisions=["fp32", label], backends=[backend],
                           height=request.height, width=request.width, checkpoint=request.checkpoint,
                           calib=request.calib, calib_count=request.calib_count, calib_method=request.calib_method,
                           threads=request.threads, cache_dir=request.cache_dir, rebuild=request.force_export)
    return precision_artifact(bench, label, calibration_images(bench), progress)


def graph_flops(artifact: str, feed: dict) -> tuple[list[str], dict]:
    """(the ONNX graph's node names, FLOPs per full node scope) of an ONNX artifact at the feed's shapes; an engine
    has no graph to read (its layers' names are read as they are)."""
    if format_of(artifact).kind != "onnx":
        return [], {}
    from segdeploy.evaluation.profile.flops import node_flops

    model = load_onnx(artifact)
    flops = node_flops(model, {name: value.shape for name, value in feed.items()})
    by_scope: dict = {}
    for node, value in flops.items():
        scope = scope_of(node) or ()
        by_scope[scope] = by_scope.get(scope, 0) + (value or 0)
    unresolved = sum(1 for value in flops.values() if value is None)
    return [n.name for n in model.graph.node], {"by_scope": by_scope, "total": sum(v or 0 for v in flops.values()),
                                                "nodes": len(flops), "unresolved": unresolved}


def profile(request: ProfileRequest, progress: Progress | None = None) -> dict:
    """Run the profile (see the module docstring); returns the report."""
    check(request)
    machine = machine_info()
    threads = request.threads or machine["cpu"]["usable_cores"]
    kind = format_of(request.artifact).kind if request.artifact else "onnx"
    backend = request.backend or default_backend_for(kind)
    artifact = artifact_for(request, backend, progress)
    options = {"precision": request.precision} if get_backend(backend).precision_hint else {}
    device = "cuda:0" if get_backend(backend).devices.startswith("cuda") else "cpu"
    if progress:
        progress(f"loading {os.path.basename(artifact)} on {backend}", 0.0)
    with create_runner(backend, artifact=artifact, threads=threads, device=device, **options) as runner:
        feed = random_feed(runner, request.batch, request.height, request.width)
        info = runner.inputs()[0]
        batch, height, width = image_dims(info, feed[info.name].shape)
        label = f"{os.path.basename(artifact)} on {backend}"
        timed = time_runner(runner, feed, request.protocol, progress, f"{label}: latency")
        if progress:
            progress(f"{label}: profiling {request.runs} runs", 0.0)
        layer_profile = runner.layer_profile(feed, runs=request.runs, warmup=request.warmup)
        described = runner.describe()
        manifest = runner.manifest
    names, flops = graph_flops(artifact, feed)
    peak = None
    if request.measure_peak:
        if progress:
            progress("measuring the FP32 matmul peak", 0.0)
        peak = fp32_peak_gflops("cpu" if device == "cpu" else device, threads)
    resolver = ScopeResolver(names)
    placed = resolver.place(layer_profile.layers)
    statistic = STATISTICS[request.statistic]
    layers = [{"name": layer.name, "op": layer.op, "kernel": layer.kernel,
               "ms": statistic(layer.samples) if layer.samples else layer.ms, "samples_ms": list(layer.samples),
               "scope": list(scope), "placed": how, "sources": list(layer.sources)}
              for layer, (scope, how) in zip(layer_profile.layers, placed)]
    modules = fold(layers, request.depth, flops.get("by_scope") if flops else None)
    latency_p50 = timed["latency_ms"]["p50"]
    for row in modules:
        _rates(row, peak)
    layer_ms = sum(layer["ms"] for layer in layers)
    run_mean = statistic(layer_profile.run_ms)
    precision = flavours.label(manifest.precision.mode, manifest.precision.flavour) \
        if manifest is not None else "as stored"
    return {
        "schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": manifest.model.name if manifest is not None else request.model, "artifact": artifact,
        "backend": backend, "precision": precision,
        "inference_precision": request.precision if get_backend(backend).precision_hint else None,
        "batch": batch, "height": height, "width": width, "threads": threads,
        "runs": request.runs, "warmup": request.warmup, "depth": request.depth, "statistic": request.statistic,
        "latency_ms": timed["latency_ms"], "protocol": asdict(request.protocol),
        "profiled": {"layer_ms": layer_ms, "run_ms": layer_profile.run_ms, "run_ms_mean": run_mean,
                     "layers": len(layers), "notes": layer_profile.notes},
        "coverage": {"of_latency_p50": layer_ms / latency_p50 if latency_p50 > 0 else None,
                     "of_profiled_runs": layer_ms / run_mean if run_mean > 0 else None},
        "placement": {how: sum(1 for layer in layers if layer["placed"] == how)
                      for how in ("own", "neighbour", "unplaced")},
        "flops": {k: v for k, v in flops.items() if k != "by_scope"} if flops else None,
        "peak": peak, "modules": modules, "operators": by_operator(layers), "layers": layers,
        "runner": described, "machine": machine,
    }


def _rates(row: dict, peak: dict | None) -> None:
    """Achieved GFLOP/s of a module (its FLOPs over its own profiled time) and its fraction of the FP32 peak."""
    flops, ms = row.get("flops"), row["ms"]
    row["gflop"] = flops / 1e9 if flops else None
    row["gflops"] = flops / (ms / 1e3) / 1e9 if flops and ms > 0 else None
    row["peak_fraction"] = row["gflops"] / peak["gflops"] if row["gflops"] and peak else None

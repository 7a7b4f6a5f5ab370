"""Benchmark runs written once against the runner contract: for each (model or artifact, backend, layout, batch)
build a runner, time it by the protocol, measure memory and set the papers' figures beside it.

Protocol: protocol.py; statistics: stats.py; memory: memory.py (CPU: peak RSS over the row's baseline; CUDA: the
runner's peak device allocation); FLOPs and paper figures: papers.py; reports: reports.py.

``--batch max`` mirrors the papers' "maximum batch size" protocol, which on a GPU means filling its memory. A CPU
saturates long before its memory fills, so here the batch doubles from 1 until throughput stops improving by more
than ``MAX_BATCH_MIN_GAIN`` over the best so far, a call would exceed ``MAX_BATCH_CALL_S`` seconds, the next batch
would likely exceed half of the available memory, or ``max_batch_limit`` is reached; the row with the best
throughput is the "max" row.
"""
from __future__ import annotations

import datetime as _dt
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, replace

from segdeploy import flavours
from segdeploy.artifact.reader import ArtifactWarning, LoadedArtifact
from segdeploy.errors import InputError, SegdeployError
from segdeploy.evaluation.bench.memory import RssSampler, available_memory, current_rss, release_free_memory
from segdeploy.evaluation.bench.papers import FLOPS_PER_MAC, add_flops, paper_comparison
from segdeploy.evaluation.bench.peak import fp32_peak_gflops
from segdeploy.evaluation.bench.protocol import Progress, time_runner
from segdeploy.evaluation.bench.request import BenchRequest, check_request, device_label
from segdeploy.evaluation.bench.streams import time_streams
from segdeploy.export.cache import cached_onnx
from segdeploy.hostinfo import machine_info
from segdeploy.models import footprint
from segdeploy.runtimes.base import Runner, image_dims, random_feed
from segdeploy.runtimes.registry import create_runner, get_backend

SCHEMA = "segdeploy.bench/1"
MAX_BATCH_MIN_GAIN = 0.03
MAX_BATCH_CALL_S = 10.0


def onnx_artifact(model: str, request: BenchRequest, batch: int, progress: Progress | None = None) -> str:
    """A static-shape ONNX export of ``model`` for this size and batch, from the shared export cache.

    Static shapes because ONNX Runtime and OpenVINO plan memory and pick kernels better for them than for dynamic
    ones. Not verified against PyTorch here: benchmarking is not validation (``segdeploy validate`` is).
    """
    return cached_onnx(model, checkpoint=request.checkpoint, height=request.height, width=request.width,
                       batch=batch, opset=request.opset, simplify=request.simplify, cache_dir=request.export_dir,
                       rebuild=request.force_export,
                       progress=(lambda step: progress(step, 0.0)) if progress else None)


# ----------------------------------------------------------------------------------------------------------------
# Rows


class _Target:
    """One (model or artifact, backend, layout): hands out a runner per batch size, reusing it when it can."""

    def __init__(self, request: BenchRequest, model: str | None, backend: str, layout: str | None,
                 opened: LoadedArtifact | None = None):
        self.request, self.model, self.backend, self.layout = request, model, backend, layout
        self.opened = opened  # the request's artifact, read once (bench.request.check_request)
        self._runner = None
        self.rows: dict[tuple, dict] = {}  # (batch, streams) -> row, so "1,max" measures batch 1 once
        self.baseline_rss = None  # RSS before the current runner was built: the zero of its memory figure

    def runner(self, batch: int, progress: Progress | None = None) -> Runner:
        r = self.request
        if get_backend(self.backend).consumes == "model":
            if self._runner is None:  # dynamic shapes: one model for every batch
                release_free_memory()
                self.baseline_rss = current_rss()
                self._runner = create_runner(self.backend, model=self.model, device=r.device, precision=r.precision,
                                             threads=r.threads, layout=self.layout, compile=r.compile,
                                             cuda_graphs=r.cuda_graphs, checkpoint=r.checkpoint)
            return self._runner
        self.close()
        artifact = self.opened or r.artifact or onnx_artifact(self.model, r, batch, progress)
        release_free_memory()
        self.baseline_rss = current_rss()
        with warnings.catch_warnings():
            if not r.artifact:  # its own timing export, unverified by design: no warning on every row
                warnings.simplefilter("ignore", ArtifactWarning)
            self._runner = create_runner(self.backend, artifact=artifact, device=r.device, precision=r.precision,
                                         threads=r.threads)
        return self._runner

    def close(self):
        if self._runner is not None:
            self._runner.close()
            self._runner = None


def bench_row(target: _Target, batch: int, machine: dict, peak: dict | None, progress: Progress | None = None,
              is_max: bool = False, sweep: bool = False, streams: int = 1) -> dict:
    """Build (or reuse) the runner for ``batch``, time it, and fill one report row; failures become a row too."""
    if (batch, streams) in target.rows:
        row = target.rows[(batch, streams)]
        row["sweep"] = row["sweep"] or ("max" if sweep else None)
        return row
    row = _measure_row(target, batch, machine, peak, progress, is_max, sweep, streams)
    target.rows[(batch, streams)] = row
    return row


def _measure_row(target: _Target, batch: int, machine: dict, peak: dict | None, progress: Progress | None,
                 is_max: bool, sweep: bool, streams: int = 1) -> dict:
    r = target.request
    row = {"model": target.model, "artifact": r.artifact, "backend": target.backend, "device": r.device,
           "precision": r.precision, "layout": target.layout or "nchw", "batch": batch, "height": r.height,
           "width": r.width, "threads": r.threads or machine["cpu"]["usable_cores"], "streams": streams,
           "sweep": "max" if sweep else None, "max_batch": is_max, "status": "ok"}
    runs_model = get_backend(target.backend).consumes == "model"
    if runs_model:
        row.update(compile=r.compile, cuda_graphs=r.cuda_graphs)
    label = f"{target.model or os.path.basename(r.artifact)} {target.backend}" + \
        (f" {target.layout}" if runs_model else "") + f" b{batch}" + (f" x{streams} streams" if streams > 1 else "")
    try:
        with RssSampler() as rss:
            if progress:
                progress(label + " (loading)", 0.0)
            runner = target.runner(batch, progress)
            if runner.manifest is not None:  # an artifact runs the precision its graph carries
                p = runner.manifest.precision
                row["precision"] = flavours.label(p.mode, p.flavour)
            feed = random_feed(runner, batch, r.height, r.width)
            info = runner.inputs()[0]
            fed_batch, fed_height, fed_width = image_dims(info, feed[info.name].shape)
            if fed_batch != batch:
                raise InputError(f"the artifact has a fixed batch of {fed_batch}; pass --batch {fed_batch}")
            # a static artifact decides the size it is fed; record that, not the request's default
            row["height"], row["width"] = fed_height, fed_width
            if streams > 1:
                timed = time_streams(runner.stream_calls(streams), feed, r.protocol, progress, label)
            else:
                timed = time_runner(runner, feed, r.protocol, progress, label)
        row.update(timed)
        row["runner"] = runner.describe()
        device_peak = runner.peak_device_memory()
        if device_peak is not None:
            row["memory"] = {"kind": "device_max_allocated", "peak_mb": device_peak / 2**20}
        else:
            baseline = target.baseline_rss
            row["memory"] = {"kind": "rss_delta", "peak_mb": None if baseline is None or rss.peak is None
                             else max(0, rss.peak - baseline) / 2**20}
    except SegdeployError as exc:  # the request's fault (an input the runner refuses), not the backend's
        row.update(status="failed", error=str(exc), bad_input=True)
        target.close()
        return row
    except Exception as exc:  # a backend crash on one model must not lose the other rows
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        row.update(status="failed", error=f"{type(exc).__name__}: {detail}")
        target.close()
        return row
    add_flops(row, target.model, peak)
    if target.model:
        row["paper"] = paper_comparison(target.model, row["height"], row["width"], batch, is_max, row["throughput_ips"],
                                        device_label(r, machine))
    return row


def max_batch_sweep(target: _Target, machine: dict, peak: dict | None, progress: Progress | None,
                    limit: int, streams: int = 1) -> list[dict]:
    """Double the batch until throughput saturates (see the module docstring); the best row is marked max."""
    rows, best, batch = [], None, 1
    while batch <= limit:
        row = bench_row(target, batch, machine, peak, progress, sweep=True, streams=streams)
        rows.append(row)
        if row["status"] != "ok":
            break
        improved = best is None or row["throughput_ips"] > best["throughput_ips"] * (1 + MAX_BATCH_MIN_GAIN)
        if best is None or row["throughput_ips"] > best["throughput_ips"]:
            best = row
        if not improved:
            break
        if row["latency_ms"]["mean"] * 2 / 1e3 > MAX_BATCH_CALL_S:
            break
        free = available_memory()
        used = (row.get("memory") or {}).get("peak_mb")
        if free is not None and used is not None and used * 2**20 * 2 > free / 2:
            break
        need = footprint.forward_bytes(target.model, batch * 2, row["height"], row["width"]) if target.model \
            else None
        if free is not None and need is not None and need > free:  # the estimate says the next one cannot fit
            break
        batch *= 2
    if best is not None:
        best["max_batch"] = True
        # the paper comparison depends on whether this is the max row
        if best.get("model"):
            r = target.request
            best["paper"] = paper_comparison(best["model"], best["height"], best["width"], best["batch"], True,
                                             best["throughput_ips"], device_label(r, machine))
    return rows


def run_bench(request: BenchRequest, progress: Progress | None = None,
              on_row: Callable[[dict], None] | None = None) -> dict:
    """Run every (model, backend, layout, batch) of ``request``; returns the report."""
    opened = check_request(request)
    machine = machine_info()
    if request.threads is None:  # every backend gets the same count, not each its own default
        request = replace(request, threads=machine["cpu"]["usable_cores"])
    peak = None
    if request.measure_peak:
        if progress:
            progress("measuring the FP32 matmul peak", 0.0)
        peak = fp32_peak_gflops(request.device if request.device.startswith("cuda") else "cpu", request.threads)
    models = request.models or [None]
    if request.artifact:
        found = opened.manifest if opened is not None else None
        models = [request.models[0] if request.models else (found.model.name if found else None)]
    results = []
    for model in models:
        for backend in request.backends:
            runs_model = get_backend(backend).consumes == "model"
            for layout in (request.layouts if runs_model else [None]):
                target = _Target(request, model, backend, layout, opened)
                try:
                    for streams, batch in [(s, b) for s in request.streams for b in request.batches]:
                        if batch == "max":
                            rows = max_batch_sweep(target, machine, peak, progress, request.max_batch_limit,
                                                   streams)
                        else:
                            rows = [bench_row(target, batch, machine, peak, progress, streams=streams)]
                        for row in rows:
                            if any(row is seen for seen in results):
                                continue
                            results.append(row)
                            if on_row:
                                on_row(row)
                finally:
                    target.close()
    return {"schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "protocol": asdict(request.protocol) | {"max_batch_min_gain": MAX_BATCH_MIN_GAIN,
                                                    "max_batch_call_s": MAX_BATCH_CALL_S},
            "flops": {"flops_per_mac": FLOPS_PER_MAC, "counted": "conv, linear and matmul MACs "
                      "(segdeploy.models.complexity); papers' GFLOPs are MACs"},
            "peak": peak, "machine": machine, "results": results}


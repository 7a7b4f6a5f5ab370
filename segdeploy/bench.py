"""Benchmarks written once against the runner contract: timing protocol, statistics, paper comparison, reports.

Protocol (trtexec-like, one synchronous request at a time):
  * warm-up: run until ``warmup_s`` has passed (at least one call; the first call is reported as ``first_ms``);
  * timed: run until both ``min_s`` seconds and ``min_iters`` calls are done; every call is timed on the host around
    ``runner.infer`` (so host latency includes input/output copies, as in the papers' PyTorch protocol);
  * throughput = images / wall time of the timed loop; latency = mean, std, min, max and p50/p90/p95/p99;
  * host vs device split: the runner's own ``last_timing`` (H2D, compute, D2H) where the backend can tell;
  * memory: CPU = peak RSS during the row minus RSS before its runner was built (sampled every 10 ms);
    CUDA = the runner's peak device allocation.

FLOPs: the models' MACs come from segdeploy.models.complexity (conv, linear and matmul MACs); achieved GFLOP/s counts
**2 FLOPs per MAC**. The papers' "GFLOPs" are MACs (mmcv convention), so the report puts measured GMACs next to them.
The FP32 peak is this run's own large-matmul rate with the same thread count: a practical peak, not the datasheet's.

``--batch max`` mirrors the papers' "maximum batch size" protocol, which on a GPU means filling its memory. A CPU
saturates long before its memory fills, so here the batch doubles from 1 until throughput stops improving by more
than ``MAX_BATCH_MIN_GAIN`` over the best so far, a call would exceed ``MAX_BATCH_CALL_S`` seconds, the next batch
would likely exceed half of the available memory, or ``max_batch_limit`` is reached; the row with the best
throughput is the "max" row.
"""
from __future__ import annotations

import csv
import datetime as _dt
import importlib.util
import io
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from segdeploy.errors import InputError, SegdeployError
from segdeploy.runtimes.base import Runner, random_feed

SCHEMA = "segdeploy.bench/1"
FLOPS_PER_MAC = 2
PERCENTILES = (50, 90, 95, 99)
MAX_BATCH_MIN_GAIN = 0.03
MAX_BATCH_CALL_S = 10.0

Progress = Callable[[str, float], None]  # (what is running, fraction done of this row)


@dataclass
class Protocol:
    warmup_s: float = 1.0
    min_s: float = 3.0
    min_iters: int = 10
    max_iters: int | None = None

    def __post_init__(self):
        if self.warmup_s < 0 or self.min_s < 0:
            raise InputError("--warmup-s and --min-s must be >= 0")
        if self.min_iters < 1:
            raise InputError("the protocol needs at least one timed iteration")


# ----------------------------------------------------------------------------------------------------------------
# Statistics


def latency_stats(samples_ms) -> dict:
    """Mean, std (sample, ddof=1), min, max, p50/p90/p95/p99 (linear interpolation) and a 2-sigma-clipped mean of
    latencies in ms."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latency samples")
    stats = {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
             "min": float(a.min()), "max": float(a.max())}
    for q, v in zip(PERCENTILES, np.percentile(a, PERCENTILES)):
        stats[f"p{q}"] = float(v)
    # Ultralytics' profiler: iterative 2-sigma clipping (3 passes) drops the calls another process interrupted
    kept = a
    for _ in range(3):
        if kept.size < 3:
            break
        mean, std = kept.mean(), kept.std()
        inside = kept[np.abs(kept - mean) <= 2 * std]
        if inside.size == kept.size or inside.size == 0:
            break
        kept = inside
    stats["mean_clipped"] = float(kept.mean())
    return stats


def _mean_or_none(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


# ----------------------------------------------------------------------------------------------------------------
# Memory


def current_rss() -> int | None:
    """Resident set size of this process in bytes (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS so an RSS baseline is not inflated by the previous row's leftovers."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the baseline is a little high, the delta a little low
        pass


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class RssSampler:
    """Peak RSS while the block runs, from a background thread (allocations inside one long call are caught)."""

    def __init__(self, interval_s: float = 0.01):
        self.interval_s = interval_s
        self.peak = current_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self):
        rss = current_rss()
        if rss is not None and (self.peak is None or rss > self.peak):
            self.peak = rss

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


# ----------------------------------------------------------------------------------------------------------------
# Timing one runner


def time_runner(runner: Runner, feed: dict, protocol: Protocol, progress: Progress | None = None,
                label: str = "") -> dict:
    """Warm up, then time ``runner.infer(feed)`` by the protocol; returns latency stats, throughput and splits."""
    batch = next(iter(feed.values())).shape[0]
    start = time.perf_counter()
    first_ms = None
    while True:
        t = time.perf_counter()
        runner.infer(feed)
        if first_ms is None:
            first_ms = (time.perf_counter() - t) * 1e3
        if time.perf_counter() - start >= protocol.warmup_s:
            break
    runner.peak_device_memory(reset=True)
    samples, h2d, compute, d2h, host = [], [], [], [], []
    loop_start = time.perf_counter()
    while True:
        t = time.perf_counter()
        runner.infer(feed)
        samples.append((time.perf_counter() - t) * 1e3)
        timing = runner.last_timing
        host.append(timing.host_ms)
        h2d.append(timing.h2d_ms)
        compute.append(timing.compute_ms)
        d2h.append(timing.d2h_ms)
        elapsed = time.perf_counter() - loop_start
        if progress:  # done when both the time and the call count are reached: the slower of the two
            by_time = elapsed / protocol.min_s if protocol.min_s > 0 else 1.0
            progress(label, min(1.0, by_time, len(samples) / protocol.min_iters))
        if protocol.max_iters and len(samples) >= protocol.max_iters:
            break
        if elapsed >= protocol.min_s and len(samples) >= protocol.min_iters:
            break
    wall_s = time.perf_counter() - loop_start
    return {"iterations": len(samples), "wall_s": wall_s, "first_ms": first_ms,
            "latency_ms": latency_stats(samples), "throughput_ips": batch * len(samples) / wall_s,
            "split_ms": {"host": _mean_or_none(host), "h2d": _mean_or_none(h2d), "compute": _mean_or_none(compute),
                         "d2h": _mean_or_none(d2h)}}


def _fastest_seconds(call, seconds: float) -> tuple[float, int]:
    call()  # warm-up: thread pool, kernel selection
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    # The fastest call is the peak: slower ones measure whatever else the machine was doing meanwhile.
    return min(times), len(times)


def _torch_matmul(device: str, n: int):
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # FP32 means FP32, not TF32 tensor cores
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def call():
        torch.mm(a, b)
        sync()

    return call


def _onnxruntime_matmul(n: int, threads: int | None):
    """One MatMul node in ONNX Runtime: its MLAS kernels use AVX-512 where torch's BLAS may not (AMD CPUs)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    square = [n, n]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, square) for k in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, square)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {k: np.random.default_rng(0).standard_normal(square, dtype=np.float32) for k in "ab"}
    return lambda: session.run(None, feed)


def fp32_peak_gflops(device: str = "cpu", threads: int | None = None, n: int = 2048, seconds: float = 0.5) -> dict:
    """This machine's practical FP32 peak: GFLOP/s of repeated (n x n) @ (n x n) matmuls (2 n^3 FLOPs each).

    On the CPU it is the best of torch.mm and ONNX Runtime's MatMul: libraries differ by 2-3x on the same chip
    (torch's BLAS ran AVX2 code on an AVX-512 AMD EPYC), and a peak lower than what a backend reaches is no peak.
    """
    import torch

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    engines = {"torch.mm": lambda: _torch_matmul(device, n)}
    if torch.device(device).type == "cpu" and importlib.util.find_spec("onnxruntime") is not None:
        engines["onnxruntime MatMul"] = lambda: _onnxruntime_matmul(n, threads)
    measured = {}
    try:
        for name, make in engines.items():
            fastest, calls = _fastest_seconds(make(), seconds)
            measured[name] = (2 * n**3 / fastest / 1e9, calls)
    finally:
        torch.set_num_threads(old_threads)
    best = max(measured, key=lambda k: measured[k][0])
    method = "; ".join(f"{name} {gflops:.0f} GFLOP/s (fastest of {calls})" for name, (gflops, calls) in
                       measured.items())
    return {"device": device, "gflops": measured[best][0], "engine": best,
            "by_engine": {name: round(g, 1) for name, (g, _) in measured.items()},
            "method": f"fp32 {n}x{n} matmul, best engine: {method}", "threads": threads or old_threads}


# ----------------------------------------------------------------------------------------------------------------
# Paper comparison


_DEVICE_NOISE = {"nvidia", "tesla", "geforce", "gpu", "rtx", "amd", "intel", "sxm2", "pcie"}


def same_device(paper_device: str, ours: str) -> bool:
    """Whether the paper's device names ours (its model tokens, e.g. "v100" or "3090", all occur in our name)."""
    tokens = [t for t in paper_device.lower().replace("-", " ").split() if t not in _DEVICE_NOISE]
    ours = ours.lower()
    return bool(tokens) and all(t in ours for t in tokens) and "unspecified" not in tokens


def paper_throughput_rows(model: str, height: int, width: int, batch: int, is_max: bool, throughput_ips: float,
                          device: str) -> list[dict]:
    """Every throughput figure the papers give for ``model``, set against this measurement with the ratio
    measured/paper and flags saying what differs (device, input size, batch protocol)."""
    from segdeploy.models import get_spec

    rows = []
    for entry in get_spec(model).paper.throughput:
        paper_batch = entry.get("batch")
        paper_ips = entry.get("throughput_ips")
        if paper_ips is None and entry.get("latency_ms"):
            paper_ips = 1000.0 / entry["latency_ms"] * (paper_batch if isinstance(paper_batch, int) else 1)
        same_input = list(entry.get("input") or []) == [height, width]
        same_batch = (paper_batch == "maximum" and is_max) or paper_batch == batch
        cross = not same_device(entry.get("device", ""), device)
        label = "cross-device" if cross else "same device"
        if not same_input:
            label += ", different input"
        if not same_batch:
            label += ", different batch"
        rows.append({"device": entry.get("device"), "input": entry.get("input"), "batch": paper_batch,
                     "throughput_ips": paper_ips, "ratio": throughput_ips / paper_ips if paper_ips else None,
                     "cross_device": cross, "same_input": same_input, "same_batch": same_batch, "label": label,
                     "source": entry.get("source")})
    return rows


def best_paper_match(rows: list[dict]) -> dict | None:
    """The figure closest to this setting: same input first, then same batch protocol."""
    if not rows:
        return None
    return max(rows, key=lambda r: (r["same_input"], r["same_batch"], not r["cross_device"]))


_COMPLEXITY: dict = {}


def complexity(model: str, height: int, width: int) -> dict:
    from segdeploy.models.complexity import measure

    key = (model, height, width)
    if key not in _COMPLEXITY:
        _COMPLEXITY[key] = measure(model, height, width)
    return _COMPLEXITY[key]


def paper_comparison(model: str, height: int, width: int, batch: int, is_max: bool, throughput_ips: float,
                     device: str) -> dict:
    from segdeploy.models import get_spec

    paper = get_spec(model).paper
    c = complexity(model, height, width)
    params_m = c["params"] / 1e6
    return {"params_m": params_m, "params_m_paper": paper.params_m,
            "params_ratio": params_m / paper.params_m if paper.params_m else None,
            "gmacs": c["gmacs"], "gflops_paper": paper.flops_g_512,
            # the papers' GFLOPs are MACs at 512x512; another input size is not comparable
            "gmacs_ratio": c["gmacs"] / paper.flops_g_512 if paper.flops_g_512 and (height, width) == (512, 512)
            else None,
            "throughput": paper_throughput_rows(model, height, width, batch, is_max, throughput_ips, device)}


# ----------------------------------------------------------------------------------------------------------------
# What to run


@dataclass
class BenchRequest:
    models: list[str] = field(default_factory=list)
    artifact: str | None = None
    backends: list[str] = field(default_factory=lambda: ["torch"])
    height: int = 512
    width: int = 512
    batches: list = field(default_factory=lambda: [1])  # ints and/or "max"
    threads: int | None = None
    device: str = "cpu"
    precision: str = "fp32"
    layouts: list[str] = field(default_factory=lambda: ["nchw"])  # torch only
    compile: bool = False
    cuda_graphs: bool = False
    checkpoint: str | None = None
    export_dir: str = os.path.join("artifacts", "bench")
    # Opset 20 exports nn.GELU as one Gelu node. At opset 17 it is Div-Erf-Add-Mul-Mul, the simplifier folds the
    # trailing Mul(0.5) into the next Conv, and ONNX Runtime's Gelu fusion no longer matches: 14 % of CGRSeg-T's CPU
    # time went to Erf alone, and ORT fell behind OpenVINO (benchmarks/README.md).
    opset: int = 20
    force_export: bool = False
    max_batch_limit: int = 64
    measure_peak: bool = True
    protocol: Protocol = field(default_factory=Protocol)


def parse_batches(text: str) -> list:
    """"1,2,4" -> [1, 2, 4]; "max" and "1,max" allowed."""
    out = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if part == "max":
            out.append("max")
            continue
        try:
            value = int(part)
        except ValueError:
            raise InputError(f"--batch takes positive integers and/or 'max' (e.g. 1,2,4,8 or max), not {text!r}") \
                from None
        if value < 1:
            raise InputError(f"--batch values must be >= 1, got {value}")
        out.append(value)
    return list(dict.fromkeys(out))


# Precisions each backend can be asked for (TensorRT runs what the engine was built with).
BACKEND_PRECISIONS = {"torch": ("fp32", "fp16"), "onnxruntime": ("fp32",), "openvino": ("fp32", "bf16", "fp16"),
                      "tensorrt": ()}


def check_request(request: BenchRequest) -> None:
    """Fail early, with one line, on anything the run would otherwise trip over halfway."""
    from segdeploy.models import get_spec
    from segdeploy.runtimes.registry import BACKEND_INPUT, backend_status

    if not request.models and not request.artifact:
        raise InputError("give --model NAME[,NAME...] or --artifact FILE")
    if request.artifact and not os.path.isfile(request.artifact):
        raise InputError(f"artifact not found: {request.artifact}")
    if request.artifact and request.artifact.endswith(".onnx"):
        from segdeploy.export.metadata import load_onnx

        load_onnx(request.artifact)  # a corrupt file is one ArtifactError line, not a failed row per backend
    if request.artifact and len(request.models) > 1:
        raise InputError("--artifact benchmarks one model; give at most one --model to name it")
    for name in request.models:
        spec = get_spec(name)
        m = spec.size_multiple
        if request.height % m or request.width % m:
            raise InputError(f"{name} needs a size that is a multiple of {m}, not {request.height}x{request.width}")
    if request.height <= 0 or request.width <= 0:
        raise InputError("--height and --width must be positive")
    if not request.backends:
        raise InputError("no backend given")
    for backend in request.backends:
        status = backend_status(backend)
        if not status.available:
            raise SegdeployError(f"backend {backend} is not usable here: {status.reason}")
        if request.artifact and BACKEND_INPUT[backend] == "model":
            raise InputError(f"backend {backend} runs the PyTorch model, not an artifact; use --model")
    for backend in request.backends:
        allowed = BACKEND_PRECISIONS[backend]
        if allowed and request.precision not in allowed:
            raise InputError(f"backend {backend} runs {' or '.join(allowed)}, not {request.precision}")
        if backend in ("onnxruntime", "openvino") and request.device != "cpu":
            raise InputError(f"backend {backend} runs on the CPU here; --device {request.device} is for torch")
    if request.precision == "fp16" and "torch" in request.backends and not request.device.startswith("cuda"):
        raise InputError("torch fp16 needs --device cuda (PyTorch's CPU half kernels are reference code)")
    if request.threads is not None and request.threads < 1:
        raise InputError("--threads must be >= 1")


def device_label(request: BenchRequest, machine: dict) -> str:
    if request.device.startswith("cuda"):
        return ", ".join(machine.get("gpus") or ["cuda"])
    cpu = machine["cpu"]
    return f"{cpu['model']} ({request.threads or cpu['usable_cores']} threads)"


def onnx_artifact(model: str, request: BenchRequest, batch: int) -> str:
    """A static-shape ONNX export of ``model`` for this size and batch, cached in ``export_dir``.

    Static shapes because ONNX Runtime and OpenVINO plan memory and pick kernels better for them than for dynamic
    ones; the cache is keyed by model, size and batch (``force_export`` rebuilds after a model change).
    """
    try:
        from segdeploy.export.onnx import export_onnx
    except ImportError as exc:
        raise SegdeployError(f"ONNX export is not available in this install ({exc}); pass --artifact") from None
    weights = "recipe" if request.checkpoint is None else os.path.splitext(os.path.basename(request.checkpoint))[0]
    path = os.path.join(request.export_dir, f"{model}_{request.height}x{request.width}_b{batch}_opset{request.opset}"
                                            f"_{weights}.onnx")
    if request.force_export or not os.path.isfile(path):
        # validate=False: benchmarking is not validation (``segdeploy validate`` is, and export validates by
        # default); the bench only needs the graph.
        export_onnx(model, path, checkpoint=request.checkpoint, height=request.height, width=request.width,
                    batch=batch, dynamic=False, opset=request.opset, force=True, validate=False)
    return path


def artifact_model_name(path: str) -> str | None:
    """The registered model an artifact was exported from, from its embedded metadata or sidecar."""
    try:
        from segdeploy.export import metadata
    except ImportError:
        return None
    try:
        return metadata.read(path).get("model")
    except Exception:  # foreign artifact: no paper comparison, still benchmarkable
        return None


# ----------------------------------------------------------------------------------------------------------------
# Rows


class _Target:
    """One (model or artifact, backend, layout): hands out a runner per batch size, reusing it when it can."""

    def __init__(self, request: BenchRequest, model: str | None, backend: str, layout: str | None):
        self.request, self.model, self.backend, self.layout = request, model, backend, layout
        self._runner = None
        self.rows: dict[int, dict] = {}  # batch -> row, so "1,max" measures batch 1 once
        self.baseline_rss = None  # RSS before the current runner was built: the zero of its memory figure

    def runner(self, batch: int) -> Runner:
        from segdeploy.runtimes.registry import create_runner

        r = self.request
        if self.backend == "torch":
            if self._runner is None:  # dynamic shapes: one model for every batch
                release_free_memory()
                self.baseline_rss = current_rss()
                self._runner = create_runner("torch", model=self.model, device=r.device, precision=r.precision,
                                             threads=r.threads, layout=self.layout, compile=r.compile,
                                             cuda_graphs=r.cuda_graphs, checkpoint=r.checkpoint)
            return self._runner
        self.close()
        artifact = r.artifact or onnx_artifact(self.model, r, batch)
        release_free_memory()
        self.baseline_rss = current_rss()
        options = {"graph_optimization": "all"} if self.backend == "onnxruntime" else {}
        self._runner = create_runner(self.backend, artifact=artifact, device=r.device, precision=r.precision,
                                     threads=r.threads, **options)
        return self._runner

    def close(self):
        if self._runner is not None:
            self._runner.close()
            self._runner = None


def bench_row(target: _Target, batch: int, machine: dict, peak: dict | None, progress: Progress | None = None,
              is_max: bool = False, sweep: bool = False) -> dict:
    """Build (or reuse) the runner for ``batch``, time it, and fill one report row; failures become a row too."""
    if batch in target.rows:
        row = target.rows[batch]
        row["sweep"] = row["sweep"] or ("max" if sweep else None)
        return row
    row = _measure_row(target, batch, machine, peak, progress, is_max, sweep)
    target.rows[batch] = row
    return row


def _measure_row(target: _Target, batch: int, machine: dict, peak: dict | None, progress: Progress | None,
                 is_max: bool, sweep: bool) -> dict:
    r = target.request
    row = {"model": target.model, "artifact": r.artifact, "backend": target.backend, "device": r.device,
           "precision": r.precision, "layout": target.layout or "nchw", "batch": batch, "height": r.height,
           "width": r.width, "threads": r.threads or machine["cpu"]["usable_cores"], "sweep": "max" if sweep else None,
           "max_batch": is_max, "status": "ok"}
    if target.backend == "torch":
        row.update(compile=r.compile, cuda_graphs=r.cuda_graphs)
    label = f"{target.model or os.path.basename(r.artifact)} {target.backend}" + \
        (f" {target.layout}" if target.backend == "torch" else "") + f" b{batch}"
    try:
        with RssSampler() as rss:
            if progress:
                progress(label + " (loading)", 0.0)
            runner = target.runner(batch)
            feed = random_feed(runner, batch, r.height, r.width)
            fed = next(iter(feed.values())).shape
            if fed[0] != batch:
                raise InputError(f"the artifact has a fixed batch of {fed[0]}; pass --batch {fed[0]}")
            # a static artifact decides the size it is fed; record that, not the request's default
            row["height"], row["width"] = int(fed[-2]), int(fed[-1])
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
    except SegdeployError as exc:
        row.update(status="failed", error=str(exc))
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


def add_flops(row: dict, model: str | None, peak: dict | None) -> None:
    row["flops_per_mac"] = FLOPS_PER_MAC
    if not model:
        row["gmacs_per_image"] = row["achieved_gflops"] = row["peak_fraction"] = None
        return
    gmacs = complexity(model, row["height"], row["width"])["gmacs"]
    row["gmacs_per_image"] = gmacs
    row["achieved_gflops"] = FLOPS_PER_MAC * gmacs * row["throughput_ips"]
    row["peak_fraction"] = row["achieved_gflops"] / peak["gflops"] if peak else None


def max_batch_sweep(target: _Target, machine: dict, peak: dict | None, progress: Progress | None,
                    limit: int) -> list[dict]:
    """Double the batch until throughput saturates (see the module docstring); the best row is marked max."""
    rows, best, batch = [], None, 1
    while batch <= limit:
        row = bench_row(target, batch, machine, peak, progress, sweep=True)
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
    """Run every (model, backend, layout, batch) of ``request``; returns the report (see ``report_schema``)."""
    from segdeploy.runtimes.registry import machine_info

    check_request(request)
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
        models = [request.models[0] if request.models else artifact_model_name(request.artifact)]
    results = []
    for model in models:
        for backend in request.backends:
            for layout in (request.layouts if backend == "torch" else [None]):
                target = _Target(request, model, backend, layout)
                try:
                    for batch in request.batches:
                        if batch == "max":
                            rows = max_batch_sweep(target, machine, peak, progress, request.max_batch_limit)
                        else:
                            rows = [bench_row(target, batch, machine, peak, progress)]
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


# ----------------------------------------------------------------------------------------------------------------
# Reports

CSV_COLUMNS = ("model", "backend", "device", "precision", "layout", "batch", "max_batch", "height", "width", "threads",
               "status", "iterations", "latency_mean_ms", "latency_std_ms", "latency_mean_clipped_ms",
               "latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "throughput_ips", "host_ms",
               "h2d_ms", "compute_ms", "d2h_ms", "memory_kind", "memory_peak_mb", "params_m", "params_m_paper",
               "gmacs", "gflops_paper", "achieved_gflops", "peak_fraction", "paper_device", "paper_input",
               "paper_batch", "paper_ips", "paper_ratio", "paper_label", "error")


def flat_row(row: dict) -> dict:
    """One row as flat columns (CSV, tables); the closest paper throughput figure stands for the full list."""
    lat = row.get("latency_ms") or {}
    split = row.get("split_ms") or {}
    mem = row.get("memory") or {}
    paper = row.get("paper") or {}
    match = best_paper_match(paper.get("throughput") or []) or {}
    out = {k: row.get(k) for k in ("model", "backend", "device", "precision", "layout", "batch", "max_batch", "height",
                                   "width", "threads", "status", "iterations", "throughput_ips", "achieved_gflops",
                                   "peak_fraction", "error")}
    out.update({f"latency_{k}_ms": lat.get(k) for k in ("mean", "std", "mean_clipped", "p50", "p90", "p95", "p99")})
    out.update({"host_ms": split.get("host"), "h2d_ms": split.get("h2d"), "compute_ms": split.get("compute"),
                "d2h_ms": split.get("d2h"), "memory_kind": mem.get("kind"), "memory_peak_mb": mem.get("peak_mb"),
                "params_m": paper.get("params_m"), "params_m_paper": paper.get("params_m_paper"),
                "gmacs": paper.get("gmacs", row.get("gmacs_per_image")), "gflops_paper": paper.get("gflops_paper"),
                "paper_device": match.get("device"),
                "paper_input": "x".join(map(str, match["input"])) if match.get("input") else None,
                "paper_batch": match.get("batch"), "paper_ips": match.get("throughput_ips"),
                "paper_ratio": match.get("ratio"), "paper_label": match.get("label")})
    return {k: out.get(k) for k in CSV_COLUMNS}


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, default=str) + "\n"


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report["results"]:
        writer.writerow({k: ("" if v is None else v) for k, v in flat_row(row).items()})
    return buf.getvalue()


def _f(value, fmt="{:.2f}", missing="-"):
    return missing if value is None else fmt.format(value)


def _short_device(name: str | None) -> str:
    words = [w for w in (name or "?").split() if w.lower() not in ("nvidia", "tesla", "geforce")]
    return " ".join(words) or "?"


def _row_names(row: dict) -> list[str]:
    backend = row["backend"] + (f" {row['layout']}" if row["layout"] != "nchw" else "") + \
        (" compiled" if row.get("compile") else "") + (" cuda-graphs" if row.get("cuda_graphs") else "") + \
        (f" {row['precision']}" if row["precision"] != "fp32" else "")
    return [row.get("model") or os.path.basename(row.get("artifact") or "-"), backend,
            f"{row['batch']}" + (" max" if row.get("max_batch") else "")]


def _flops_cell(f: dict) -> str:
    percent = None if f["peak_fraction"] is None else 100 * f["peak_fraction"]
    return f"{_f(f['achieved_gflops'], '{:.1f}')} ({_f(percent, '{:.0f}%')})"


def timing_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Terminal table 1: latency statistics, throughput, host/device split and memory."""
    columns = ["model", "backend", "batch", "ms mean±std", "p50", "p90", "p95", "p99", "img/s", "h2d/compute/d2h",
               "mem MB"]
    rows = []
    for row in report["results"]:
        f = flat_row(row)
        if row["status"] != "ok":
            rows.append(_row_names(row) + [f"FAILED: {row.get('error')}"] + [""] * (len(columns) - 4))
            continue
        split = "/".join(_f(f[k], "{:.1f}") for k in ("h2d_ms", "compute_ms", "d2h_ms"))
        rows.append(_row_names(row) + [f"{f['latency_mean_ms']:.1f} ± {f['latency_std_ms']:.1f}"] +
                    [_f(f[f"latency_p{q}_ms"], "{:.1f}") for q in PERCENTILES] +
                    [_f(f["throughput_ips"], "{:.1f}"), "host only" if split == "-/-/-" else split,
                     _f(f["memory_peak_mb"], "{:.0f}")])
    return columns, rows


def paper_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Terminal table 2: the same rows against the papers (params, GFLOPs, the closest throughput figure)."""
    columns = ["model", "backend", "batch", "img/s", "GFLOP/s (%pk)", "params M / paper", "GMACs / paper",
               "paper img/s", "paper setting", "ratio"]
    rows = []
    for row in report["results"]:
        if row["status"] != "ok":
            continue
        f = flat_row(row)
        setting = "-" if f["paper_ips"] is None else \
            f"{_short_device(f['paper_device'])} {f['paper_input']} b={f['paper_batch']}; {f['paper_label']}"
        rows.append(_row_names(row) + [_f(f["throughput_ips"], "{:.1f}"), _flops_cell(f),
                                       f"{_f(f['params_m'])} / {_f(f['params_m_paper'], '{:.1f}')}",
                                       f"{_f(f['gmacs'])} / {_f(f['gflops_paper'], '{:.1f}')}",
                                       _f(f["paper_ips"], "{:.1f}"), setting, _f(f["paper_ratio"], "{:.3f}")])
    return columns, rows


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """The full table (Markdown): every metric and the closest paper figure on one row."""
    columns = ["model", "backend", "batch", "ms mean±std", "p50", "p90", "p95", "p99", "img/s",
               "GFLOP/s (% peak)", "mem MB", "params M / paper", "GMACs / paper GFLOPs", "paper img/s [setting]",
               "measured / paper"]
    rows = []
    for row in report["results"]:
        f = flat_row(row)
        if row["status"] != "ok":
            rows.append(_row_names(row) + [f"FAILED: {row.get('error')}"] + [""] * (len(columns) - 4))
            continue
        paper = "-" if f["paper_ips"] is None else (
            f"{f['paper_ips']:.1f} [{f['paper_device']}, {f['paper_input']}, batch {f['paper_batch']}; "
            f"{f['paper_label']}]")
        rows.append(_row_names(row) + [f"{f['latency_mean_ms']:.2f} ± {f['latency_std_ms']:.2f}"] +
                    [_f(f[f"latency_p{q}_ms"]) for q in PERCENTILES] +
                    [_f(f["throughput_ips"]), _flops_cell(f), _f(f["memory_peak_mb"], "{:.0f}"),
                     f"{_f(f['params_m'])} / {_f(f['params_m_paper'], '{:.1f}')}",
                     f"{_f(f['gmacs'])} / {_f(f['gflops_paper'], '{:.1f}')}", paper, _f(f["paper_ratio"], "{:.3f}")])
    return columns, rows


def machine_summary(report: dict) -> str:
    m = report["machine"]
    cpu = m["cpu"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    peak = report.get("peak")
    peak_text = f"; FP32 peak {peak['gflops']:.0f} GFLOP/s ({peak['method']}, {peak['threads']} threads)" if peak \
        else ""
    return (f"{m['host']}: {cpu['model']}, {cpu['usable_cores']} usable cores, ISA {' '.join(cpu['isa']) or '-'}; "
            f"load {m['load_average']}{peak_text}; {versions}")


def to_markdown(report: dict) -> str:
    columns, rows = table_rows(report)
    p = report.get("protocol") or asdict(Protocol())
    lines = [f"# segdeploy bench ({report.get('created', '?')})", "", machine_summary(report), "",
             f"Protocol: warm-up {p['warmup_s']} s, then at least {p['min_s']} s and {p['min_iters']} calls, one "
             "synchronous request at a time; latency is host wall time per call; GFLOP/s = 2 x GMACs x img/s. "
             "Paper figures are the authors' (GPU) numbers: a ratio across devices is context, not a like-for-like "
             "comparison.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str) -> str:
    """Throughput vs GMACs per image: measured rows per backend and the papers' points, log-scale throughput."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SegdeployError("--plot needs matplotlib (pip install 'segdeploy[plot]')") from None
    from segdeploy.models import get_spec

    fig, ax = plt.subplots(figsize=(8, 5.5))
    ok = [r for r in report["results"] if r["status"] == "ok" and r.get("gmacs_per_image")]
    for key in sorted({_row_names(r)[1] for r in ok}):
        rows = [r for r in ok if _row_names(r)[1] == key]
        label = key
        ax.scatter([r["gmacs_per_image"] for r in rows], [r["throughput_ips"] for r in rows], label=label, s=30)
        for r in rows:
            ax.annotate(f"{r['model']} b{r['batch']}", (r["gmacs_per_image"], r["throughput_ips"]), fontsize=6,
                        xytext=(3, 2), textcoords="offset points")
    papers = {}
    for model in sorted({r["model"] for r in ok}):
        spec = get_spec(model)
        for entry in spec.paper.throughput:
            ips = entry.get("throughput_ips") or (1000.0 / entry["latency_ms"] if entry.get("latency_ms") else None)
            if ips and spec.paper.flops_g_512:
                # MACs grow with the pixel count, so a figure at another input sits at the scaled GFLOPs
                h, w = entry.get("input") or (512, 512)
                papers.setdefault(entry["device"], []).append((spec.paper.flops_g_512 * h * w / 512**2, ips, model,
                                                               entry))
    for device, points in sorted(papers.items()):
        ax.scatter([p[0] for p in points], [p[1] for p in points], marker="x", s=40,
                   label=f"paper: {device}")
        for x, y, model, entry in points:
            ax.annotate(f"{model} {entry['input'][0]}x{entry['input'][1]} b={entry['batch']}", (x, y), fontsize=6,
                        xytext=(3, -8), textcoords="offset points")
    ax.set_xlabel("GMACs per image, log (papers: their 'GFLOPs', scaled by pixel count to the figure's input)")
    ax.set_ylabel("throughput (img/s, log)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    cpu = report["machine"]["cpu"]
    ax.set_title(f"Measured on {cpu['model']} ({cpu['usable_cores']} cores) vs the papers' GPU figures", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    from segdeploy.io import write_bytes_atomic

    return write_bytes_atomic(path, buf.getvalue(), force=True)


def write_reports(report: dict, json_path=None, csv_path=None, md_path=None, plot_path=None) -> list[str]:
    from segdeploy.io import write_text_atomic

    written = []
    for path, render in ((json_path, to_json), (csv_path, to_csv), (md_path, to_markdown)):
        if path:
            written.append(write_text_atomic(path, render(report), force=True))
    if plot_path:
        written.append(plot(report, plot_path))
    return written

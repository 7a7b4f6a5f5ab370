"""The timing protocol (trtexec-like, one synchronous request at a time):

* warm-up: run until ``warmup_s`` has passed (at least one call; the first call is reported as ``first_ms``);
* timed: run until both ``min_s`` seconds and ``min_iters`` calls are done; every call is timed on the host around
  ``runner.infer`` (so host latency includes input/output copies, as in the papers' PyTorch protocol);
* throughput = images / wall time of the timed loop; latency = mean, std, min, max and p50/p90/p95/p99;
* host vs device split: the runner's own ``last_timing`` (H2D, compute, D2H) where the backend can tell.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from segdeploy.errors import InputError
from segdeploy.evaluation.bench.stats import latency_stats, mean_or_none
from segdeploy.runtimes.base import Runner

Progress = Callable[[str, float], None]  # (what is running, fraction done of this row)
MAX_SECONDS = 3600.0  # per row: an hour of warm-up or timing is a typo, not a protocol
MAX_ITERS = 1_000_000


@dataclass
class Protocol:
    warmup_s: float = 1.0
    min_s: float = 3.0
    min_iters: int = 10
    max_iters: int | None = None

    def __post_init__(self):
        for flag, value in (("--warmup-s", self.warmup_s), ("--min-s", self.min_s)):
            if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):  # NaN would never end the loop
                raise InputError(f"{flag} takes seconds from 0 to {MAX_SECONDS:g}, not {value}")
        if not 1 <= self.min_iters <= MAX_ITERS:
            raise InputError(f"--min-iters takes 1 to {MAX_ITERS:,} timed calls, not {self.min_iters}")



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
            "samples_ms": [round(s, 4) for s in samples],  # every timed call: the raw data behind the statistics
            "split_ms": {"host": mean_or_none(host), "h2d": mean_or_none(h2d), "compute": mean_or_none(compute),
                         "d2h": mean_or_none(d2h)}}


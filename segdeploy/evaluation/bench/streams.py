"""Throughput at full load: ``streams`` requests in flight at once, one thread per stream, each calling its own
stream of the runner (Runner.stream_calls: OpenVINO's THROUGHPUT mode, parallel ONNX Runtime sessions) back to
back, as a server under load does.

* warm-up: every stream runs until ``warmup_s`` has passed (at least one call each);
* timed: all streams start together and run until ``min_s`` has passed and ``min_iters`` calls are done in all;
  each stops after its current call; every call's latency is kept;
* throughput = images of all calls / wall time from the common start to the last call's end; latency statistics
  are per request, under that load (a single stream's latency is the plain bench row's).
"""
from __future__ import annotations

import threading
import time

from segdeploy.errors import SegdeployError
from segdeploy.evaluation.bench.protocol import Progress, Protocol
from segdeploy.evaluation.bench.stats import latency_stats

MAX_STREAMS = 256


def time_streams(calls: list, feed: dict, protocol: Protocol, progress: Progress | None = None,
                 label: str = "") -> dict:
    """Time ``calls`` (one per stream) on ``feed`` by the protocol above; returns the bench row's timing fields."""
    batch = next(iter(feed.values())).shape[0]
    streams = len(calls)
    samples: list[list[float]] = [[] for _ in calls]
    errors: list[BaseException] = []
    stop = threading.Event()
    ready = threading.Barrier(streams + 1)
    go = threading.Barrier(streams + 1)

    def worker(index: int, call) -> None:
        try:
            start = time.perf_counter()
            while True:  # warm-up
                call(feed)
                if time.perf_counter() - start >= protocol.warmup_s:
                    break
        except BaseException as exc:  # noqa: BLE001 - reported once, below
            errors.append(exc)
        ready.wait()
        go.wait()
        while not stop.is_set() and not errors:
            t = time.perf_counter()
            try:
                call(feed)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                break
            samples[index].append((time.perf_counter() - t) * 1e3)

    threads = [threading.Thread(target=worker, args=(i, call), daemon=True) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    ready.wait()
    if errors:
        stop.set()
        go.wait()
        for thread in threads:
            thread.join()
        raise _one_error(errors[0])
    start = time.perf_counter()
    go.wait()
    while True:
        time.sleep(0.01)
        elapsed = time.perf_counter() - start
        done = sum(len(s) for s in samples)
        if progress:
            by_time = elapsed / protocol.min_s if protocol.min_s > 0 else 1.0
            progress(label, min(1.0, by_time, done / protocol.min_iters))
        if errors or (elapsed >= protocol.min_s and done >= protocol.min_iters):
            break
    stop.set()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - start
    if errors:
        raise _one_error(errors[0])
    every = [ms for stream in samples for ms in stream]
    return {"streams": streams, "iterations": len(every), "wall_s": wall_s, "first_ms": None,
            "latency_ms": latency_stats(every), "throughput_ips": batch * len(every) / wall_s,
            "per_stream_calls": [len(s) for s in samples],
            "split_ms": {"host": None, "h2d": None, "compute": None, "d2h": None}}


def _one_error(exc: BaseException) -> BaseException:
    if isinstance(exc, (SegdeployError, KeyboardInterrupt)):
        return exc
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SegdeployError(f"a stream failed: {detail}")

"""Latency statistics of one timed loop."""
from __future__ import annotations

import numpy as np

PERCENTILES = (50, 90, 95, 99)


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


def mean_or_none(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


"""Host memory of a benchmark row: peak RSS sampled in the background, relative to a baseline taken before the
runner was built (freed heap handed back to the OS first, so the previous row's leftovers do not count)."""
from __future__ import annotations

import os
import threading

from segdeploy.hostinfo import memory_available_bytes


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
    return memory_available_bytes()


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


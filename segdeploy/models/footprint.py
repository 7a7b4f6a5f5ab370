"""How much host memory a model needs at a size, so that a size or batch that cannot fit is refused before anything
is allocated, with the estimate, instead of failing (or being killed) halfway.

The figures are measured, per model (footprint.json, written by benchmarks/memory_footprint.py): the peak RSS of
one PyTorch forward pass grows linearly with the input pixels (``bytes_per_pixel``) on top of a fixed part and the
weights; a verified export (trace, simplify, ONNX Runtime next to PyTorch) holds about three forward passes plus an
overhead that does not grow with the size. ONNX Runtime and OpenVINO plan their memory differently, but within
that figure at these sizes. Models the table does not know are not checked (None).
"""
from __future__ import annotations

import functools
import json
from importlib import resources

from segdeploy.errors import InputError
from segdeploy.hostinfo import memory_available_bytes

GB = 1 << 30


@functools.lru_cache(maxsize=1)
def table() -> dict:
    return json.loads(resources.files("segdeploy.models").joinpath("footprint.json").read_text("utf-8"))


def forward_bytes(name: str, batch: int, height: int, width: int) -> int | None:
    """Estimated peak host memory of a forward pass of ``name`` at (batch, height, width), weights included."""
    row = table()["forward"].get(name)
    if row is None:
        return None
    return int(row["bytes_per_pixel"] * batch * height * width + (row["fixed_mb"] + row["weights_mb"]) * 2**20)


def weights_bytes(name: str) -> int | None:
    row = table()["forward"].get(name)
    return None if row is None else int(row["weights_mb"] * 2**20)


def export_bytes(name: str, batch: int, height: int, width: int) -> int | None:
    forward = forward_bytes(name, batch, height, width)
    export = table()["export"]
    return None if forward is None else int(forward * export["forwards"] + export["overhead_mb"] * 2**20)


def check_fits(need: int | None, what: str, advice: str = "") -> None:
    """Refuse ``what`` with one line when it needs more memory than this machine has available now."""
    available = memory_available_bytes()
    if need is None or available is None or need <= available:
        return
    raise InputError(f"{what} needs about {need / GB:.1f} GB of memory and this machine has {available / GB:.1f} GB "
                     f"available" + (f"; {advice}" if advice else ""))


def largest_batch(name: str, height: int, width: int, factor: float = 1.0) -> int | None:
    """The largest batch whose forward pass (times ``factor``) fits in the memory available now."""
    available = memory_available_bytes()
    one, two = forward_bytes(name, 1, height, width), forward_bytes(name, 2, height, width)
    if available is None or one is None:
        return None
    per_image = max(1, two - one)
    return max(0, int((available / factor - (one - per_image)) // per_image))

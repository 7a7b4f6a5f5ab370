"""Parameter and multiply-accumulate counts.

Rule: MACs of convolutions, linear layers and matrix products (mm, bmm, addmm, baddbmm, attention), as counted by
``torch.utils.flop_counter`` (which reports 2 FLOPs per MAC; we halve it). Element-wise ops, norms, pooling,
resizes, softmax and grid sampling are not counted. The papers follow mmcv's counter (1 "FLOP" = 1 MAC of conv and
linear layers), which additionally misses functional matmuls such as SegNeXt's NMF, so small differences are
expected and shown side by side.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from segdeploy import __version__
from segdeploy.files.atomic import write_text_atomic
from segdeploy.files.destinations import user_cache_dir
from segdeploy.models import get_spec


def count_params(model: nn.Module, prefix: str = "") -> int:
    return sum(p.numel() for name, p in model.named_parameters() if name.startswith(prefix))


@torch.no_grad()
def count_macs(model: nn.Module, height: int = 512, width: int = 512, batch: int = 1) -> int:
    """MACs of one forward at (batch, 3, height, width), run on the meta device when the model allows it."""
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(batch, 3, height, width, device=device))
    return counter.get_total_flops() // 2


def measure(name: str, height: int = 512, width: int = 512, with_macs: bool = True, cached: bool = False) -> dict:
    """Params and GMACs of a registered model, without allocating its weights when possible (meta device).
    ``cached``: reuse (and record) the result in the user cache, keyed by segdeploy and torch versions."""
    if cached:
        return _cached_measure(name, height, width, with_macs)

    spec = get_spec(name)
    kwargs = dict(spec.options)
    if "nmf_bases" in kwargs:
        kwargs["nmf_bases"] = "fixed"
    try:
        with torch.device("meta"):
            model = spec.builder(num_classes=spec.num_classes, **kwargs).eval()
        macs = count_macs(model, height, width) if with_macs else None
    except Exception:  # some ops have no meta kernel: fall back to a real CPU forward
        model = spec.builder(num_classes=spec.num_classes, **kwargs).eval()
        macs = count_macs(model, height, width) if with_macs else None
    return {"params": count_params(model), "params_backbone": count_params(model, "backbone."),
            "gmacs": None if macs is None else macs / 1e9, "height": height, "width": width}


def _cached_measure(name: str, height: int, width: int, with_macs: bool) -> dict:
    import json

    path = user_cache_dir("complexity.json")
    key = f"{__version__}|{torch.__version__}|{name}|{height}x{width}|{'macs' if with_macs else 'params'}"
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):  # absent or damaged: it is only a cache
        table = {}
    if isinstance(table.get(key), dict):
        return table[key]
    result = measure(name, height, width, with_macs)
    table[key] = result
    try:
        write_text_atomic(path, json.dumps(table, indent=1, sort_keys=True) + "\n", force=True)
    except Exception:  # an unwritable cache must not fail the command
        pass
    return result

"""The deterministic weights and inputs under which the original models' golden outputs were recorded.

One NumPy generator per tensor, seeded with ``[seed, crc32(key)]``; the distribution depends on the key's last
component and the tensor's rank. Integer and bool tensors keep the values the model builds itself. Models whose
forward draws random numbers (SegNeXt's NMF bases) are run with ``torch.manual_seed(seed)`` right before the forward.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import torch

INPUT_STREAM = 12345


def seeded_array(key: str, shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    shape = tuple(int(s) for s in shape)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        values = rng.uniform(0.5, 1.5, size=shape)
    elif leaf == "running_mean":
        values = rng.normal(0.0, 0.1, size=shape)
    elif leaf == "weight" and len(shape) >= 2:
        fan_in = math.prod(shape[1:]) or 1
        values = rng.normal(0.0, 1.0 / math.sqrt(fan_in), size=shape)
    elif leaf == "weight":
        values = 1.0 + rng.normal(0.0, 0.1, size=shape)
    elif leaf == "bias":
        values = rng.normal(0.0, 0.05, size=shape)
    else:
        values = rng.normal(0.0, 0.1, size=shape)
    return values.astype(np.float32)


def seeded_state_dict(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    state = {}
    for key, tensor in model.state_dict().items():
        if torch.is_floating_point(tensor):
            state[key] = torch.from_numpy(seeded_array(key, tensor.shape, seed)).to(tensor.dtype)
        else:
            state[key] = tensor.clone()
    return state


def seeded_input(shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, INPUT_STREAM])
    return rng.standard_normal(size=tuple(int(s) for s in shape)).astype(np.float32)

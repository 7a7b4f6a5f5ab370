"""Golden data of the original implementations (tests/data/golden) and the checks every variant must pass."""
from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from segdeploy import models
from segdeploy.recipe import seeded_input

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
IMAGES = DATA / "images"


def golden_models() -> list[str]:
    return [name for name in models.list_models() if (GOLDEN / f"{name}.npz").exists()]


@cache
def manifest(name: str) -> dict:
    return json.loads((GOLDEN / f"{name}.json").read_text())


def golden(name: str) -> dict:
    with np.load(GOLDEN / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def recipe_model(name: str, seed: int = 0, **options):
    return models.load_recipe_weights(models.create(name, **options), seed)


@torch.no_grad()
def run_public_case(model, g: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The golden protocol: recipe input, torch.manual_seed right before the forward."""
    seed = int(g["seed"])
    x = torch.from_numpy(seeded_input(g["input_shape"], seed))
    torch.manual_seed(seed)
    features = model.forward_features(x)
    logits = model.decode_head(features)
    return logits, features


def logits_tolerance(reference: np.ndarray) -> float:
    return 1e-4 * max(1.0, float(np.abs(reference).max()))


def mask_agreement(logits: torch.Tensor, golden_mask: np.ndarray, align_corners: bool) -> float:
    full = F.interpolate(logits, size=golden_mask.shape[-2:], mode="bilinear", align_corners=align_corners)
    return float((full.argmax(1).numpy().astype(np.uint8) == golden_mask).mean())


def sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def assert_state_dict_layout(model, name: str) -> None:
    man = manifest(name)
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
    theirs = [row[:3] for row in man["state_dict"]]
    first_diff = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
    assert ours == theirs, (f"{name}: {len(ours)} vs {len(theirs)} entries; first difference at {first_diff}: "
                            f"{ours[first_diff] if first_diff is not None else None} vs "
                            f"{theirs[first_diff] if first_diff is not None else None}")
    kinds = {k: "param" for k, _ in model.named_parameters()}
    assert [kinds.get(row[0], "buffer") for row in man["state_dict"]] == [row[3] for row in man["state_dict"]]
    state = model.state_dict()
    for key, digest in man["int_buffers"].items():
        assert sha256(state[key]) == digest, f"{name}: integer buffer {key} differs from the original"
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == man["param_count"]

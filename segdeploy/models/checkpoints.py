"""Reading the authors' released checkpoints and loading them strictly, with errors a user can act on."""
from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping

import torch
from torch import nn

from segdeploy.errors import CheckpointError

_WRAPPER_KEYS = ("state_dict", "model", "model_state", "module")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a checkpoint file safely (weights only) and return its flat tensor state_dict.

    Accepts raw state_dicts and the usual wrappers (``{"state_dict": ...}``, ``{"model": ...}``, mmengine's
    ``meta`` next to it) and strips DataParallel's ``module.`` prefix.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: truncated, corrupt or not a PyTorch file "
                              f"({first_line[:160]})") from None
    return unwrap_state_dict(obj, path)


def checkpoint_dataset_meta(path: str | os.PathLike) -> tuple[list[str], list[list[int]] | None] | None:
    """The class names and palette an mmseg-style checkpoint records (``meta.dataset_meta``), else None."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError):
        return None
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    dataset_meta = meta.get("dataset_meta") if isinstance(meta, Mapping) else None
    classes = dataset_meta.get("classes") if isinstance(dataset_meta, Mapping) else None
    if not classes or not all(isinstance(c, str) for c in classes):
        return None
    palette = dataset_meta.get("palette")
    if palette is not None and len(palette) != len(classes):
        palette = None
    return list(classes), [list(map(int, c)) for c in palette] if palette is not None else None


def unwrap_state_dict(obj, origin: str = "checkpoint") -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(torch.is_tensor(v) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{origin} holds a {type(obj).__name__}, not a state_dict")
    tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
    if not tensors:
        raise CheckpointError(f"{origin} contains no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def infer_num_classes(state_dict: Mapping[str, torch.Tensor], classifier_key: str) -> int | None:
    weight = state_dict.get(classifier_key)
    return int(weight.shape[0]) if weight is not None and weight.dim() >= 1 else None


def describe_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """One line naming the first missing, unexpected and wrongly shaped keys, or None when they all fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or wrong):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (first: {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} wrongly shaped (first: {k} is {tuple(state_dict[k].shape)}, "
                     f"model expects {tuple(expected[k].shape)})")
    return "; ".join(parts)


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], origin: str = "checkpoint") -> None:
    problem = describe_mismatch(model, state_dict)
    if problem:
        name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
        raise CheckpointError(f"{origin} does not fit {name}: {problem}")
    model.load_state_dict(state_dict, strict=True)

"""Reading the authors' released checkpoints and loading them strictly, with errors a user can act on."""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from collections.abc import Mapping

import torch
from torch import nn

from segdeploy.errors import CheckpointError

_WRAPPER_KEYS = ("state_dict", "model", "model_state", "module")


def load_checkpoint_file(path: str | os.PathLike):
    """The object a checkpoint file holds, loaded safely (weights only: no code from the file runs).

    Whatever is wrong with the file is one CheckpointError line: torch's weights-only unpickler and its archive
    reader fail on corrupt bytes with any exception type (KeyError, IndexError, struct.error, AssertionError,
    TypeError, ...), so every failure to load counts as a bad file here; the warnings it prints about odd pickle
    protocols are the same story and are not passed on.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a folder, not a file")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc) or "global" in str(exc):  # the weights-only unpickler refused to import something
            raise CheckpointError(f"cannot read checkpoint {path}: it holds objects other than tensors and plain "
                                  f"containers, which are not loaded (no code from a checkpoint runs): "
                                  f"{_first_line(exc)}") from None
        raise CheckpointError(f"cannot read checkpoint {path}: truncated, corrupt or not a PyTorch file "
                              f"({_first_line(exc)})") from None
    except MemoryError:
        raise CheckpointError(f"cannot read checkpoint {path}: it asks for more memory than this machine has "
                              "(corrupt, or not a checkpoint)") from None
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: truncated, corrupt or not a PyTorch file "
                              f"({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if first.startswith("Weights only load failed"):  # torch's preamble; the reason follows it
        reason = next((line.strip() for line in text.splitlines() if "Unsupported" in line or "unsupported" in line),
                      None)
        first = reason or "not a weights-only checkpoint"
    return f"{type(exc).__name__}: {first}"[:160]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a checkpoint file safely (weights only) and return its flat tensor state_dict.

    Accepts raw state_dicts and the usual wrappers (``{"state_dict": ...}``, ``{"model": ...}``, mmengine's
    ``meta`` next to it) and strips DataParallel's ``module.`` prefix.
    """
    return unwrap_state_dict(load_checkpoint_file(path), os.fspath(path))


def checkpoint_dataset_meta(path: str | os.PathLike) -> dict | None:
    """The class names and palette a checkpoint carries in mmseg's ``meta.dataset_meta`` (``classes``,
    ``palette``), or None when it carries none or they are malformed."""
    obj = load_checkpoint_file(path)
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    dataset = meta.get("dataset_meta") if isinstance(meta, Mapping) else None
    if not isinstance(dataset, Mapping):
        return None
    classes, palette = dataset.get("classes"), dataset.get("palette")
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        return None
    ok_palette = isinstance(palette, (list, tuple)) and len(palette) == len(classes) and all(
        isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
        for c in palette)
    return {"classes": list(classes), "palette": [list(c) for c in palette] if ok_palette else None}


def state_dict_sha256(model: nn.Module) -> str:
    """SHA-256 over the persistent state (sorted keys, dtype, shape, raw bytes): what the weights are, not how they
    were stored on disk."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


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


# The most classes an artifact's manifest can describe (its schema's bound; uint16 label maps).
MAX_CLASSES = 65535


def infer_num_classes(state_dict: Mapping[str, torch.Tensor], classifier_key: str) -> int | None:
    weight = state_dict.get(classifier_key)
    if weight is None or weight.dim() < 1:
        return None
    classes = int(weight.shape[0])
    if not 1 <= classes <= MAX_CLASSES:
        raise CheckpointError(f"the checkpoint's classifier {classifier_key} has {classes} classes; segdeploy takes "
                              f"1 to {MAX_CLASSES}")
    return classes


def describe_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """One line naming the first missing, unexpected and wrongly shaped keys, or None when they all fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    odd = [k for k in expected if k in state_dict and not wrong and _unloadable(state_dict[k], expected[k])]
    if odd and not (missing or unexpected or wrong):
        k = odd[0]
        t = state_dict[k]
        return (f"{len(odd)} tensors of a kind the model cannot take (first: {k} is {t.dtype}, "
                f"{t.layout}, model expects {expected[k].dtype})")
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


def _unloadable(tensor: torch.Tensor, expected: torch.Tensor) -> bool:
    """A tensor load_state_dict would fail to copy (or copy into nonsense): sparse, quantized or on the meta
    device, complex into a real parameter, or floating point into an integer buffer."""
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.device.type == "meta":
        return True
    if tensor.is_complex() and not expected.is_complex():
        return True
    return tensor.is_floating_point() and not (expected.is_floating_point() or expected.is_complex())


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], origin: str = "checkpoint") -> None:
    name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
    problem = describe_mismatch(model, state_dict)
    if problem:
        raise CheckpointError(f"{origin} does not fit {name}: {problem}")
    try:
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:  # a copy torch refuses after all
        detail = " ".join(str(exc).split())[:160]
        raise CheckpointError(f"{origin} does not fit {name}: {detail}") from None

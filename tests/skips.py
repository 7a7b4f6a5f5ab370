"""The suite's one rule for skipping: a test skips only where hardware is absent that no install can provide, an
NVIDIA GPU and the TensorRT runtime that comes with one (or, for a test about machines without them, where they
are present). Everything else a test needs (OpenVINO, onnxsim, matplotlib, tritonclient, the TensorRT Python
bindings, bash, unshare) is installed by ``make test`` or is part of the machine CI runs on, so under ``CI=1``
conftest.py fails every other skip: a missing package makes the run red, not quietly shorter.

Skip through ``skip`` and ``skipif`` here; their reasons start with one of ``ALLOWED_UNDER_CI``, the one list.
"""
from __future__ import annotations

import os
from typing import NoReturn

import pytest

NO_GPU = "no NVIDIA GPU here"
NO_TENSORRT = "no TensorRT runtime here"  # the libraries and a GPU; the Python bindings alone do not run anything
GPU_PRESENT = "an NVIDIA GPU is present"
TENSORRT_PRESENT = "TensorRT is usable here"
ALLOWED_UNDER_CI = (NO_GPU, NO_TENSORRT, GPU_PRESENT, TENSORRT_PRESENT)


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def allowed_under_ci(reason: str) -> bool:
    return reason.startswith(ALLOWED_UNDER_CI)


def _reason(kind: str, detail: str) -> str:
    if kind not in ALLOWED_UNDER_CI:
        raise ValueError(f"a test may skip only for absent (or present) hardware, one of {ALLOWED_UNDER_CI}")
    return f"{kind}: {detail}" if detail else kind


def skip(kind: str, detail: str = "") -> NoReturn:
    __tracebackhide__ = True  # -rs names the test's line, not this one
    pytest.skip(_reason(kind, detail))


def skipif(condition: bool, kind: str, detail: str = "") -> pytest.MarkDecorator:
    return pytest.mark.skipif(condition, reason=_reason(kind, detail))


def tensorrt_missing() -> str | None:
    """Why the TensorRT backend cannot run here (no runtime, no GPU), or None where it can."""
    from segdeploy.runtimes.registry import backend_status

    status = backend_status("tensorrt")
    return None if status.available else status.reason


def gpu_missing() -> str | None:
    import torch

    return None if torch.cuda.is_available() else f"torch {torch.__version__} sees no CUDA GPU"

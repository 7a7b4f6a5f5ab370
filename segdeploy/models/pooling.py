"""Adaptive average pooling to a fixed output size, exact and exportable.

PyTorch's ``adaptive_avg_pool2d`` averages, for output index i of m from an input of length n, the input indices
``[floor(i*n/m), ceil((i+1)*n/m))``; bins may have unequal lengths, may overlap, and m > n is allowed. The ONNX
exporters only lower it when n is a multiple of m. Written as ``P_H @ X @ P_W^T`` with averaging matrices
(``P[i, j] = 1/len(bin_i)`` for j in bin i), it is exact (same bins) and uses only MatMul.

The matrices can be built from Python ints (``pooling_matrix``: constants in a static graph) or from the runtime
size with tensor ops (``pooling_matrix_traced``: arange / integer division / compare, so a dynamic-shape graph
computes them from the input's shape). ``adaptive_avg_pool2d_from_shape`` always takes the second route, also in
eager mode, and accepts output sizes that are themselves computed from the runtime shape (0-dim int64 tensors while
the TorchScript exporter traces), for models whose pooled size follows the input's aspect ratio.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from segdeploy.models.layers import exporting


def pooling_matrix(n: int, m: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(m, n) averaging matrix of PyTorch's adaptive average pooling from length n to length m."""
    rows = []
    for i in range(m):
        start, end = (i * n) // m, -((-(i + 1) * n) // m)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(n)])
    # built in Python, not by slice assignment, so that an exporter records one constant instead of tracing the fill
    return torch.tensor(rows, dtype=dtype, device=device)


def pooling_matrix_traced(n: torch.Tensor | int, m: torch.Tensor | int, dtype=torch.float32,
                          device=None) -> torch.Tensor:
    """The same matrix from (possibly traced) integer sizes, using only tensor ops.

    Sizes may be ints, SymInts (torch.export keeps them symbolic) or 0-dim integer tensors (the TorchScript tracer's
    sizes); none is turned into a Python constant.
    """
    n = n.to(torch.int64) if isinstance(n, torch.Tensor) else n
    m = m.to(torch.int64) if isinstance(m, torch.Tensor) else m
    i = torch.arange(m, device=device).unsqueeze(1)  # (m, 1)
    j = torch.arange(n, device=device).unsqueeze(0)  # (1, n)
    # sizes are non-negative, so truncating division is floor division; it exports as a single Div
    start = torch.div(i * n, m, rounding_mode="trunc")
    end = torch.div((i + 1) * n + m - 1, m, rounding_mode="trunc")
    inside = ((j >= start) & (j < end)).to(dtype)
    return inside / inside.sum(dim=1, keepdim=True)


def adaptive_avg_pool2d(x: torch.Tensor, output_size: tuple[int, int], traced_sizes: bool = False) -> torch.Tensor:
    """Exact ``F.adaptive_avg_pool2d(x, output_size)`` for (..., H, W) inputs, in an exportable form.

    Eager (not exporting), it calls PyTorch's kernel. While exporting, it lowers to a plain average pool when both
    sides divide exactly and to two MatMuls otherwise; with ``traced_sizes`` the matrices are computed from the
    runtime input size (dynamic-shape graphs), else they are constants for the traced size.
    """
    oh, ow = int(output_size[0]), int(output_size[1])
    if not exporting():
        return F.adaptive_avg_pool2d(x, (oh, ow))
    h, w = x.shape[-2], x.shape[-1]
    if traced_sizes:
        ph = pooling_matrix_traced(h, oh, x.dtype, x.device)
        pw = pooling_matrix_traced(w, ow, x.dtype, x.device)
    else:
        h, w = int(h), int(w)
        if h % oh == 0 and w % ow == 0:
            return F.avg_pool2d(x, (h // oh, w // ow))
        ph = pooling_matrix(h, oh, x.dtype, x.device)
        pw = pooling_matrix(w, ow, x.dtype, x.device)
    return torch.matmul(torch.matmul(ph, x), pw.transpose(0, 1))


def adaptive_avg_pool2d_from_shape(x: torch.Tensor, output_size) -> torch.Tensor:
    """Exact adaptive average pool whose bins are always computed from the runtime sizes with tensor ops.

    ``output_size`` may hold Python ints or values derived from the input's shape (0-dim int64 tensors under the
    TorchScript exporter), so one exported graph serves every input size. The same code runs in eager mode, which
    is what lets a test compare it with the constant form.
    """
    h, w = x.shape[-2], x.shape[-1]
    ph = pooling_matrix_traced(h, output_size[0], x.dtype, x.device)
    pw = pooling_matrix_traced(w, output_size[1], x.dtype, x.device)
    return torch.matmul(torch.matmul(ph, x), pw.transpose(0, 1))

"""The exportable adaptive average pool reproduces PyTorch's bins exactly, shrinking and enlarging."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from segdeploy.models.pooling import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_from_shape,
    pooling_matrix,
    pooling_matrix_traced,
)

SIZES = [1, 2, 3, 5, 7, 8, 10, 11, 12, 16, 20, 22, 24, 32]


@pytest.mark.parametrize("n,m", list(itertools.product(SIZES, SIZES)))
def test_matrix_form_equals_adaptive_avg_pool(n, m):
    x = torch.randn(2, 3, n, n + 3, dtype=torch.float64)
    mw = max(1, m - 2)
    expected = F.adaptive_avg_pool2d(x, (m, mw))
    got = pooling_matrix(n, m, torch.float64) @ x @ pooling_matrix(n + 3, mw, torch.float64).T
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pooling_matrix_traced(n, m, torch.float64), pooling_matrix(n, m, torch.float64))


# The cases LRFormer meets at 256x320 and 384x512 inputs (spec section 6.2): stage maps smaller than the pooled grid
# (pure replication for 8x10 -> 16x20, copies mixed with 2-element means for 8x10 -> 11x14) and uneven bins.
LRFORMER_CASES = [
    ((8, 10), (16, 20)), ((8, 10), (11, 14)), ((8, 10), (6, 8)), ((8, 10), (4, 5)),
    ((12, 16), (16, 21)), ((12, 16), (11, 15)), ((12, 16), (8, 11)), ((12, 16), (4, 5)),
    ((64, 80), (22, 28)), ((48, 64), (32, 43)), ((48, 64), (22, 29)), ((16, 16), (22, 22)), ((10, 8), (14, 11)),
]


@pytest.mark.parametrize("in_size,out_size", LRFORMER_CASES)
def test_shape_derived_pool_equals_adaptive_avg_pool(in_size, out_size):
    x = torch.randn(2, 5, *in_size, dtype=torch.float64)
    expected = F.adaptive_avg_pool2d(x, out_size)
    torch.testing.assert_close(adaptive_avg_pool2d_from_shape(x, out_size), expected, rtol=1e-12, atol=1e-12)


def test_enlarging_by_two_is_replication():
    x = torch.randn(1, 1, 8, 10)
    torch.testing.assert_close(adaptive_avg_pool2d_from_shape(x, (16, 20)),
                               x.repeat_interleave(2, -2).repeat_interleave(2, -1), rtol=0, atol=1e-7)


class _Pool(torch.nn.Module):
    def __init__(self, out_size, shape_derived: bool):
        super().__init__()
        self.out_size, self.shape_derived = out_size, shape_derived

    def forward(self, x):
        if self.shape_derived:
            return adaptive_avg_pool2d_from_shape(x, self.out_size)
        return adaptive_avg_pool2d(x, self.out_size)


@pytest.mark.parametrize("in_size,out_size", [((8, 10), (16, 20)), ((8, 10), (11, 14)), ((12, 16), (4, 4))])
def test_traced_constant_form_is_exact(in_size, out_size):
    # while tracing, adaptive_avg_pool2d switches to average pooling or constant matrices
    x = torch.randn(2, 3, *in_size)
    traced = torch.jit.trace(_Pool(out_size, shape_derived=False), x, check_trace=False)
    torch.testing.assert_close(traced(x), F.adaptive_avg_pool2d(x, out_size), rtol=1e-6, atol=1e-6)


def test_dynamic_onnx_graph_pools_exactly_at_other_sizes(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "pool.onnx"
    torch.onnx.export(_Pool((11, 14), shape_derived=True), (torch.randn(1, 2, 8, 10),), str(path), dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 2, 8, 10), (3, 2, 5, 7), (1, 2, 40, 33), (2, 2, 11, 14)]:
        x = torch.randn(*shape)
        (got,) = session.run(None, {"x": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), F.adaptive_avg_pool2d(x, (11, 14)), rtol=1e-5, atol=1e-6)

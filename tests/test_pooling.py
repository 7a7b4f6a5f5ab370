"""The exportable adaptive average pool reproduces PyTorch's bins exactly, shrinking and enlarging."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from segdeploy.models.pooling import pooling_matrix, pooling_matrix_traced

SIZES = [1, 2, 3, 5, 7, 8, 10, 11, 12, 16, 20, 22, 24, 32]


@pytest.mark.parametrize("n,m", list(itertools.product(SIZES, SIZES)))
def test_matrix_form_equals_adaptive_avg_pool(n, m):
    x = torch.randn(2, 3, n, n + 3, dtype=torch.float64)
    mw = max(1, m - 2)
    expected = F.adaptive_avg_pool2d(x, (m, mw))
    got = pooling_matrix(n, m, torch.float64) @ x @ pooling_matrix(n + 3, mw, torch.float64).T
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pooling_matrix_traced(n, m, torch.float64), pooling_matrix(n, m, torch.float64))

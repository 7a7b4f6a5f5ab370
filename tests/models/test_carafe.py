"""CARAFE in plain tensor ops against a loop transcription of mmcv's naive CUDA kernel, and its ONNX export."""
from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch

from segdeploy.models.carafe import carafe


def carafe_loops(features: np.ndarray, masks: np.ndarray, k: int, s: int, groups: int) -> np.ndarray:
    """mmcv ``carafe_naive_forward_cuda_kernel``: one output element per (n, c, y, x), float64 here."""
    n, c, h, w = features.shape
    out = np.zeros((n, c, h * s, w * s))
    r = (k - 1) // 2
    channels_per_group = c // groups
    for b, ch, y, x in itertools.product(range(n), range(c), range(h * s), range(w * s)):
        g = ch // channels_per_group
        down_y, down_x = y // s, x // s
        acc = 0.0
        for ky in range(k):
            for kx in range(k):
                iy, ix = down_y + ky - r, down_x + kx - r
                if 0 <= iy < h and 0 <= ix < w:
                    acc += masks[b, (g * k + ky) * k + kx, y, x] * features[b, ch, iy, ix]
        out[b, ch, y, x] = acc
    return out


CASES = [  # (kernel, groups, scale, h, w)
    (1, 1, 1, 3, 4), (1, 2, 2, 2, 3), (3, 1, 1, 5, 6), (3, 1, 2, 4, 3), (3, 2, 3, 3, 2), (3, 4, 1, 1, 1),
    (5, 1, 2, 4, 5), (5, 1, 1, 6, 4), (5, 2, 2, 3, 3), (5, 4, 3, 2, 3), (5, 1, 2, 1, 1), (3, 1, 2, 1, 7),
]


@pytest.mark.parametrize("k,groups,s,h,w", CASES)
def test_carafe_equals_the_loop_form_of_mmcvs_kernel(k, groups, s, h, w):
    gen = torch.Generator().manual_seed(k * 100 + groups * 10 + s)
    features = torch.randn(2, 4 * groups, h, w, generator=gen)
    masks = torch.randn(2, groups * k * k, h * s, w * s, generator=gen)  # not normalised: the op must not care
    expected = carafe_loops(features.double().numpy(), masks.double().numpy(), k, s, groups)
    got = carafe(features, masks, k, s, groups)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(expected).max()))
    # float64 through the same code is exact up to summation order, so a wrong index could not hide in float noise
    np.testing.assert_allclose(carafe(features.double(), masks.double(), k, s, groups).numpy(), expected,
                               rtol=1e-12, atol=1e-12)


def test_carafe_rejects_masks_of_the_wrong_shape():
    with pytest.raises(ValueError, match="need masks of shape"):
        carafe(torch.zeros(1, 4, 3, 3), torch.zeros(1, 25, 3, 3), 5, 2)
    with pytest.raises(ValueError, match="odd kernel_size"):
        carafe(torch.zeros(1, 4, 3, 3), torch.zeros(1, 16, 3, 3), 4, 1)


@pytest.mark.parametrize("k,s", [(3, 1), (5, 2)])
def test_carafe_exports_with_standard_ops_and_onnxruntime_agrees(k, s):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

    class Carafe(torch.nn.Module):
        def forward(self, features, masks):
            return carafe(features, masks, k, s)

    features, masks = torch.randn(1, 8, 6, 10), torch.randn(1, k * k, 6 * s, 10 * s)
    buffer = io.BytesIO()
    dynamic = {"features": {0: "n", 2: "h", 3: "w"}, "masks": {0: "n", 2: "hs", 3: "ws"}}
    torch.onnx.export(Carafe(), (features, masks), buffer, opset_version=17, input_names=["features", "masks"],
                      dynamic_axes=dynamic, dynamo=False)
    graph = onnx.load_from_string(buffer.getvalue()).graph
    assert all(node.domain in ("", "ai.onnx") for node in graph.node)
    assert not {"Expand", "Resize"} & {node.op_type for node in graph.node}
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    # another batch and size than traced: no size was frozen into the graph
    features, masks = torch.randn(2, 8, 5, 7), torch.randn(2, k * k, 5 * s, 7 * s)
    (got,) = session.run(None, {"features": features.numpy(), "masks": masks.numpy()})
    np.testing.assert_allclose(got, carafe(features, masks, k, s).numpy(), rtol=1e-5, atol=1e-5)

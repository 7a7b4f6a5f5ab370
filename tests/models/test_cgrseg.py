"""CGRSeg specifics: input-size rule, mean pools vs adaptive pools, the pyramid pools, the export switch."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from goldens import recipe_model
from segdeploy import models
from segdeploy.errors import InputError
from segdeploy.models.cgrseg import RectangularCalibrationAttention
from segdeploy.models.efficientformer_v2 import AttentionBiasTable
from segdeploy.models.pooling import adaptive_avg_pool2d_from_shape


@pytest.fixture(scope="module")
def cgrseg_t():
    return recipe_model("cgrseg_t")


@pytest.mark.parametrize("size,nearest", [((500, 512), "512x512"), ((256, 330), "256x320"), ((16, 64), "32x64")])
def test_sizes_that_are_not_multiples_of_32_get_a_clear_error(cgrseg_t, size, nearest):
    with pytest.raises(InputError, match=f"input {size[0]}x{size[1]} is not a multiple of 32; "
                                         f"nearest valid size is {nearest}"):
        cgrseg_t(torch.randn(1, 3, *size))


def test_multiples_of_32_that_are_not_multiples_of_64_run(cgrseg_t):
    with torch.no_grad():
        logits = cgrseg_t(torch.randn(1, 3, 96, 160))  # odd stride-32 grid: overlapping pyramid bins
    assert logits.shape == (1, 150, 12, 20) and torch.isfinite(logits).all()


def test_rca_means_equal_the_original_adaptive_pools():
    torch.manual_seed(0)
    rca = RectangularCalibrationAttention(16, band_kernel_size=11).eval()
    x = torch.randn(2, 16, 7, 13)
    pooled = nn.AdaptiveAvgPool2d((None, 1))(x) + nn.AdaptiveAvgPool2d((1, None))(x)
    expected = rca.excite(pooled) * rca.dwconv_hw(x)
    with torch.no_grad():
        torch.testing.assert_close(rca(x), expected.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("stride32", [(4, 6), (5, 7), (11, 15), (1, 3)])
def test_pyramid_pool_matches_adaptive_average_pooling(cgrseg_t, stride32):
    h, w = stride32
    channels = cgrseg_t.decode_head.in_channels
    features = [torch.randn(2, c, h * s, w * s, dtype=torch.float64) for c, s in zip(channels, (4, 2, 1))]
    size = (-(-h // 2), -(-w // 2))
    expected = torch.cat([F.adaptive_avg_pool2d(f, size) for f in features], dim=1)
    torch.testing.assert_close(cgrseg_t.decode_head.pyramid_pool(features), expected, rtol=0, atol=0)
    # the form used in dynamic-shape graphs gives the same bins
    from_shape = torch.cat([adaptive_avg_pool2d_from_shape(f, size) for f in features], dim=1)
    torch.testing.assert_close(from_shape, expected, rtol=1e-12, atol=1e-12)
    if h % 2 == 0 and w % 2 == 0:  # multiples of 64: plain non-overlapping pools, kernel = stride = 8, 4, 2
        uniform = torch.cat([F.avg_pool2d(f, k) for f, k in zip(features, (8, 4, 2))], dim=1)
        torch.testing.assert_close(uniform, expected, rtol=1e-12, atol=1e-12)


def test_dynamic_shapes_switch_reaches_every_size_dependent_module_and_keeps_outputs(cgrseg_t):
    model = models.create("cgrseg_t", dynamic_shapes=True)
    model.load_state_dict(cgrseg_t.state_dict())
    switched = [m.dynamic_shapes for m in model.modules() if isinstance(m, AttentionBiasTable)]
    assert len(switched) == 5 and all(switched) and model.decode_head.dynamic_shapes
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x), cgrseg_t(x), rtol=0, atol=0)
    model.set_dynamic_shapes(False)
    assert not any(m.dynamic_shapes for m in model.modules() if isinstance(m, AttentionBiasTable))


def test_spec_records_the_released_b_config():
    spec = models.get_spec("cgrseg_b")
    assert spec.size_multiple == 32 and spec.output_stride == 8 and spec.num_classes == 150
    assert spec.source_config == "local_configs/cgrseg/cgrseg-b_ade20k_160k.py"
    assert "19.1M" in spec.notes and "18.1M" in spec.notes
    assert len(models.create("cgrseg_b").decode_head.trans.transformer_blocks) == 6


def _export_and_compare(model, path, sizes, dynamic: bool):
    onnxruntime = pytest.importorskip("onnxruntime")
    x = torch.randn(1, 3, *sizes[0])
    axes = {"input": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h8", 3: "w8"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes=axes)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in sizes:
        x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


@pytest.mark.slow
def test_onnx_static_512_and_dynamic_export_match_pytorch(tmp_path, cgrseg_t):
    _export_and_compare(cgrseg_t, tmp_path / "static.onnx", [(512, 512)], dynamic=False)
    model = models.create("cgrseg_t", dynamic_shapes=True)
    model.load_state_dict(cgrseg_t.state_dict())
    _export_and_compare(model, tmp_path / "dynamic.onnx", [(512, 512), (384, 640), (352, 480)], dynamic=True)

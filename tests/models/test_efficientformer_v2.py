"""EfficientFormerV2 backbone specifics: bias-table indices, the bicubic bias resize, no stale bias cache, export."""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from segdeploy.models.efficientformer_v2 import (
    EFFICIENTFORMER_V2_ARCHS,
    Attention4D,
    Attention4DDownsample,
    bias_index_grid,
    bicubic_by_gathers,
    efficientformer_v2,
    resize_bias_table,
)


def original_bias_indices(query_side: int, key_side: int) -> torch.Tensor:
    """Transcription of the original's loop: offsets numbered in order of first appearance."""
    step = math.ceil(key_side / query_side)
    offsets, idxs = {}, []
    keys = list(itertools.product(range(key_side), range(key_side)))
    for a, b in itertools.product(range(query_side), range(query_side)):
        for c, e in keys:
            offset = (abs(a * step - c), abs(b * step - e))
            idxs.append(offsets.setdefault(offset, len(offsets)))
    return torch.tensor(idxs).reshape(query_side ** 2, key_side ** 2)


@pytest.mark.parametrize("query_side,key_side", [(16, 16), (16, 32), (7, 7), (7, 14), (4, 7), (3, 5)])
def test_closed_form_indices_equal_first_appearance_numbering(query_side, key_side):
    torch.testing.assert_close(bias_index_grid(query_side, key_side), original_bias_indices(query_side, key_side),
                               rtol=0, atol=0)


def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """PyTorch's bicubic resize along one axis as an (n_out, n_in) matrix, written from its definition:
    half-pixel source coordinate (negative values not clamped), A = -0.75, taps clamped to the border."""
    a = -0.75
    matrix = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        x0 = math.floor(src)
        t = src - x0
        weights = [((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
                   ((a + 2) * t - (a + 3)) * t * t + 1,
                   ((a + 2) * (1 - t) - (a + 3)) * (1 - t) ** 2 + 1,
                   ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a]
        for tap, w in zip(range(x0 - 1, x0 + 3), weights):
            matrix[i, min(max(tap, 0), n_in - 1)] += w
    return matrix


@pytest.mark.parametrize("dynamic_shapes", [False, True])
def test_bias_resize_is_an_exact_identity_at_the_table_size(dynamic_shapes):
    table = torch.randn(8, 256, 1024)
    attn = torch.empty(2, 8, 256, 1024)
    torch.testing.assert_close(resize_bias_table(table, attn, dynamic_shapes)[0], table, rtol=0, atol=0)


@pytest.mark.parametrize("dynamic_shapes", [False, True])
@pytest.mark.parametrize("tokens", [(80, 80), (80, 320), (192, 768), (300, 300)])  # shrink and enlarge
def test_bias_resize_is_bicubic_on_the_flattened_token_axes(tokens, dynamic_shapes):
    table = torch.randn(8, 256, 1024, dtype=torch.float64)
    got = resize_bias_table(table, torch.empty(1, 8, *tokens), dynamic_shapes)
    assert got.shape == (1, 8, *tokens)
    expected = bicubic_matrix(256, tokens[0]) @ table.numpy() @ bicubic_matrix(1024, tokens[1]).T
    np.testing.assert_allclose(got[0].numpy(), expected, rtol=0, atol=1e-10)
    interpolated = F.interpolate(table[None], size=tokens, mode="bicubic", align_corners=False)
    torch.testing.assert_close(got, interpolated, rtol=0, atol=0)


@pytest.mark.parametrize("tokens", [(80, 80), (80, 320), (192, 768), (300, 300), (256, 1024), (336, 1344)])
def test_the_exported_bias_resize_is_bicubic_by_gathers(tokens):
    """While exporting a dynamic graph the resize is gathers and weighted sums (ONNX Runtime's cubic Resize was
    15x slower than PyTorch's): PyTorch's bicubic up to float32 rounding of the sample positions, and the identity at
    the table's own size."""
    table = torch.randn(1, 8, 256, 1024)
    got = bicubic_by_gathers(table, tokens)
    expected = F.interpolate(table, size=tokens, mode="bicubic", align_corners=False)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 * float(table.abs().max()))
    if tokens == (256, 1024):
        torch.testing.assert_close(got, table, rtol=0, atol=0)


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2 + ("running_var" in name))
    return module


@pytest.mark.parametrize("make,side", [(lambda: Attention4D(32, 16), 16), (lambda: Attention4D(32, 32, stride=2), 32),
                                       (lambda: Attention4DDownsample(32, 48, 32), 32)],
                         ids=["plain", "strided", "downsample"])
def test_bias_follows_the_parameter_after_eval_and_imagenet_buffers_are_unused(make, side):
    module = _randomise(make()).eval()
    x = torch.randn(1, 32, side, side)
    with torch.no_grad():
        before = module(x)
        module.attention_biases.normal_()  # only there for ImageNet checkpoints: no effect
        torch.testing.assert_close(module(x), before, rtol=0, atol=0)
        module.attention_biases_seg.normal_()  # the original's eval() cache would ignore this
        assert not torch.allclose(module(x), before)


def test_imagenet_only_buffers_have_the_224px_checkpoint_shapes():
    attention, downsample = Attention4D(32, 16), Attention4DDownsample(32, 48, 32)
    assert attention.attention_biases.shape == (8, 49) and attention.attention_bias_idxs.shape == (49, 49)
    assert downsample.attention_biases.shape == (8, 196) and downsample.attention_bias_idxs.shape == (49, 196)
    assert bool((attention.attention_bias_idxs == 1).all()) and bool((downsample.attention_bias_idxs == 1).all())
    assert attention.attention_biases_seg.shape == (8, 256) and downsample.attention_biases_seg.shape == (8, 1024)


@pytest.mark.parametrize("arch,params", [("s1", 5_748_360), ("s2", 12_151_408), ("l", 25_578_016)])
def test_architectures_have_the_original_parameter_counts(arch, params):
    backbone = efficientformer_v2(arch)
    assert sum(p.numel() for p in backbone.parameters()) == params
    depths, vit_num = EFFICIENTFORMER_V2_ARCHS[arch]["depths"], EFFICIENTFORMER_V2_ARCHS[arch]["vit_num"]
    for stage, blocks in zip((2, 3), (backbone.network[4], backbone.network[6])):
        kinds = [type(b).__name__ for b in blocks]
        assert kinds == ["FFN"] * (depths[stage] - vit_num) + ["AttnFFN"] * vit_num


def test_forward_returns_four_maps_at_strides_4_to_32():
    backbone = efficientformer_v2("s1").eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in features] == [(32, 16, 24), (48, 8, 12), (120, 4, 6), (224, 2, 3)]


def test_mismatched_mlp_ratios_are_rejected():
    cfg = dict(EFFICIENTFORMER_V2_ARCHS["s1"], depths=(3, 3, 9, 5))
    with pytest.raises(ValueError, match="mlp_ratios"):
        efficientformer_v2("s1", **cfg)


@pytest.mark.parametrize("make", [lambda: Attention4D(32, 32, stride=2), lambda: Attention4DDownsample(32, 48, 32)],
                         ids=["strided", "downsample"])
def test_dynamic_shape_export_resizes_the_bias_at_run_time(tmp_path, make):
    onnxruntime = pytest.importorskip("onnxruntime")
    module = _randomise(make()).eval()
    module.dynamic_shapes = True
    path = tmp_path / "attention.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(1, 32, 32, 32),), path, opset_version=17, dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    modes = [a.s for node in onnx.load(str(path)).graph.node if node.op_type == "Resize" for a in node.attribute
             if a.name == "mode"]
    assert b"cubic" not in modes  # gathers, not a cubic Resize
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 32, 32, 32), (2, 32, 24, 40)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = module(x).numpy()
        got = session.run(None, {"x": x.numpy()})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())

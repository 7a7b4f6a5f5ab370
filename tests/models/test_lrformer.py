"""LRFormer specifics: aspect-ratio pooled sizes, the multiple-of-32 rule, shape-derived pooling and its export."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

from goldens import recipe_model
from segdeploy import models
from segdeploy.errors import InputError
from segdeploy.models.lrformer import (
    LowResolutionAttention,
    LRFormer,
    LRFormerBackbone,
    LRHead,
    pooled_size,
    pooled_size_from_shape,
    pyramid_sizes,
)

BACKBONE_GRIDS = (16, 11, 8, 6, 4)
DECODER_GRIDS = (32, 22, 16, 12, 8)


def test_pyramid_sizes_scale_with_the_query_grid():
    assert pyramid_sizes(16) == (11, 8, 6, 4)
    assert pyramid_sizes(32) == (22, 16, 12, 8)


# Spec section 6.2: every stage of a multiple-of-32 input has the input's aspect ratio, so one row per input.
@pytest.mark.parametrize("stage_map,backbone,decoder", [
    ((8, 10), [(16, 20), (11, 14), (8, 10), (6, 8), (4, 5)], [(32, 40), (22, 28), (16, 20), (12, 15), (8, 10)]),
    ((12, 16), [(16, 21), (11, 15), (8, 11), (6, 8), (4, 5)], [(32, 43), (22, 29), (16, 21), (12, 16), (8, 11)]),
    ((16, 16), [(16, 16), (11, 11), (8, 8), (6, 6), (4, 4)], [(32, 32), (22, 22), (16, 16), (12, 12), (8, 8)]),
])
def test_pooled_sizes_follow_the_aspect_ratio(stage_map, backbone, decoder):
    h, w = stage_map
    for scale in (1, 2, 8):  # every stage of one image gives the same grids
        assert [pooled_size(h * scale, w * scale, p) for p in BACKBONE_GRIDS] == backbone
        assert [pooled_size(h * scale, w * scale, p) for p in DECODER_GRIDS] == decoder
    # portrait inputs swap the two sides
    assert [pooled_size(w, h, p) for p in BACKBONE_GRIDS] == [(b, a) for a, b in backbone]


def test_integer_rule_equals_the_original_rounding():
    sizes = range(1, 161)
    for p in BACKBONE_GRIDS + DECODER_GRIDS:
        expected = [pooled_size(h, w, p) for h, w in itertools.product(sizes, sizes)]
        assert [pooled_size_from_shape(h, w, p) for h, w in itertools.product(sizes, sizes)] == expected
        # the tensor form, as traced by the exporter, computed elementwise over the same grid
        hs, ws = (torch.tensor(v) for v in zip(*itertools.product(sizes, sizes)))
        got_h, got_w = pooled_size_from_shape(hs, ws, p)
        assert list(zip(got_h.tolist(), got_w.tolist())) == expected


def test_integer_rule_matches_float_rounding_for_large_maps():
    # the original's float64 expression (np.rint rounds half-even like Python's round) over every map with a short
    # side below 1000 and an aspect ratio up to 8
    long = torch.cat([torch.arange(s, 8 * s + 1) for s in range(1, 1000)])
    short = torch.cat([torch.full((7 * s + 1,), s) for s in range(1, 1000)])
    for p in BACKBONE_GRIDS + DECODER_GRIDS:
        expected = np.rint(long.numpy() * float(p) / short.numpy() + 0.001).astype(np.int64)
        got_h, got_w = pooled_size_from_shape(long, short, p)
        assert torch.equal(got_w, torch.full_like(got_w, p))
        np.testing.assert_array_equal(got_h.numpy(), expected)


def test_inputs_must_be_multiples_of_32():
    model = models.create("lrformer_t")
    with pytest.raises(InputError, match="not a multiple of 32; nearest valid size is 256x320"):
        model(torch.randn(1, 3, 250, 330))
    with pytest.raises(InputError, match=r"shape \(N, 3, H, W\)"):
        model(torch.randn(1, 4, 256, 256))


def test_spec_metadata():
    spec = models.get_spec("lrformer_l")
    assert spec.input_size == (640, 640) and models.get_spec("lrformer_t").input_size == (512, 512)
    assert (spec.size_multiple, spec.output_stride, spec.mean, spec.channel_order) == (
        32, 8, (123.675, 116.28, 103.53), "RGB")
    assert spec.source_config == "configs_local/lrformer/lrformer-l-160k_ade20k.py"
    model = models.create("lrformer_t", num_classes=19)
    assert model.state_dict()[spec.classifier_key].shape[0] == 19


def _dynamic_flags(model):
    return {m.dynamic_pooling for m in model.modules() if isinstance(m, LowResolutionAttention)}


def test_dynamic_pooling_is_an_option_and_a_switch():
    static = models.create("lrformer_t")
    dynamic = models.create("lrformer_t", dynamic_pooling=True)
    assert _dynamic_flags(static) == {False} and _dynamic_flags(dynamic) == {True}
    assert list(static.state_dict()) == list(dynamic.state_dict())
    assert _dynamic_flags(static.use_shape_derived_pooling()) == {True}
    assert _dynamic_flags(static.use_shape_derived_pooling(False)) == {False}


@pytest.fixture(scope="module")
def lrformer_t_pair():
    static = recipe_model("lrformer_t")
    dynamic = recipe_model("lrformer_t", dynamic_pooling=True)
    return static, dynamic


# Landscape with uneven, enlarging pools at stage 4 (8x10 -> 16x20, 11x14), and portrait (the other branch).
@pytest.mark.parametrize("shape", [(1, 3, 256, 320), (1, 3, 384, 256)])
def test_shape_derived_pooling_gives_the_constant_mode_output(lrformer_t_pair, shape):
    static, dynamic = lrformer_t_pair
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = static(x), dynamic(x)
    assert got.shape == (shape[0], 150, shape[2] // 8, shape[3] // 8)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def _tiny_lrformer() -> LRFormer:
    torch.manual_seed(0)
    backbone = LRFormerBackbone((16, 16, 32, 32), (1, 1, 1, 1), num_heads=(1, 1, 2, 2))
    model = LRFormer(backbone, LRHead((16, 32, 32), 32, num_classes=5, num_heads=2)).eval()
    for module in model.modules():  # give BatchNorm non-trivial statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.use_shape_derived_pooling()


def test_one_dynamic_onnx_graph_serves_every_size_and_aspect_ratio(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = _tiny_lrformer()
    path = tmp_path / "lrformer_tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 256, 256),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                        "logits": {0: "batch", 2: "h8", 3: "w8"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model.use_shape_derived_pooling(False)  # the reference: PyTorch's own adaptive pooling, eager
    for shape in [(1, 3, 256, 256), (2, 3, 256, 320), (1, 3, 384, 256), (1, 3, 96, 416)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x)
        (got,) = session.run(None, {"input": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), expected, rtol=0,
                                   atol=1e-4 * max(1.0, float(expected.abs().max())))


def test_checkpoint_round_trip_with_another_class_count(tmp_path):
    source = models.create("lrformer_t", num_classes=19)
    models.load_recipe_weights(source, seed=3)
    path = tmp_path / "lrformer_t_cityscapes.pth"
    torch.save({"meta": {"mmseg_version": "1.1.0"}, "state_dict": source.state_dict()}, path)
    loaded = models.create("lrformer_t", checkpoint=path)
    assert loaded.num_classes == 19
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)

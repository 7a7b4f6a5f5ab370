"""OffSeg specifics: the sampler's similarity, initial positions and two sampling forms, the interleaving, class
counts, input sizes, and the ONNX export of the head (the golden tests cover the whole model in eager mode)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from goldens import golden, logits_tolerance, recipe_model, run_public_case
from segdeploy import models
from segdeploy.errors import InputError
from segdeploy.models.carafe import carafe_subpixels, image_to_subpixels, subpixels_to_image
from segdeploy.models.layers import GroupNorm
from segdeploy.models.offseg import (
    FreqFusion,
    LocalSimGuidedSampler,
    OffsetLearning,
    interleave_channels,
    kernel_normalizer,
    local_cosine_similarity,
)
from segdeploy.recipe import seeded_state_dict


def similarity_unfold(x: torch.Tensor, k: int = 3, dilation: int = 2) -> torch.Tensor:
    """The original's compute_similarity: dilated unfold, cosine_similarity with the centre, centre dropped."""
    b, c, h, w = x.shape
    windows = F.unfold(x, k, padding=(k // 2) * dilation, dilation=dilation).reshape(b, c, k * k, h, w)
    centre = k * k // 2
    sim = F.cosine_similarity(windows[:, :, centre:centre + 1], windows, dim=1)
    return torch.cat((sim[:, :centre], sim[:, centre + 1:]), dim=1)


@pytest.mark.parametrize("shape", [(2, 16, 7, 9), (1, 8, 1, 3), (1, 24, 12, 5)])
def test_local_similarity_equals_unfold_and_cosine_similarity(shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    x[:, :, 0, 0] = 0  # a zero vector: cosine_similarity's eps clamp gives similarity 0
    torch.testing.assert_close(local_cosine_similarity(x, shape[1]), similarity_unfold(x), rtol=0, atol=1e-6)


def test_default_init_pos_is_the_sub_pixel_centres_in_the_documented_layout():
    pos = LocalSimGuidedSampler(16).init_pos.view(2, 4, 2, 2)  # coord, group, i, j
    for g in range(4):
        for i in range(2):
            for j in range(2):
                assert pos[0, g, i, j] == (j - 0.5) / 2 and pos[1, g, i, j] == (i - 0.5) / 2


def test_kernel_normalizer_applies_the_window_and_renormalises():
    mask = torch.randn(2, 25, 4, 6)
    out = kernel_normalizer(mask, 5, torch.tensor([0.37]))
    torch.testing.assert_close(out.sum(1), torch.ones(2, 4, 6))
    torch.testing.assert_close(out, mask.softmax(1), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("batch,offset_scale", [(1, 0.3), (2, 3.0)])
def test_gather_sampling_equals_grid_sample(batch, offset_scale):
    """The export form (explicit bilinear gathers from the CARAFE layout) against the original grid_sample form,
    with offsets large enough to push many points past the border."""
    gen = torch.Generator().manual_seed(batch)
    sampler = LocalSimGuidedSampler(16)
    h, w = 5, 7
    subpixels = carafe_subpixels(torch.randn(batch, 32, h, w, generator=gen),
                                 torch.randn(batch, 25, 2 * h, 2 * w, generator=gen), 5, 2)
    offset = offset_scale * torch.randn(batch, 32, h, w, generator=gen)
    expected = sampler.sample(subpixels_to_image(subpixels), offset)
    got = sampler.sample_subpixels(subpixels, offset)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_image_to_subpixels_is_the_documented_layout_and_subpixels_to_image_inverts_it():
    image = torch.randn(2, 5, 6, 8)
    sub = image_to_subpixels(image, 2)
    assert sub.shape == (2, 3, 4, 4, 5)
    for i in range(2):
        for j in range(2):
            torch.testing.assert_close(sub[:, :, :, i * 2 + j].permute(0, 3, 1, 2), image[:, :, i::2, j::2],
                                       rtol=0, atol=0)
    torch.testing.assert_close(subpixels_to_image(sub.unflatten(3, (2, 2))), image, rtol=0, atol=0)


@pytest.mark.parametrize("batch", [1, 2])
def test_freqfusion_subpixel_form_equals_the_original_form(batch):
    """The export form keeps the masks in CARAFE's sub-pixel layout and samples by gathers; on random weights
    (BatchNorm-free, so trained-like scales do not hide a layout error) it must give the original's three outputs."""
    fusion = FreqFusion(32, 64)
    fusion.load_state_dict(seeded_state_dict(fusion, 11 + batch))
    gen = torch.Generator().manual_seed(batch)
    hr, lr = torch.randn(batch, 32, 12, 10, generator=gen), torch.randn(batch, 64, 6, 5, generator=gen)
    with torch.no_grad():
        fusion.gather_sampling = False
        expected = fusion(hr, lr)
        fusion.gather_sampling = True
        got = fusion(hr, lr)
    for name, a, b in zip(("low-pass kernels", "hr", "lr"), got, expected):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()), msg=name)


@pytest.mark.parametrize("affine", [True, False])
def test_written_out_group_norm_equals_group_norm(affine):
    """The export form of the sampler's GroupNorm (means over the map, a block-diagonal group average) against
    PyTorch's kernel, on a map whose groups have different means and spreads."""
    gen = torch.Generator().manual_seed(int(affine))
    norm = GroupNorm(8, 64, affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.normal_(generator=gen)
            norm.bias.normal_(generator=gen)
    x = torch.randn(2, 64, 9, 7, generator=gen) * torch.linspace(0.1, 20, 64).view(1, -1, 1, 1) + 3
    expected = F.group_norm(x, 8, norm.weight, norm.bias, norm.eps)
    norm.written_out = True
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)
    norm.written_out = False
    torch.testing.assert_close(norm(x), expected, rtol=0, atol=0)


def test_the_export_forms_are_golden_exact_too():
    """Eager mode uses grid_sample, the original's offset learning and PyTorch's GroupNorm; exports use the gather
    form, the channels-first head and the written-out GroupNorm. Run those on the golden case."""
    g = golden("offseg_t")
    model = recipe_model("offseg_t", int(g["seed"]))
    for module in model.modules():
        if isinstance(module, FreqFusion):
            module.gather_sampling = True
        if isinstance(module, OffsetLearning):
            module.channels_first = True
        if isinstance(module, GroupNorm):
            module.written_out = True
    logits, _ = run_public_case(model, g)
    err = float(np.abs(logits.numpy() - g["logits"]).max())
    assert err <= logits_tolerance(g["logits"]), f"max|logits - golden| = {err:.3g}"


def test_interleaving_matches_the_originals_batch_reshape():
    a, b = torch.randn(2, 8, 3, 4), torch.randn(2, 12, 3, 4)
    original = torch.cat([a.reshape(8, 2, 3, 4), b.reshape(8, 3, 3, 4)], dim=1).reshape(2, 20, 3, 4)
    torch.testing.assert_close(interleave_channels(a, b), original, rtol=0, atol=0)


def test_num_classes_reaches_every_class_sized_tensor(tmp_path):
    model = models.create("offseg_t", num_classes=19)
    head = model.decode_head
    assert head.conv_seg.weight.shape[0] == head.conv_seg.bias.shape[0] == 19
    assert head.offset_learning.cls_repr.shape == (1, 19, 256)
    assert head.offset_learning.mask_norm.weight.shape == head.offset_learning.mask_norm.bias.shape == (19,)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 19, 16, 16)

    # a 19-class checkpoint: the class count is read from the classifier that produces the logits
    path = tmp_path / "offseg_t_19.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded = models.create("offseg_t", checkpoint=path)
    assert loaded.num_classes == 19 and loaded.decode_head.offset_learning.cls_repr.shape[1] == 19


def test_sizes_that_are_not_multiples_of_32_are_refused_with_the_nearest_valid_size():
    with pytest.raises(InputError, match="nearest valid size is 512x320"):
        models.create("offseg_t")(torch.zeros(1, 3, 500, 330))


def _onnx_session(module: torch.nn.Module, args: tuple, names: list[str], dynamic: dict):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    buffer = io.BytesIO()
    torch.onnx.export(module, args, buffer, opset_version=17, input_names=names, dynamic_axes=dynamic,
                      dynamo=False)
    graph = onnx.load_from_string(buffer.getvalue()).graph
    ops = {node.op_type for node in graph.node}
    assert all(node.domain in ("", "ai.onnx") for node in graph.node)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"]), ops


def test_decode_head_exports_with_standard_ops_and_runs_at_other_sizes():
    """The whole head (3 FreqFusions, interleaving, offset learning) with dynamic batch and sizes: nothing may
    freeze a traced size (as a ``flatten`` before a shape read once did), and the export form agrees with eager."""
    head = models.create("offseg_t").decode_head
    head.load_state_dict(seeded_state_dict(head, 3))

    def features(batch, height, width):
        gen = torch.Generator().manual_seed(height + width)
        return [torch.randn(batch, c, height // s, width // s, generator=gen)
                for c, s in zip((32, 48, 120, 224), (4, 8, 16, 32))]

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, f0, f1, f2, f3):
            return self.head([f0, f1, f2, f3])

    names = ["f0", "f1", "f2", "f3"]
    dynamic = {name: {0: "batch", 2: f"h{i}", 3: f"w{i}"} for i, name in enumerate(names)}
    session, ops = _onnx_session(Head(), tuple(features(1, 128, 160)), names, dynamic)
    assert "GridSample" not in ops  # the export form samples by gathers
    for batch, height, width in [(1, 128, 160), (2, 96, 192)]:
        inputs = features(batch, height, width)
        with torch.no_grad():
            expected = head(inputs).numpy()  # eager: the grid_sample form
        (got,) = session.run(None, {name: t.numpy() for name, t in zip(names, inputs)})
        assert got.shape == expected.shape == (batch, 150, height // 4, width // 4)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


def test_offset_learning_exports_channels_first_and_agrees_with_the_original_form():
    """The export form keeps every pixel-sized tensor channels-first: its one Transpose feeds a MatMul (the runtimes
    fold it in), the products with the class tokens and the sums over the classes are 1x1 convolutions, and the
    output equals the eager (original) form's at other batch sizes and shapes."""
    onnx = pytest.importorskip("onnx")
    head = OffsetLearning(32, 10).eval()
    head.load_state_dict(seeded_state_dict(head, 5))
    x = torch.randn(1, 32, 6, 10)
    session, _ = _onnx_session(head, (x,), ["x"], {"x": {0: "b", 2: "h", 3: "w"}})
    buffer = io.BytesIO()
    torch.onnx.export(head, (x,), buffer, opset_version=17, input_names=["x"], dynamo=False)
    graph = onnx.load_from_string(buffer.getvalue()).graph
    consumers = {i: n.op_type for n in graph.node for i in n.input}
    transposes = [n for n in graph.node if n.op_type == "Transpose"]
    assert len(transposes) == 1 and consumers[transposes[0].output[0]] == "MatMul"
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 5 and "LayerNormalization" not in consumers.values()  # 2 products, 3 channel sums
    assert not any(n.op_type.startswith("Reduce") and n.op_type != "ReduceMax" for n in graph.node)
    for shape in ((2, 32, 5, 3), (1, 32, 8, 8)):
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = head(x).numpy()  # eager: the original's form
        np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 3])
def test_channels_first_offset_learning_equals_the_original_form(batch):
    head = OffsetLearning(48, 19).eval()
    head.load_state_dict(seeded_state_dict(head, batch))
    x = torch.randn(batch, 48, 7, 9)
    with torch.no_grad():
        head.channels_first = False
        expected = head(x)
        head.channels_first = True
        got = head(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    assert set(head.state_dict()) == {"cls_repr", "mask_norm.weight", "mask_norm.bias", "cls_offset_proj.weight",
                                      "feat_offset_proj.weight"}  # checkpoints keep their keys

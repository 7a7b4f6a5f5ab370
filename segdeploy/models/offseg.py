"""OffSeg: EfficientFormerV2 backbone, FreqFusion pyramid and an offset-learning head (ICCV 2025).

Written from the authors' repository (HVision-NKU/OffSeg, mmseg 1.x fork): ``OffSegHead`` with FreqFusion (Chen et
al., TPAMI 2024) and its ``LocalSimGuidedSampler``; state_dict keys follow it exactly, so its ADE20K checkpoints load
strictly. The backbone is the shared EfficientFormerV2 port (identical to CGRSeg's).

Export notes. mmcv's CUDA-only CARAFE is replaced by :mod:`segdeploy.models.carafe` (standard ops, exact). The
sampler's dilated unfold becomes shifted slices of a zero-padded map, channel sums are 1x1 convs with unit weights,
and every coordinate or index is computed from tensors (CumSum of ones), so graphs keep dynamic batch/H/W. While
exporting, the sampler gathers its bilinear corners straight from CARAFE's sub-pixel layout instead of calling
``grid_sample`` on the interleaved map (same values; ONNX Runtime's GridSample was the slowest node of the head), and
FreqFusion keeps its upsampling masks in CARAFE's sub-pixel layout (``FreqFusion.forward_subpixels``) and its
sampler's GroupNorms are written out (``layers.GroupNorm``, no reshape that OpenVINO reorders for); eager mode keeps
``grid_sample``, the interleaved masks and PyTorch's GroupNorm; the offset-learning head runs channels-first (no
transposes of its pixel-sized tensors, ``OffsetLearning.forward_channels_first``), eager mode keeps the original's
form. Softmax operators run over the last axis; the one over the classes is written out. Inputs must have H and W
divisible by 32; the decode head's logits are at stride 4.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segdeploy.models.base import Segmentor
from segdeploy.models.carafe import carafe, carafe_weighted, image_to_subpixels, subpixels_to_image
from segdeploy.models.efficientformer_v2 import efficientformer_v2
from segdeploy.models.layers import ConvModule, GroupNorm, channel_sum, exporting
from segdeploy.models.offset_learning import OffsetLearning
from segdeploy.models.registry import FloatModule, ModelSpec, register

# ---------------------------------------------------------------------------------------------------------------
# FreqFusion and its sampler


def kernel_normalizer(mask: torch.Tensor, kernel_size: int, hamming: torch.Tensor) -> torch.Tensor:
    """Softmax over the k*k taps (channel axis of ``mask``), times the window, renormalised to sum 1.

    The window is a scalar buffer in OffSeg's settings (hamming_window=False); it cancels in exact arithmetic but
    not in float, so it is applied like the original does. The softmax is written out (max, exp, channel sums as
    1x1 convs): ONNX Runtime runs a Softmax over a non-last axis through two transposes, 6x slower here.
    """
    taps = kernel_size * kernel_size
    exp = (mask - mask.amax(dim=1, keepdim=True)).exp()
    mask = exp / channel_sum(exp, taps) * hamming
    return mask / channel_sum(mask, taps)


def tap_normalizer(mask: torch.Tensor, hamming: torch.Tensor) -> torch.Tensor:
    """:func:`kernel_normalizer` for masks in the sub-pixel layout (taps on the last axis): one Softmax."""
    mask = mask.softmax(dim=-1) * hamming
    return mask / mask.sum(dim=-1, keepdim=True)


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """y[..., i, j] = x[..., i + dy, j + dx], zero outside the map (static pad/slice bounds, any runtime size)."""
    py, px = abs(dy), abs(dx)
    padded = F.pad(x, (px, px, py, py))
    return padded[..., py + dy:(py + dy - 2 * py) or None, px + dx:(px + dx - 2 * px) or None]


def local_cosine_similarity(x: torch.Tensor, channels: int, dilation: int = 2) -> torch.Tensor:
    """Cosine similarity of each pixel with its 8 neighbours of a dilated 3x3 window (B, 8, H, W), row-major.
    ``channels`` is x's channel count.

    Equals the original's ``F.unfold`` + ``F.cosine_similarity(eps=1e-8)`` up to float rounding: that function
    divides each vector by max(norm, eps) before the dot product, so normalising once and shifting gives the same
    values; out-of-image neighbours are zero vectors (similarity 0). The similarity is symmetric, so only the 4
    forward neighbours are computed: sim(p, p - d) is sim(q, q + d) at q = p - d, the forward map shifted.
    """
    unit = x / channel_sum(x * x, channels).sqrt().clamp_min(1e-8)
    d = dilation
    forward = ((0, d), (d, -d), (d, 0), (d, d))  # (dy, dx), the second half of the row-major window
    products = torch.cat([unit * _shift(unit, dy, dx) for dy, dx in forward], dim=1)
    ahead = channel_sum(products, channels, groups=len(forward))
    behind = [_shift(ahead[:, i:i + 1], -dy, -dx) for i, (dy, dx) in enumerate(forward)]
    return torch.cat(behind[::-1] + [ahead], dim=1)  # (-d,-d), (-d,0), (-d,d), (0,-d), (0,d), (d,-d), (d,0), (d,d)


def _default_init_pos(scale: int, groups: int) -> torch.Tensor:
    """Sub-pixel centres (x = (j - 0.5)/s, y = (i - 0.5)/s for s = 2), laid out (coord, group, i, j)."""
    h = (torch.arange(scale) - (scale - 1) / 2) / scale
    y, x = torch.meshgrid(h, h, indexing="ij")
    return torch.stack([x, y]).unsqueeze(1).expand(2, groups, scale, scale).reshape(1, -1, 1, 1).clone()


class LocalSimGuidedSampler(nn.Module):
    """Upsamples ``feat`` (already at the high resolution) by resampling it at learned offsets (DySample-style).

    The offsets come from local self-similarity and content of the compressed high- and low-resolution features;
    each of ``groups`` channel groups gets its own offsets per output sub-pixel.
    """

    def __init__(self, channels: int, scale: int = 2, groups: int = 4):
        super().__init__()
        self.channels, self.scale, self.groups = channels, scale, groups
        offsets = 2 * groups * scale * scale  # (x, y) per group per sub-pixel
        self.register_buffer("init_pos", _default_init_pos(scale, groups))
        self.offset = nn.Conv2d(8, offsets, 3, padding=1)
        self.direct_scale = nn.Conv2d(channels, offsets, 3, padding=1)
        self.hr_offset = nn.Conv2d(8, offsets // scale ** 2, 3, padding=1)
        self.hr_direct_scale = nn.Conv2d(channels, offsets // scale ** 2, 3, padding=1)
        self.norm_hr = GroupNorm(channels // 8, channels)
        self.norm_lr = GroupNorm(channels // 8, channels)

    def offsets(self, hr_x: torch.Tensor, lr_x: torch.Tensor) -> torch.Tensor:
        """(B, 2*G*s*s, h, w) sampling offsets in low-resolution pixels, channel = coord*G*s*s + g*s*s + i*s + j."""
        hr_x, lr_x = self.norm_hr(hr_x), self.norm_lr(lr_x)
        s = self.scale
        offset = self.offset(local_cosine_similarity(lr_x, self.channels)) + F.pixel_unshuffle(
            self.hr_offset(local_cosine_similarity(hr_x, self.channels)), s)
        gate = self.direct_scale(lr_x) + F.pixel_unshuffle(self.hr_direct_scale(hr_x), s)
        return offset * gate.sigmoid() + self.init_pos

    def sample(self, feat: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """The original's form: ``grid_sample`` (bilinear, border, align_corners=False) of each channel group of
        the (B, C, s*h, s*w) map at its offset points."""
        s, groups = self.scale, self.groups
        offset = offset.unflatten(1, (2, -1))  # B, 2, G*s*s, h, w
        # pixel centres and the normaliser from the tensor itself (exact small integers), not from Python sizes
        ones = torch.ones_like(offset[:1, :1, :1])  # 1, 1, 1, h, w
        centres = torch.cat([ones.cumsum(4), ones.cumsum(3)], dim=1) - 0.5  # x, y
        size = torch.cat([ones.sum(4, keepdim=True)[:, :, :, :1], ones.sum(3, keepdim=True)[..., :1]], dim=1)  # w, h
        coords = 2 * (centres + offset) / size - 1
        # sub-pixels to the high-resolution grid, then (B*G, s*h, s*w, [x, y]) as grid_sample wants
        coords = F.pixel_shuffle(coords.flatten(1, 2), s).unflatten(1, (2, groups))
        grid = coords.permute(0, 2, 3, 4, 1).flatten(0, 1)
        out = F.grid_sample(feat.unflatten(1, (groups, -1)).flatten(0, 1), grid, mode="bilinear",
                            padding_mode="border", align_corners=False)
        return out.unflatten(0, (-1, groups)).flatten(1, 2)

    def sample_subpixels(self, subpixels: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """:meth:`sample` as explicit bilinear gathers, for export; ``subpixels`` is the (B, h, w, s, s, C) layout of
        :func:`carafe_subpixels`.

        ONNX Runtime's GridSample recomputes the sample weights for every channel and needs the interleaved map;
        here the four corner indices and weights are computed once per point and whole channel rows are gathered
        straight from the CARAFE layout. Same sample points, weights and corner order as ``grid_sample``.
        """
        s, groups = self.scale, self.groups
        channels = subpixels.shape[-1] // groups
        off = offset.unflatten(1, (2, groups, s, s))  # B, 2, G, i, j, h, w
        ones = torch.ones_like(offset[:1, :1])  # 1, 1, h, w; sizes and coordinates come from it, not from Python
        last_x = s * ones.sum(3, keepdim=True) - 1
        last_y = s * ones.sum(2, keepdim=True) - 1
        # grid_sample un-normalises 2X/w - 1 to s*X - 1/2 on the s*w map (X = low-res coordinate), then clamps
        x = (s * (ones.cumsum(3) - 0.5 + off[:, 0]) - 0.5).clamp_min(0).minimum(last_x)
        y = (s * (ones.cumsum(2) - 0.5 + off[:, 1]) - 0.5).clamp_min(0).minimum(last_y)
        x0, y0 = x.floor(), y.floor()
        # weights as grid_sample computes them; the far corner's index is clamped where its weight is 0
        wx0, wx1, wy0, wy1 = x0 + 1 - x, x - x0, y0 + 1 - y, y - y0
        x1, y1 = (x0 + 1).minimum(last_x), (y0 + 1).minimum(last_y)

        # row of the (B*h*w*s*s*G, C/G) table: ((((n*h + py//s)*w + px//s)*s + py%s)*s + px%s)*G + g, in int64
        integer = torch.ones_like(offset[:, :1], dtype=torch.long)  # B, 1, h, w
        width = integer[:1, :, :1].sum(3, keepdim=True).view(1, 1, 1, 1, 1, 1)
        per_image = integer[:1].sum(dim=(2, 3)).view(1, 1, 1, 1, 1, 1) * (s * s)
        batch = (integer[:, :, :1, :1].cumsum(0) - 1).view(-1, 1, 1, 1, 1, 1)
        group = torch.arange(groups, device=offset.device).view(1, groups, 1, 1, 1, 1)
        table = subpixels.reshape(-1, channels)

        def corner(py: torch.Tensor, px: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            py, px = py.long(), px.long()  # exact: floor()ed and clamped coordinates
            qy, qx = torch.div(py, s, rounding_mode="trunc"), torch.div(px, s, rounding_mode="trunc")  # >= 0
            pixel = ((qy * width + qx) * s + (py - qy * s)) * s + (px - qx * s)
            rows = (batch * per_image + pixel) * groups + group
            # B, G, i, j, h, w -> B, G, h, i, w, j: output pixel order, so one transpose gives NCHW at the end
            rows, weight = rows.permute(0, 1, 4, 2, 5, 3), weight.permute(0, 1, 4, 2, 5, 3)
            return table.index_select(0, rows.flatten()).view(*rows.shape, channels) * weight.unsqueeze(-1)

        out = (corner(y0, x0, wx0 * wy0) + corner(y0, x1, wx1 * wy0)
               + corner(y1, x0, wx0 * wy1) + corner(y1, x1, wx1 * wy1))  # B, G, h, i, w, j, C/G
        return out.flatten(4, 5).flatten(2, 3).permute(0, 1, 4, 2, 3).flatten(1, 2)

    def forward(self, hr_x: torch.Tensor, lr_x: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        return self.sample(feat, self.offsets(hr_x, lr_x))


class FreqFusion(nn.Module):
    """Fuses a high-resolution map with the 2x smaller running feature (Chen et al., "Frequency-aware Feature Fusion").

    Adaptive low-pass kernels (CARAFE 5x5) upsample the low-resolution feature, adaptive high-pass kernels
    (identity minus a CARAFE 3x3 low-pass) sharpen the high-resolution one, and the sampler re-aligns the
    upsampled feature by learned offsets. OffSeg's settings: compressed-feature upsampling, semi-conv, residual
    high-pass, no Hamming window, sampler groups 4. Returns (low-pass kernels, hr', lr') like the original.
    """

    # Which form runs: the original's (False: interleaved masks, grid_sample) or forward_subpixels (True: masks in
    # CARAFE's sub-pixel layout, explicit bilinear gathers). None picks forward_subpixels while exporting and the
    # original in eager mode, where PyTorch's grid_sample is the faster; both give the same values up to float rounding.
    gather_sampling: bool | None = None

    def __init__(self, hr_channels: int, lr_channels: int, lowpass_kernel: int = 5, highpass_kernel: int = 3,
                 encoder_kernel: int = 3, sampler_groups: int = 4):
        super().__init__()
        compressed = (hr_channels + lr_channels) // 4
        self.lowpass_kernel, self.highpass_kernel = lowpass_kernel, highpass_kernel
        self.register_buffer("hamming_lowpass", torch.ones(1))
        self.register_buffer("hamming_highpass", torch.ones(1))
        self.hr_channel_compressor = nn.Conv2d(hr_channels, compressed, 1)
        self.lr_channel_compressor = nn.Conv2d(lr_channels, compressed, 1)
        pad = encoder_kernel // 2
        self.content_encoder = nn.Conv2d(compressed, lowpass_kernel ** 2, encoder_kernel, padding=pad)
        self.dysampler = LocalSimGuidedSampler(compressed, scale=2, groups=sampler_groups)
        self.content_encoder2 = nn.Conv2d(compressed, highpass_kernel ** 2, encoder_kernel, padding=pad)

    def compress_and_sharpen(self, hr_feat: torch.Tensor, lr_feat: torch.Tensor):
        """Both forms start here: the compressed features, with the hr one high-passed first (both kernel
        predictions read the sharpened one), and the hr high-pass prediction (N, k*k, H, W) that made it."""
        hi = self.highpass_kernel
        hr_comp = self.hr_channel_compressor(hr_feat)
        lr_comp = self.lr_channel_compressor(lr_feat)
        mask_hr_hr = self.content_encoder2(hr_comp)
        hr_comp = hr_comp + hr_comp - carafe(hr_comp, kernel_normalizer(mask_hr_hr, hi, self.hamming_highpass), hi, 1)
        return hr_comp, lr_comp, mask_hr_hr

    def forward(self, hr_feat: torch.Tensor, lr_feat: torch.Tensor):
        gather = exporting() if self.gather_sampling is None else self.gather_sampling
        if gather:
            return self.forward_subpixels(hr_feat, lr_feat)
        lo, hi = self.lowpass_kernel, self.highpass_kernel
        hr_comp, lr_comp, mask_hr_hr = self.compress_and_sharpen(hr_feat, lr_feat)
        mask_lr_hr = self.content_encoder(hr_comp)
        mask_lr_init = kernel_normalizer(mask_lr_hr, lo, self.hamming_lowpass)

        # low-pass kernels: hr prediction plus the lr prediction upsampled by the initial low-pass kernels
        mask_lr = mask_lr_hr + carafe(self.content_encoder(lr_comp), mask_lr_init, lo, 2)
        lowpass = kernel_normalizer(mask_lr, lo, self.hamming_lowpass)
        mask_hr = mask_hr_hr + carafe(self.content_encoder2(lr_comp), lowpass, lo, 2)
        highpass = kernel_normalizer(mask_hr, hi, self.hamming_highpass)

        hr_out = hr_feat - carafe(hr_feat, highpass, hi, 1) + hr_feat
        lr_out = self.dysampler.sample(carafe(lr_feat, lowpass, lo, 2), self.dysampler.offsets(hr_comp, lr_comp))
        return lowpass, hr_out, lr_out

    def forward_subpixels(self, hr_feat: torch.Tensor, lr_feat: torch.Tensor):
        """:meth:`forward` with the upsampling masks kept in CARAFE's sub-pixel layout (N, h, w, s*s, taps) from
        prediction to use, and the sampler gathering from CARAFE's output in that layout.

        The same arithmetic: the low-resolution predictions arrive in that layout from CARAFE, the high-resolution
        ones are moved into it once, the tap softmax runs over the last axis, and the two upsamplings that use the
        final low-pass kernels share one copy of them. In the form that interleaves the masks, ONNX Runtime spent
        4.1 of the 44.4 ms of the largest fusion's own operators in 6-D transposes of the masks (trained offseg_t,
        512x512, 2 threads)."""
        lo, hi, s = self.lowpass_kernel, self.highpass_kernel, 2
        hr_comp, lr_comp, mask_hr_hr = self.compress_and_sharpen(hr_feat, lr_feat)
        mask_lr_hr = image_to_subpixels(self.content_encoder(hr_comp), s)
        mask_lr_init = tap_normalizer(mask_lr_hr, self.hamming_lowpass)

        mask_lr = mask_lr_hr + carafe_weighted(self.content_encoder(lr_comp), mask_lr_init, lo)
        lowpass = tap_normalizer(mask_lr, self.hamming_lowpass)
        mask_hr = image_to_subpixels(mask_hr_hr, s) + carafe_weighted(self.content_encoder2(lr_comp), lowpass, lo)
        highpass = subpixels_to_image(tap_normalizer(mask_hr, self.hamming_highpass).unflatten(3, (s, s)))

        hr_out = hr_feat - carafe(hr_feat, highpass, hi, 1) + hr_feat
        subpixels = carafe_weighted(lr_feat, lowpass, lo).unflatten(3, (s, s))
        lr_out = self.dysampler.sample_subpixels(subpixels, self.dysampler.offsets(hr_comp, lr_comp))
        return subpixels_to_image(lowpass.unflatten(3, (s, s))), hr_out, lr_out


# ---------------------------------------------------------------------------------------------------------------
# Offset learning and the decode head


def interleave_channels(a: torch.Tensor, b: torch.Tensor, chunks: int = 4) -> torch.Tensor:
    """[a_0, b_0, a_1, b_1, ...] over ``chunks`` consecutive channel chunks of each (the original's B*4 reshape)."""
    batch, _, height, width = a.shape
    stacked = torch.cat([a.unflatten(1, (chunks, -1)), b.unflatten(1, (chunks, -1))], dim=2)
    # not .flatten(1, 2): torch.onnx types that output with the traced sizes, and every later shape read (the
    # offset-learning output) would then be frozen into a dynamic-shape graph
    return stacked.reshape(batch, -1, height, width)


class OffSegHead(nn.Module):
    def __init__(self, in_channels=(32, 48, 120, 224), new_channels=(32, 32, 64, 128), channels: int = 256,
                 num_classes: int = 150):
        super().__init__()
        # inherited from mmseg's BaseDecodeHead and saved in checkpoints, but never used: logits come from
        # offset_learning
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.pre = nn.ModuleList(ConvModule(c, n, 1, norm="gn32", act="relu")
                                 for c, n in zip(in_channels, new_channels))
        fusions, low = [], new_channels[-1]
        for hr in reversed(new_channels[:-1]):
            fusions.append(FreqFusion(hr, low))
            low += hr
        self.freqfusions = nn.ModuleList(fusions)
        self.align = ConvModule(sum(new_channels), channels, 1, norm="gn32", act="relu")
        self.offset_learning = OffsetLearning(channels, num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        pyramid = [pre(f) for pre, f in zip(self.pre, features)]
        low = pyramid[-1]
        for fusion, high in zip(self.freqfusions, reversed(pyramid[:-1])):
            _, high, low = fusion(high, low)
            low = interleave_channels(high, low)
        return self.offset_learning(self.align(low))


# ---------------------------------------------------------------------------------------------------------------
# Variants


class OffSeg(Segmentor):
    size_multiple = 32

    def set_dynamic_shapes(self, enabled: bool = True) -> OffSeg:
        """Export switch for dynamic H/W ONNX graphs: only the backbone's attention-bias resize needs it; the head
        takes every size from its tensors."""
        self.backbone.set_dynamic_shapes(enabled)
        return self


_VARIANTS = {
    #      backbone  drop_path  head new_channels         config folder
    "t": dict(arch="s1", drop_path_rate=0.0, new_channels=(32, 32, 64, 128), folder="Tiny"),
    "b": dict(arch="s2", drop_path_rate=0.02, new_channels=(32, 64, 128, 256), folder="Base"),
    "l": dict(arch="l", drop_path_rate=0.1, new_channels=(32, 64, 128, 256), folder="Large"),
}


def _builder(variant: str):
    cfg = _VARIANTS[variant]

    def build(num_classes: int = 150, dynamic_shapes: bool = False) -> OffSeg:
        backbone = efficientformer_v2(cfg["arch"], drop_path_rate=cfg["drop_path_rate"])
        head = OffSegHead(backbone.widths, cfg["new_channels"], 256, num_classes)
        return OffSeg(backbone, head).set_dynamic_shapes(dynamic_shapes)

    return build


def _spec(name: str, variant: str) -> ModelSpec:
    return ModelSpec(
        name=name, family="offseg", variant=variant.upper(), builder=_builder(variant),
        export_notes=("CARAFE in standard ops (segdeploy.models.carafe), no mmcv custom op",
                      "dilated unfold as shifted slices of a zero-padded map",
                      "grid_sample as a gather-based bilinear sampler while exporting",
                      "FreqFusion's upsampling masks in CARAFE's sub-pixel layout while exporting",
                      "the sampler's GroupNorm written out over the map's axes while exporting",
                      "EfficientFormerV2 stride-2 kernel-1 AvgPool as a strided slice"),
        int8_float_modules=(FloatModule(
            "decode_head.freqfusions", ("cpu",),
            "FreqFusion moves data (CARAFE's patch gathers, transposes and per-pixel products, the sampler's "
            "gathers): ONNX Runtime's uint8 Mul, Add, Gather and Transpose there ran slower than its float32 ones"),
            *(FloatModule(f"decode_head.offset_learning.{module}", None,
                          f"the {what} over the classes, written out channels-first for export: its exponentials, "
                          "squares, sums and division lose the logits' precision in 8 bits") for module, what in
              (("class_softmax", "softmax"), ("class_norm", "LayerNorm")))),
        size_multiple=OffSeg.size_multiple, output_stride=4,
        # decode_head.conv_seg is inherited and unused; the class count lives in the offset-learning head (the
        # LayerNorm over classes is the last class-sized layer; cls_repr is (1, K, 256))
        classifier_key="decode_head.offset_learning.mask_norm.weight",
        source_config=f"local_configs/offseg/{_VARIANTS[variant]['folder']}/offseg-{variant}_ade20k_160k-512x512.py",
        notes="Logits at stride 4 from the offset-learning head (decode_head.conv_seg is kept for strict loading "
              "but unused). H and W must be multiples of 32. The class softmax runs over all H/4*W/4 pixels, so "
              "results depend on the whole image (use one window up to 512x512, like mmseg's slide test). "
              "mmcv's CUDA CARAFE is replaced by an exact plain-op form; grid_sample needs ONNX opset >= 16. "
              "Option dynamic_shapes=True is for ONNX export with dynamic H/W.",
        options={"dynamic_shapes": False}, option_choices={"dynamic_shapes": (False, True)})


register(_spec("offseg_t", "t"))
register(_spec("offseg_b", "b"))
register(_spec("offseg_l", "l"))

"""EfficientFormerV2 feature backbone (Li et al., ICCV 2023), as ported for segmentation by CGRSeg and OffSeg.

Written from CGRSeg's ``mmseg/models/backbones/efficientformer_v2.py`` (the ``*_feat`` classes); OffSeg's copy is
functionally identical. State-dict keys, order and buffers follow it exactly, so both families' checkpoints load
strictly. Usage::

    backbone = EfficientFormerV2(**EFFICIENTFORMER_V2_ARCHS["s1"], drop_path_rate=0.0)
    f0, f1, f2, f3 = backbone(x)    # strides 4, 8, 16, 32; channels = widths

Constructor arguments:

* ``widths``: channels (C0, C1, C2, C3) of the four stages.
* ``depths``: blocks per stage.
* ``mlp_ratios``: per stage, one MLP expansion ratio per block (hidden width ``int(C * ratio)``).
* ``vit_num``: how many blocks at the end of stages 2 and 3 are attention blocks (AttnFFN); the stage-2 ones
  attend on a stride-2 grid and upsample back.
* ``drop_path_rate``: stochastic depth, rising linearly over all blocks (no effect in eval).
* ``resolution``: the nominal input side (512) that fixes the attention-bias table sizes; at run time the
  tables are bicubic-resized to the actual token counts, as in the original.
* ``dynamic_shapes``: export switch, see :meth:`EfficientFormerV2.set_dynamic_shapes`.

Inputs must have H and W divisible by 32: the stride-2 attention and the attention downsample halve a
stride-16 grid and add the result back at full size.

Differences from the original, all invisible in the outputs:

* The original caches ``ab = table[:, idx]`` when ``eval()`` is called, so loading weights after ``eval()``
  leaves a stale (zero) bias. Here the table is gathered from the parameter on every forward; with constant
  indices the gather folds to a constant in a static ONNX graph.
* The original's ``train()`` also freezes the backbone's BatchNorm statistics during training; this inference
  port does not (eval behaviour is identical).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from segdeploy.models.layers import DropPath

# The ImageNet classification checkpoints were trained at 224 px, i.e. a 7x7 stride-32 grid; their bias tables
# only fit buffers of these sizes (see Attention4D).
_IMAGENET_GRID = 7

EFFICIENTFORMER_V2_ARCHS = {
    "s1": dict(widths=(32, 48, 120, 224), depths=(3, 3, 9, 6), vit_num=2, mlp_ratios=(
        (4, 4, 4), (4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4))),
    "s2": dict(widths=(32, 64, 144, 288), depths=(4, 4, 12, 8), vit_num=4, mlp_ratios=(
        (4, 4, 4, 4), (4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4))),
    "l": dict(widths=(40, 80, 192, 384), depths=(5, 5, 15, 10), vit_num=6, mlp_ratios=(
        (4, 4, 4, 4, 4), (4, 4, 4, 4, 4), (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
        (4, 4, 4, 3, 3, 3, 3, 4, 4, 4))),
}


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
             groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups),
                         nn.BatchNorm2d(out_channels))


def bias_index_grid(query_side: int, key_side: int) -> torch.Tensor:
    """Index of each (query, key) pair into a bias table of ``key_side**2`` relative offsets.

    Query point (a, b) on a ``query_side`` grid sits at (step*a, step*b) on the ``key_side`` grid, step =
    ceil(key_side / query_side); the offset (|dy|, |dx|) gets index ``|dy| * key_side + |dx|``. This closed form
    equals the original's numbering of offsets by first appearance, since the first query row already meets every
    offset.
    """
    step = math.ceil(key_side / query_side)
    q = torch.arange(query_side) * step
    k = torch.arange(key_side)
    dy = (q[:, None, None, None] - k[None, None, :, None]).abs()
    dx = (q[None, :, None, None] - k[None, None, None, :]).abs()
    return (dy * key_side + dx).reshape(query_side ** 2, key_side ** 2)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """B x C x H x W -> B x heads x C/heads x H*W, heads as contiguous channel chunks.

    A reshape with -1 on the token axis: the TorchScript exporter infers a wrong static shape through
    ``unflatten``, which would freeze the token count of a dynamic-shape graph.
    """
    return x.reshape(x.shape[0], heads, x.shape[1] // heads, -1)


def resize_bias_table(table: torch.Tensor, attn: torch.Tensor, dynamic_shapes: bool = False) -> torch.Tensor:
    """Bicubic-resize a (heads, Nq0, Nk0) bias table to the token counts of ``attn`` (B, heads, Nq, Nk).

    The original treats the table as a heads x Nq0 x Nk0 image and resizes the flattened token axes (not the 2-D
    grid), align_corners=False. Skipped when the sizes already match (512x512 inputs): exact and no Resize node.
    With ``dynamic_shapes`` the resize is always emitted, its size taken from the runtime tensor shape; while
    exporting it is written as gathers (``bicubic_by_gathers``) instead of a cubic Resize, which ONNX Runtime ran
    about 15x slower than PyTorch (a dynamic CGRSeg-T export spent 85 % of its time there).
    Returns (1, heads, Nq, Nk), which broadcasts over the batch (no squeeze: it exports as an If node).
    """
    table = table.unsqueeze(0)
    if dynamic_shapes:
        size = (attn.shape[-2], attn.shape[-1])
        if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
            return bicubic_by_gathers(table, size)
    else:
        size = (int(attn.shape[-2]), int(attn.shape[-1]))
        if size == tuple(table.shape[-2:]):
            return table
    return F.interpolate(table, size=size, mode="bicubic", align_corners=False)


CUBIC_A = -0.75  # PyTorch's (and OpenCV's) bicubic convolution constant


def cubic_taps(in_size: int, out_size) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """PyTorch's bicubic sampling along one axis (align_corners=False), from a possibly traced output size: the
    (out, 4) source indices (clamped to the input) and the four (out, 1) weights, computed in float32 with
    PyTorch's formulas (``compute_indices_weights_cubic``, ``get_cubic_upsample_coefficients``)."""
    a = CUBIC_A
    i = torch.arange(out_size).to(torch.float32)
    scale = torch.tensor(float(in_size)) / torch.as_tensor(out_size).to(torch.float32)
    real = scale * (i + 0.5) - 0.5
    base = torch.floor(real)
    t = real - base
    near, far = t, 1.0 - t
    weights = [((a * (near + 1.0) - 5 * a) * (near + 1.0) + 8 * a) * (near + 1.0) - 4 * a,
               ((a + 2) * near - (a + 3)) * near * near + 1,
               ((a + 2) * far - (a + 3)) * far * far + 1,
               ((a * (far + 1.0) - 5 * a) * (far + 1.0) + 8 * a) * (far + 1.0) - 4 * a]
    index = (base.to(torch.int64).unsqueeze(1) + torch.arange(-1, 3)).clamp(0, in_size - 1)
    return index, [w.unsqueeze(1) for w in weights]


def bicubic_by_gathers(image: torch.Tensor, size) -> torch.Tensor:
    """F.interpolate(image, size, mode="bicubic", align_corners=False) for a (N, C, H, W) tensor, as four gathers
    and weighted sums per axis (width first, then height, as PyTorch's kernel nests them): O(4 (H + H') W') work,
    exportable with the output size taken from the runtime shape."""
    rows, row_w = cubic_taps(image.shape[-2], size[0])
    cols, col_w = cubic_taps(image.shape[-1], size[1])
    across = None
    for j in range(4):  # along the width: (N, C, H, W')
        term = image.index_select(-1, cols[:, j]) * col_w[j].squeeze(1)
        across = term if across is None else across + term
    out = None
    for j in range(4):  # along the height: (N, C, H', W')
        term = across.index_select(-2, rows[:, j]) * row_w[j]
        out = term if out is None else out + term
    return out


class Mlp(nn.Module):
    """1x1 expand -> 3x3 depth-wise -> 1x1 project, each followed by BN (registration order as in the original)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.mid = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.mid_norm = nn.BatchNorm2d(hidden)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.norm2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.fc1(x)))
        x = self.act(self.mid_norm(self.mid(x)))
        return self.norm2(self.fc2(x))


class AttentionBiasTable(nn.Module):
    """Registers the learned bias table, its index buffer and the ImageNet-only buffers, in checkpoint order."""

    dynamic_shapes: bool = False

    def _register_bias_tables(self, num_heads: int, query_side: int, key_side: int, imagenet_query_side: int,
                              imagenet_key_side: int) -> None:
        self.attention_biases_seg = nn.Parameter(torch.zeros(num_heads, key_side ** 2))
        # Never read: they only absorb the same-named keys of the 224-px ImageNet checkpoint, whose shapes would
        # otherwise make even a non-strict load fail. The real table is attention_biases_seg.
        self.register_buffer("attention_biases", torch.zeros(num_heads, imagenet_key_side ** 2))
        self.register_buffer("attention_bias_idxs",
                             torch.ones(imagenet_query_side ** 2, imagenet_key_side ** 2, dtype=torch.long))
        self.register_buffer("attention_bias_idxs_seg", bias_index_grid(query_side, key_side))

    def attention_bias(self, attn: torch.Tensor) -> torch.Tensor:
        """The bias added to ``attn``: gathered from the current parameter, so never stale after loading."""
        table = self.attention_biases_seg[:, self.attention_bias_idxs_seg]
        return resize_bias_table(table, attn, self.dynamic_shapes)


class Attention4D(AttentionBiasTable):
    """Multi-head self-attention on a 2-D map with a 3x3 depth-wise local term on the values and talking heads.

    With ``stride=2`` it attends on a stride-2 grid and upsamples the result back (bilinear x2).
    """

    def __init__(self, dim: int, resolution: int, stride: int | None = None, num_heads: int = 8,
                 key_dim: int = 32, attn_ratio: int = 4):
        super().__init__()
        self.num_heads, self.key_dim = num_heads, key_dim
        self.scale = key_dim ** -0.5
        value_dim = attn_ratio * key_dim
        qk_channels, v_channels = num_heads * key_dim, num_heads * value_dim
        side = math.ceil(resolution / stride) if stride else resolution
        self._register_bias_tables(num_heads, side, side, _IMAGENET_GRID, _IMAGENET_GRID)
        self.stride_conv = _conv_bn(dim, dim, 3, stride, groups=dim) if stride else None
        self.upsample = stride is not None
        self.q = _conv_bn(dim, qk_channels)
        self.k = _conv_bn(dim, qk_channels)
        self.v = _conv_bn(dim, v_channels)
        self.v_local = _conv_bn(v_channels, v_channels, 3, groups=v_channels)
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.proj = nn.Sequential(nn.GELU(), nn.Conv2d(v_channels, dim, 1), nn.BatchNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        heads = self.num_heads
        q = split_heads(self.q(x), heads).transpose(-2, -1)  # B, heads, N, key_dim
        k = split_heads(self.k(x), heads)  # B, heads, key_dim, N
        v = self.v(x)
        v_local = self.v_local(v)
        v = split_heads(v, heads).transpose(-2, -1)  # B, heads, N, value_dim

        attn = (q @ k) * self.scale
        attn = attn + self.attention_bias(attn)
        # talking_head2 acts on probabilities and its bias is not renormalised, as in the original
        attn = self.talking_head2(self.talking_head1(attn).softmax(dim=-1))
        out = (attn @ v).transpose(2, 3).reshape(v_local.shape) + v_local
        if self.upsample:
            out = F.interpolate(out, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.proj(out)


class LGQuery(nn.Module):
    """Stride-2 query of the attention downsample: depth-wise 3x3 s2 conv plus plain subsampling."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.local = nn.Sequential(nn.Conv2d(in_dim, in_dim, 3, 2, 1, groups=in_dim))
        self.proj = _conv_bn(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the original's AvgPool2d(kernel 1, stride 2) is subsampling; a strided slice exports as one Slice
        return self.proj(self.local(x) + x[:, :, ::2, ::2])


class Attention4DDownsample(AttentionBiasTable):
    """Attention from a stride-2 query grid to the full-resolution keys; maps ``dim`` to ``out_dim`` channels."""

    def __init__(self, dim: int, out_dim: int, resolution: int, num_heads: int = 8, key_dim: int = 16,
                 attn_ratio: int = 4):
        super().__init__()
        self.num_heads, self.key_dim = num_heads, key_dim
        self.scale = key_dim ** -0.5
        value_dim = attn_ratio * key_dim
        qk_channels, v_channels = num_heads * key_dim, num_heads * value_dim
        self._register_bias_tables(num_heads, math.ceil(resolution / 2), resolution,
                                   _IMAGENET_GRID, 2 * _IMAGENET_GRID)
        self.q = LGQuery(dim, qk_channels)
        self.k = _conv_bn(dim, qk_channels)
        self.v = _conv_bn(dim, v_channels)
        self.v_local = _conv_bn(v_channels, v_channels, 3, stride=2, groups=v_channels)
        self.proj = nn.Sequential(nn.GELU(), nn.Conv2d(v_channels, out_dim, 1), nn.BatchNorm2d(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = self.num_heads
        q = split_heads(self.q(x), heads).transpose(-2, -1)  # B, heads, Nq, key_dim
        k = split_heads(self.k(x), heads)  # B, heads, key_dim, Nk
        v = self.v(x)
        v_local = self.v_local(v)
        v = split_heads(v, heads).transpose(-2, -1)  # B, heads, Nk, value_dim

        attn = (q @ k) * self.scale
        attn = (attn + self.attention_bias(attn)).softmax(dim=-1)
        out = (attn @ v).transpose(2, 3).reshape(v_local.shape) + v_local
        return self.proj(out)


class ConvEmbedding(nn.Module):
    """Stride-2 3x3 conv + BN between stages."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, 3, 2, 1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class AttentionEmbedding(nn.Module):
    """Stride-2 downsample into the last stage: attention downsample plus a conv + BN shortcut."""

    def __init__(self, in_dim: int, out_dim: int, resolution: int):
        super().__init__()
        self.attn = Attention4DDownsample(in_dim, out_dim, resolution)
        self.conv = nn.Conv2d(in_dim, out_dim, 3, 2, 1)
        self.bn = nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x) + self.bn(self.conv(x))


def _layer_scale(dim: int, init: float) -> nn.Parameter:
    return nn.Parameter(torch.full((dim, 1, 1), init))


class FFN(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0.0, layer_scale_init: float = 1e-5):
        super().__init__()
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        self.layer_scale_2 = _layer_scale(dim, layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


class AttnFFN(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, resolution: int, stride: int | None = None,
                 drop_path: float = 0.0, layer_scale_init: float = 1e-5):
        super().__init__()
        self.token_mixer = Attention4D(dim, resolution, stride)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        self.layer_scale_1 = _layer_scale(dim, layer_scale_init)
        self.layer_scale_2 = _layer_scale(dim, layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1 * self.token_mixer(x))
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


class EfficientFormerV2(nn.Module):
    """Four-stage conv/attention hybrid; ``forward`` returns [F0, F1, F2, F3] at strides 4, 8, 16, 32.

    Module tree as in the original: ``patch_embed`` (stem) and ``network`` = [stage 0, embed, stage 1, embed,
    stage 2, attention embed, stage 3]; the outputs are taken after the stages, without extra norms.
    """

    def __init__(self, widths, depths, mlp_ratios, vit_num: int, drop_path_rate: float = 0.0,
                 resolution: int = 512, dynamic_shapes: bool = False):
        super().__init__()
        if len(widths) != 4 or len(depths) != 4 or len(mlp_ratios) != 4:
            raise ValueError("EfficientFormerV2 needs 4 widths, depths and per-stage mlp_ratios")
        if any(len(r) != d for r, d in zip(mlp_ratios, depths)):
            raise ValueError(f"mlp_ratios give {[len(r) for r in mlp_ratios]} blocks but depths are {list(depths)}")
        self.widths = tuple(widths)
        stem = widths[0] // 2
        self.patch_embed = nn.Sequential(
            nn.Conv2d(3, stem, 3, 2, 1), nn.BatchNorm2d(stem), nn.GELU(),
            nn.Conv2d(stem, widths[0], 3, 2, 1), nn.BatchNorm2d(widths[0]), nn.GELU())

        total = sum(depths)
        network = []
        for stage, (dim, depth) in enumerate(zip(widths, depths)):
            # the token grid of this stage for the nominal input; only sizes the bias tables
            stage_resolution = math.ceil(resolution / 2 ** (stage + 2))
            blocks = []
            for b in range(depth):
                drop_path = drop_path_rate * (b + sum(depths[:stage])) / max(total - 1, 1)
                ratio = mlp_ratios[stage][b]
                if stage >= 2 and b >= depth - vit_num:
                    stride = 2 if stage == 2 else None
                    blocks.append(AttnFFN(dim, ratio, stage_resolution, stride, drop_path))
                else:
                    blocks.append(FFN(dim, ratio, drop_path))
            network.append(nn.Sequential(*blocks))
            if stage < 3:
                if stage == 2:
                    network.append(AttentionEmbedding(dim, widths[stage + 1], stage_resolution))
                else:
                    network.append(ConvEmbedding(dim, widths[stage + 1]))
        self.network = nn.ModuleList(network)
        self.set_dynamic_shapes(dynamic_shapes)

    def set_dynamic_shapes(self, enabled: bool = True) -> EfficientFormerV2:
        """Export switch. Off (default): the bias resize is skipped when the token counts equal the table's and
        otherwise has constant sizes, so a static graph folds it to constants. On: the resize is always in the
        graph with sizes read from the runtime shape, for ONNX graphs with dynamic H/W. Eager results are equal.
        """
        for module in self.modules():
            if isinstance(module, AttentionBiasTable):
                module.dynamic_shapes = enabled
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        outs = []
        for index, layer in enumerate(self.network):
            x = layer(x)
            if index % 2 == 0:
                outs.append(x)
        return outs


def efficientformer_v2(arch: str, **kwargs) -> EfficientFormerV2:
    """Build an architecture from ``EFFICIENTFORMER_V2_ARCHS`` ("s1", "s2", "l"); kwargs override the table."""
    return EfficientFormerV2(**{**EFFICIENTFORMER_V2_ARCHS[arch], **kwargs})

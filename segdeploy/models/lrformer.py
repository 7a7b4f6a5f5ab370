"""LRFormer: low-resolution self-attention backbone and LRHead decoder (Wu et al., "Low-Resolution Self-Attention
for Semantic Segmentation"), the plain T / S / B / L variants (not the Mask2Former "plus" ones).

Written from the authors' repository (yuhuan-wu/LRFormer, an mmseg 1.1 fork); state_dict keys follow its
``EncoderDecoder`` exactly, so its ADE20K checkpoints load strictly. The original moves between token sequences and
maps; this implementation stays in NCHW and applies the LayerNorms over channels (same computation, float
summation order aside: logits agree with the goldens to ~1e-6 relative).

Every attention pools its input to a small fixed grid: the query to ``q`` on the short side (16 in the backbone,
32 in the decoder), keys/values to a pyramid of four coarser grids, and the attention output is resized back
bilinearly. As in the released code (not the paper), this happens in every block whatever the map size, also when
the map is smaller than the grid (pooling then enlarges). The long side of each grid keeps the aspect ratio:
``round(long * q / short + 0.001)``, so the pooled sizes depend on the input's aspect ratio.

Inputs must be multiples of 32: the original declares every stage as exactly half the previous one, which only holds
then, and crashes otherwise; ``LRFormer.check_input`` turns that into an error naming the nearest valid size.

Export. The pools use ``segdeploy.models.pooling`` (exact averaging-matrix form; PyTorch's ONNX exporters cannot
lower adaptive pooling to sizes that do not divide the input). Two modes:

* ``dynamic_pooling=False`` (default): pooled sizes are Python ints and the pooling matrices constants, frozen for
  the traced resolution; eager mode runs PyTorch's own kernel. One graph per deployment resolution.
* ``dynamic_pooling=True`` (builder option, or ``model.use_shape_derived_pooling()``): pooled sizes are computed
  from the runtime shape in integer arithmetic, ``(1000*long*q + 501*short) // (1000*short)``, and the pooling
  matrices with arange / integer division / compare, in eager mode too. The integer rule equals the original's
  float rounding for every map whose short side is below 1000 (inputs up to 4000 px, checked for aspect ratios up
  to 8); only at exact ties, which need a short side that is a multiple of 1000, does Python's half-even rounding
  differ. Exported with the TorchScript exporter (``dynamo=False``) and dynamic H/W axes, one graph serves every
  input size and aspect ratio (multiples of 32); the sizes also stay symbolic under ``torch.export``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segdeploy.models.base import Segmentor
from segdeploy.models.layers import ChannelLayerNorm, ConvModule, DropPath
from segdeploy.models.pooling import adaptive_avg_pool2d, adaptive_avg_pool2d_from_shape
from segdeploy.models.registry import ModelSpec, register

# Key/value pyramid of the backbone, whose query grid is 16; other query sizes scale it (the decoder: 22, 16, 12, 8).
BASE_PYRAMID = (11, 8, 6, 4)
BASE_QUERY_SIZE = 16


def pyramid_sizes(q_pooled_size: int) -> tuple[int, ...]:
    return tuple(round(b * q_pooled_size / BASE_QUERY_SIZE + 0.001) for b in BASE_PYRAMID)


def pooled_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """The original's grid for a (height, width) map: short side ``short_side``, long side keeps the aspect ratio.

    Python ``round`` on float64, as the original; the +0.001 makes ties round up.
    """
    if width >= height:
        return short_side, round(width * float(short_side) / height + 0.001)
    return round(height * float(short_side) / width + 0.001), short_side


def _long_side(long, short, short_side: int):
    # round(long * q / short + 0.001) == floor(long * q / short + 0.501), written without floats
    numerator, denominator = 1000 * long * short_side + 501 * short, 1000 * short
    if isinstance(numerator, torch.Tensor):
        # non-negative, so truncation is floor; exports as one Div instead of floor-division's sign fix-ups
        return torch.div(numerator, denominator, rounding_mode="trunc")
    return numerator // denominator


def pooled_size_from_shape(height, width, short_side: int):
    """:func:`pooled_size` in integer arithmetic on the runtime sizes, without branching on the orientation.

    Sizes are ints, SymInts (torch.export) or 0-dim tensors (TorchScript tracing). The long-side formula applied to
    the short side gives at most ``short_side`` and applied to the long side at least ``short_side``, so taking the
    maximum with ``short_side`` on both sides selects the right one.
    """
    pooled = _long_side(height, width, short_side), _long_side(width, height, short_side)
    if isinstance(pooled[0], torch.Tensor):
        return tuple(side.clamp(min=short_side) for side in pooled)
    return tuple(torch.sym_max(short_side, side) for side in pooled)


def _depthwise3x3(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, 1, 1, groups=channels)


# ---------------------------------------------------------------------------------------------------------------
# Building blocks shared by the backbone and the decoder


class LowResolutionAttention(nn.Module):
    """LRSA: multi-head attention from a pooled query grid to a pyramid of pooled keys/values.

    ``layout="backbone"``: q and kv are Linears wrapped in one-element Sequentials (keys ``q.0``, ``kv.0``).
    ``layout="head"``: q is a 1x1 conv on the pooled map, kv a plain Linear, as in the decoder's own copy.
    """

    def __init__(self, dim: int, num_heads: int, q_pooled_size: int, kv_pooled_sizes: tuple[int, ...],
                 layout: str = "backbone"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q_pooled_size = q_pooled_size
        self.kv_pooled_sizes = tuple(kv_pooled_sizes)
        self.layout = layout
        if layout == "backbone":
            self.q = nn.Sequential(nn.Linear(dim, dim))
            self.kv = nn.Sequential(nn.Linear(dim, 2 * dim))
        elif layout == "head":
            self.q = nn.Conv2d(dim, dim, 1)
            self.kv = nn.Linear(dim, 2 * dim)
        else:
            raise ValueError(f"layout must be 'backbone' or 'head', not {layout!r}")
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)  # default eps 1e-5, unlike the blocks' 1e-6
        self.dynamic_pooling = False

    def _split_heads(self, tokens: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        return tokens.reshape(b, -1, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, y: torch.Tensor, pyramid_convs: nn.ModuleList | None = None) -> torch.Tensor:
        b, c = y.shape[0], y.shape[1]
        height, width = y.shape[-2], y.shape[-1]
        if self.dynamic_pooling:
            size_of, pool = pooled_size_from_shape, adaptive_avg_pool2d_from_shape
        else:
            # frozen into constants when exported: the graph is valid for this resolution only
            height, width = int(height), int(width)
            size_of, pool = pooled_size, adaptive_avg_pool2d

        query_map = pool(y, size_of(height, width, self.q_pooled_size))
        if self.layout == "head":
            q = self.q(query_map).flatten(2).transpose(1, 2)
        else:
            q = self.q(query_map.flatten(2).transpose(1, 2))
        q = self._split_heads(q)

        pyramid = []
        for j, size in enumerate(self.kv_pooled_sizes):
            pooled = pool(y, size_of(height, width, size))
            if pyramid_convs is not None:
                pooled = pooled + pyramid_convs[j](pooled)
            pyramid.append(pooled.flatten(2))
        kv_tokens = self.norm(torch.cat(pyramid, dim=2).transpose(1, 2))
        # first C output channels are the keys, the last C the values
        kv = self.kv(kv_tokens).reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]

        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = self.proj((attn @ v).transpose(1, 2).reshape(b, -1, c))
        out = out.transpose(1, 2).reshape(b, c, query_map.shape[-2], query_map.shape[-1])
        return F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return (f"heads={self.num_heads}, q_pooled_size={self.q_pooled_size}, kv_pooled_sizes={self.kv_pooled_sizes}, "
                f"dynamic_pooling={self.dynamic_pooling}")


class InvertedResidualFFN(nn.Module):
    """IRB: 1x1 expand -> GELU -> residual depth-wise 3x3 (no activation after it) -> 1x1 project."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.conv = _depthwise3x3(hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(x))
        return self.fc2(x + self.conv(x))


class LRBlock(nn.Module):
    """Conditional positional encoding, then attention and FFN residuals, optionally layer-scaled."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, q_pooled_size: int,
                 kv_pooled_sizes: tuple[int, ...], layer_scale: bool, norm: str = "layernorm",
                 layout: str = "backbone", drop_path: float = 0.0):
        super().__init__()
        if layer_scale:
            # registered first so they lead the block's state_dict, as in the original
            self.layer_scale_1 = nn.Parameter(torch.full((dim,), 1e-6))
            self.layer_scale_2 = nn.Parameter(torch.full((dim,), 1e-6))
        else:
            self.register_parameter("layer_scale_1", None)
            self.register_parameter("layer_scale_2", None)
        make_norm = (lambda: ChannelLayerNorm(dim, eps=1e-6)) if norm == "layernorm" else (lambda: nn.BatchNorm2d(dim))
        self.norm1 = make_norm()
        self.attn = LowResolutionAttention(dim, num_heads, q_pooled_size, kv_pooled_sizes, layout)
        self.drop_path = DropPath(drop_path)
        self.norm2 = make_norm()
        self.mlp = InvertedResidualFFN(dim, int(dim * mlp_ratio))
        self.cpe = _depthwise3x3(dim)

    def forward(self, x: torch.Tensor, pyramid_convs: nn.ModuleList | None = None) -> torch.Tensor:
        x = x + self.cpe(x)
        y = self.attn(self.norm1(x), pyramid_convs)
        if self.layer_scale_1 is not None:
            y = self.layer_scale_1[:, None, None] * y
        x = x + self.drop_path(y)
        y = self.mlp(self.norm2(x))
        if self.layer_scale_2 is not None:
            y = self.layer_scale_2[:, None, None] * y
        return x + self.drop_path(y)


# ---------------------------------------------------------------------------------------------------------------
# Backbone


class Stem(nn.Module):
    """Four 3x3 convs (two with stride 2) to stride 4, then a LayerNorm; key names follow the original Sequential."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, 2, 1), nn.BatchNorm2d(mid), nn.GELU(),
            nn.Conv2d(mid, mid, 3, 1, 1), nn.BatchNorm2d(mid), nn.GELU(),
            nn.Conv2d(mid, out_channels, 3, 2, 1), nn.BatchNorm2d(out_channels), nn.GELU(),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1))
        self.norm = ChannelLayerNorm(out_channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv1(x))


class PatchEmbed(nn.Module):
    """Overlapping stride-2 3x3 conv + LayerNorm between stages."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.norm = ChannelLayerNorm(out_channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class LRFormerBackbone(nn.Module):
    """Four stages of LRBlocks; returns the stage maps at strides 4, 8, 16, 32 (no output norms).

    The depth-wise convs applied to the key/value pyramid (``d_convs{s}.{j}``) belong to the backbone and are shared
    by every block of stage s.
    """

    def __init__(self, embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3), num_heads=(2, 4, 10, 16),
                 mlp_ratios=(8, 8, 4, 4), q_pooled_size: int = 16, layer_scale_stages=(3, 4),
                 drop_path_rate: float = 0.1):
        super().__init__()
        self.num_stages = len(depths)
        kv_sizes = pyramid_sizes(q_pooled_size)
        self.patch_embed1 = Stem(3, embed_dims[0])
        for s in range(2, self.num_stages + 1):
            setattr(self, f"patch_embed{s}", PatchEmbed(embed_dims[s - 2], embed_dims[s - 1]))
        for s in range(1, self.num_stages + 1):
            setattr(self, f"d_convs{s}", nn.ModuleList(_depthwise3x3(embed_dims[s - 1]) for _ in kv_sizes))
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        start = 0
        for s in range(1, self.num_stages + 1):
            dim, depth = embed_dims[s - 1], depths[s - 1]
            blocks = nn.ModuleList(
                LRBlock(dim, num_heads[s - 1], mlp_ratios[s - 1], q_pooled_size, kv_sizes,
                        layer_scale=s in layer_scale_stages, drop_path=rates[start + i])
                for i in range(depth))
            setattr(self, f"block{s}", blocks)
            start += depth

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for s in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{s}")(x)
            pyramid_convs = getattr(self, f"d_convs{s}")
            for block in getattr(self, f"block{s}"):
                x = block(x, pyramid_convs)
            outs.append(x)
        return outs


# ---------------------------------------------------------------------------------------------------------------
# Decode head


class LRHead(nn.Module):
    """Fuses the stride-8/16/32 maps at stride 8 with two LRBlocks (BatchNorm, query grid 32, layer scale on)."""

    def __init__(self, in_channels=(128, 320, 512), channels: int = 384, num_classes: int = 150,
                 num_heads: int = 8, mlp_ratio: float = 4, q_pooled_size: int = 32, dropout: float = 0.1):
        super().__init__()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.squeeze1 = ConvModule(sum(in_channels), channels, 1, norm="bn", act="relu")
        self.squeeze2 = ConvModule(channels + in_channels[-1], channels, 1, norm="bn", act="relu")
        kv_sizes = pyramid_sizes(q_pooled_size)
        for i in (1, 2):
            setattr(self, f"fuse_block{i}", LRBlock(channels, num_heads, mlp_ratio, q_pooled_size, kv_sizes,
                                                    layer_scale=True, norm="batchnorm", layout="head"))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        f2, f3, f4 = features[1:]  # the stride-4 map is not used
        size = f2.shape[-2:]
        # the original also resizes f2 to its own size, which is an exact copy
        f3 = F.interpolate(f3, size=size, mode="bilinear", align_corners=False)
        f4 = F.interpolate(f4, size=size, mode="bilinear", align_corners=False)
        x = self.fuse_block1(self.squeeze1(torch.cat([f2, f3, f4], dim=1)))
        x = self.fuse_block2(self.squeeze2(torch.cat([x, f4], dim=1)))
        return self.conv_seg(self.dropout(x))


# ---------------------------------------------------------------------------------------------------------------
# Segmentor and variants


class LRFormer(Segmentor):
    size_multiple = 32

    def use_shape_derived_pooling(self, enabled: bool = True) -> LRFormer:
        """Compute pooled sizes and pooling matrices from the runtime shape (for dynamic-shape export)."""
        for module in self.modules():
            if isinstance(module, LowResolutionAttention):
                module.dynamic_pooling = enabled
        return self


_VARIANTS = {
    #          embed dims              depths            drop path  decoder channels
    "t": dict(embed_dims=(48, 96, 240, 384), depths=(2, 2, 6, 3), drop_path_rate=0.1, channels=256),
    "s": dict(embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3), drop_path_rate=0.2, channels=384),
    "b": dict(embed_dims=(80, 160, 400, 512), depths=(4, 4, 15, 8), drop_path_rate=0.4, channels=512),
    "l": dict(embed_dims=(96, 192, 480, 640), depths=(4, 6, 18, 8), drop_path_rate=0.6, channels=640),
}
_CONFIG = "configs_local/lrformer/lrformer-{variant}-160k_ade20k.py"


def _builder(variant: str):
    cfg = _VARIANTS[variant]

    def build(num_classes: int = 150, dynamic_pooling: bool = False) -> LRFormer:
        backbone = LRFormerBackbone(cfg["embed_dims"], cfg["depths"], drop_path_rate=cfg["drop_path_rate"])
        head = LRHead(cfg["embed_dims"][1:], cfg["channels"], num_classes)
        return LRFormer(backbone, head).use_shape_derived_pooling(bool(dynamic_pooling))

    return build


def _spec(name: str, variant: str) -> ModelSpec:
    short = 640 if variant == "l" else 512
    return ModelSpec(
        name=name, family="lrformer", variant=variant.upper(), builder=_builder(variant),
        export_notes=("adaptive pools as exact averaging-matrix products (segdeploy.models.pooling)",),
        input_size=(short, short), size_multiple=LRFormer.size_multiple, output_stride=8,
        source_config=_CONFIG.format(variant=variant),
        notes="Pooled attention grids follow the input's aspect ratio, so a static ONNX graph is valid for one "
              "resolution; dynamic_pooling=True computes them from the runtime shape for a dynamic-H/W graph "
              "(TorchScript exporter). Test pipeline: AlignResize keep-ratio to multiples of 32 "
              f"(short side {short}), mode 'whole'.",
        options={"dynamic_pooling": False}, option_choices={"dynamic_pooling": (False, True)})


register(_spec("lrformer_t", "t"))
register(_spec("lrformer_s", "s"))
register(_spec("lrformer_b", "b"))
register(_spec("lrformer_l", "l"))

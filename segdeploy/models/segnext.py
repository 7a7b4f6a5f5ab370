"""SegNeXt: the MSCAN backbone and the LightHamHead decoder (Guo et al., NeurIPS 2022).

Written from the authors' repository (Visual-Attention-Network/SegNeXt, mmseg 0.24 fork); state_dict keys follow it
exactly, so its ADE20K checkpoints load strictly, and so do mmseg 1.x ones (see ``checkpoint_filter``).

The Hamburger's NMF draws random bases on every forward. ``nmf_bases="random"`` reproduces the original (one CPU
``torch.rand`` draw of shape (B, C, R) per forward); ``nmf_bases="fixed"`` uses the draw that ``torch.manual_seed
(nmf_seed)`` would give batch element 0, frozen as a non-persistent buffer and broadcast over the batch, so the
model is deterministic and exports without a RandomUniform node. With ``torch.manual_seed(s)`` before a random-mode
forward, batch element 0 gets exactly the fixed-mode bases of seed ``s``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segdeploy.models.base import Segmentor
from segdeploy.models.layers import ChannelLayerNorm, ConvModule, DropPath, resize
from segdeploy.models.registry import ModelSpec, register

# ---------------------------------------------------------------------------------------------------------------
# Backbone: MSCAN


class StemConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, 2, 1), nn.BatchNorm2d(mid), nn.GELU(),
            nn.Conv2d(mid, out_channels, 3, 2, 1), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class DownsampleConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


def _depthwise(channels: int, kernel: tuple[int, int]) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel, padding=(kernel[0] // 2, kernel[1] // 2), groups=channels)


class MultiScaleConvAttention(nn.Module):
    """MSCA: a 5x5 depth-wise conv plus three strip-conv branches (7, 11, 21), mixed by a 1x1 conv into a gate."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = _depthwise(channels, (5, 5))
        self.conv0_1, self.conv0_2 = _depthwise(channels, (1, 7)), _depthwise(channels, (7, 1))
        self.conv1_1, self.conv1_2 = _depthwise(channels, (1, 11)), _depthwise(channels, (11, 1))
        self.conv2_1, self.conv2_2 = _depthwise(channels, (1, 21)), _depthwise(channels, (21, 1))
        self.conv3 = nn.Conv2d(channels, channels, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        a = self.conv0(u)
        s = a + self.conv0_2(self.conv0_1(a)) + self.conv1_2(self.conv1_1(a)) + self.conv2_2(self.conv2_1(a))
        return self.conv3(s) * u


class SpatialAttention(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.proj_1 = nn.Conv2d(channels, channels, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = MultiScaleConvAttention(channels)
        self.proj_2 = nn.Conv2d(channels, channels, 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        # the inner residual adds the normalised input, as in the original
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(y)))) + y


class _DepthwiseWrapper(nn.Module):
    """Exists only to reproduce the original's ``mlp.dwconv.dwconv`` key."""

    def __init__(self, channels: int):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class ConvMlp(nn.Module):
    def __init__(self, channels: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.dwconv = _DepthwiseWrapper(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class MSCABlock(nn.Module):
    def __init__(self, channels: int, mlp_ratio: float, drop_path: float = 0.0, layer_scale_init: float = 1e-2):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(channels)
        self.attn = SpatialAttention(channels)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.BatchNorm2d(channels)
        self.mlp = ConvMlp(channels, int(channels * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(torch.full((channels,), layer_scale_init))
        self.layer_scale_2 = nn.Parameter(torch.full((channels,), layer_scale_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class MSCAN(nn.Module):
    def __init__(self, embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), mlp_ratios=(8, 8, 4, 4),
                 drop_path_rate: float = 0.1):
        super().__init__()
        self.num_stages = len(depths)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        start = 0
        for i, (dim, depth, ratio) in enumerate(zip(embed_dims, depths, mlp_ratios), start=1):
            embed = StemConv(3, dim) if i == 1 else DownsampleConv(embed_dims[i - 2], dim)
            blocks = nn.ModuleList(MSCABlock(dim, ratio, rates[start + j]) for j in range(depth))
            setattr(self, f"patch_embed{i}", embed)
            setattr(self, f"block{i}", blocks)
            setattr(self, f"norm{i}", ChannelLayerNorm(dim))
            start += depth

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                x = block(x)
            x = getattr(self, f"norm{i}")(x)
            outs.append(x)
        return outs


# ---------------------------------------------------------------------------------------------------------------
# Decode head: LightHamHead with NMF matrix decomposition


def draw_nmf_bases(batch: int, channels: int, rank: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The original's draw: float32 uniform on the CPU, shape (B, C, R), each column L2-normalised over C."""
    bases = torch.rand((batch, channels, rank), generator=generator)
    return F.normalize(bases, dim=1)


class NMF2D(nn.Module):
    """Non-negative matrix factorisation by multiplicative updates, unrolled (7 steps in eval, 6 in training)."""

    def __init__(self, channels: int, rank: int, bases: str = "random", seed: int = 0,
                 eval_steps: int = 7, train_steps: int = 6, eps: float = 1e-6):
        super().__init__()
        if bases not in ("random", "fixed"):
            raise ValueError(f"nmf_bases must be 'random' or 'fixed', not {bases!r}")
        self.channels, self.rank, self.bases_mode, self.seed = channels, rank, bases, seed
        self.eval_steps, self.train_steps, self.eps = eval_steps, train_steps, eps
        if bases == "fixed":
            generator = torch.Generator().manual_seed(seed)
            self.register_buffer("fixed_bases", draw_nmf_bases(1, channels, rank, generator), persistent=False)

    def _initial_bases(self, x: torch.Tensor) -> torch.Tensor:
        if self.bases_mode == "fixed":
            return self.fixed_bases.to(x.dtype).expand(x.shape[0], -1, -1)
        # drawn on the CPU default generator whatever the device, like the original
        return draw_nmf_bases(x.shape[0], self.channels, self.rank).to(x.device, x.dtype)

    def _update_coef(self, x, bases, coef):
        numerator = torch.bmm(x.transpose(1, 2), bases)
        denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))
        return coef * numerator / (denominator + self.eps)

    def _update_bases(self, x, bases, coef):
        numerator = torch.bmm(x, coef)
        denominator = bases.bmm(coef.transpose(1, 2).bmm(coef))
        return bases * numerator / (denominator + self.eps)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        dtype = e.dtype
        b, c, h, w = e.shape
        # float32 whatever the model's precision: the products overflow fp16 and the 1e-6 epsilon underflows
        x = e.float().reshape(b, c, h * w)
        bases = self._initial_bases(x)
        coef = F.softmax(torch.bmm(x.transpose(1, 2), bases), dim=-1)
        for _ in range(self.train_steps if self.training else self.eval_steps):
            coef = self._update_coef(x, bases, coef)
            bases = self._update_bases(x, bases, coef)
        coef = self._update_coef(x, bases, coef)
        return torch.bmm(bases, coef.transpose(1, 2)).reshape(b, c, h, w).to(dtype)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, bases={self.bases_mode!r}, seed={self.seed}"


class Hamburger(nn.Module):
    def __init__(self, channels: int, nmf: NMF2D):
        super().__init__()
        self.ham_in = ConvModule(channels, channels, 1)
        self.ham = nmf
        self.ham_out = ConvModule(channels, channels, 1, norm="gn32")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        e = self.ham_out(self.ham(F.relu(self.ham_in(z))))
        return F.relu(z + e)


class LightHamHead(nn.Module):
    def __init__(self, in_channels=(64, 160, 256), ham_channels: int = 256, channels: int = 256,
                 num_classes: int = 150, nmf_rank: int = 16, nmf_bases: str = "random", nmf_seed: int = 0,
                 dropout: float = 0.1, align_corners: bool = False):
        super().__init__()
        self.align_corners = align_corners
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.squeeze = ConvModule(sum(in_channels), ham_channels, 1, norm="gn32", act="relu")
        self.hamburger = Hamburger(ham_channels, NMF2D(ham_channels, nmf_rank, nmf_bases, nmf_seed))
        self.align = ConvModule(ham_channels, channels, 1, norm="gn32", act="relu")

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        f1, f2, f3 = features[1:]  # the stride-4 map is not used
        size = f1.shape[2:]
        x = torch.cat([f1, resize(f2, size, self.align_corners), resize(f3, size, self.align_corners)], dim=1)
        x = self.align(self.hamburger(self.squeeze(x)))
        return self.conv_seg(self.dropout(x))


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints and variants


def checkpoint_filter(state_dict: dict) -> dict:
    """Accept mmseg 1.x checkpoints, which store the MLP depth-wise conv without the ``dwconv`` wrapper."""
    out = {}
    for key, value in state_dict.items():
        if ".mlp.dwconv." in key and ".mlp.dwconv.dwconv." not in key:
            key = key.replace(".mlp.dwconv.", ".mlp.dwconv.dwconv.")
        out[key] = value
    return out


def to_mmseg1x_layout(state_dict: dict) -> dict:
    """The inverse of :func:`checkpoint_filter` (used to test that 1.x checkpoints load)."""
    return {k.replace(".mlp.dwconv.dwconv.", ".mlp.dwconv."): v for k, v in state_dict.items()}


_VARIANTS = {
    #             embed_dims           depths          drop_path  head channels  NMF rank
    "t": dict(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), drop_path_rate=0.1, channels=256, rank=16),
    "s": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2), drop_path_rate=0.1, channels=256, rank=16),
    "b": dict(embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3), drop_path_rate=0.1, channels=512, rank=64),
    "l": dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3), drop_path_rate=0.3, channels=1024, rank=64),
}
_CONFIG = "local_configs/segnext/{size}/segnext.{size}.512x512.ade.160k.py"
_SIZE_NAMES = {"t": "tiny", "s": "small", "b": "base", "l": "large"}


class SegNeXt(Segmentor):
    # Every stride-2 conv rounds up, so the network runs at any size, but only multiples of 32 keep the four stage
    # sizes exact; export, the resize policy and this check all use 32 (the spec reads it from here).
    size_multiple = 32


def _builder(variant: str):
    cfg = _VARIANTS[variant]

    def build(num_classes: int = 150, nmf_bases: str = "random", nmf_seed: int = 0,
              nmf_rank: int | None = None) -> SegNeXt:
        backbone = MSCAN(cfg["embed_dims"], cfg["depths"], (8, 8, 4, 4), cfg["drop_path_rate"])
        head = LightHamHead(cfg["embed_dims"][1:], cfg["channels"], cfg["channels"], num_classes,
                            nmf_rank or cfg["rank"], nmf_bases, nmf_seed)
        return SegNeXt(backbone, head)

    return build


def _spec(name: str, variant: str) -> ModelSpec:
    return ModelSpec(
        name=name, family="segnext", variant=variant.upper(), builder=_builder(variant),
        export_notes=("NMF in float32 whatever the model dtype", "GroupNorm via InstanceNormalization"),
        size_multiple=SegNeXt.size_multiple, output_stride=8,
        source_config=_CONFIG.format(size=_SIZE_NAMES[variant]),
        notes="NMF rank R is not stored in checkpoints: original-repo B/L use 64 (default), mmseg 1.x B/L configs "
              "use 16 (pass nmf_rank=16 with those checkpoints).",
        checkpoint_filter=checkpoint_filter,
        options={"nmf_bases": "random", "nmf_seed": 0, "nmf_rank": None},
        option_choices={"nmf_bases": ("random", "fixed"), "nmf_rank": (None, 8, 16, 32, 64),
                        "nmf_seed": range(0, 2**31)})


register(_spec("segnext_t", "t"))
register(_spec("segnext_s", "s"))
register(_spec("segnext_b", "b"))
register(_spec("segnext_l", "l"))

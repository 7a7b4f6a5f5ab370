"""CGRSeg: EfficientFormerV2 backbone and the context-guided spatial feature reconstruction head (Ni et al., ECCV 2024).

Written from the authors' repository (nizhenliang/CGRSeg, mmseg 0.27 fork): ``cgr_head.py``, ``rcm.py`` and
``dpg_head.py``; state_dict keys follow it exactly, so its ADE20K checkpoints load strictly.

Inputs must have H and W divisible by 32 (the backbone halves its stride-16 grid inside attention). Multiples of 64
keep the head's pyramid pools uniform; other multiples of 32 give overlapping adaptive bins, reproduced exactly.

Export: ``dynamic_shapes=True`` (builder option, or :meth:`CGRSeg.set_dynamic_shapes`) makes every size-dependent
op (attention-bias resize, pyramid pools) compute its sizes from the runtime shape, for ONNX graphs with dynamic
H/W. The default keeps them as constants of the traced size, which a static graph folds away.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segdeploy.models.base import Segmentor
from segdeploy.models.efficientformer_v2 import EfficientFormerV2, efficientformer_v2
from segdeploy.models.layers import ConvModule, exporting, resize
from segdeploy.models.pooling import adaptive_avg_pool2d, adaptive_avg_pool2d_from_shape
from segdeploy.models.registry import ModelSpec, register

# ---------------------------------------------------------------------------------------------------------------
# Rectangular self-calibration module (rcm.py)


class RectangularCalibrationAttention(nn.Module):
    """RCA: a local 3x3 depth-wise term gated by strip convs over the sum of the row and column means."""

    def __init__(self, dim: int, band_kernel_size: int = 11, square_kernel_size: int = 3, ratio: int = 1):
        super().__init__()
        groups = dim // ratio
        self.dwconv_hw = nn.Conv2d(dim, dim, square_kernel_size, padding=square_kernel_size // 2, groups=dim)
        self.excite = nn.Sequential(
            nn.Conv2d(dim, groups, (1, band_kernel_size), padding=(0, band_kernel_size // 2), groups=groups),
            nn.BatchNorm2d(groups),
            nn.ReLU(),
            nn.Conv2d(groups, dim, (band_kernel_size, 1), padding=(band_kernel_size // 2, 0), groups=groups),
            nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.dwconv_hw(x)
        # the original's AdaptiveAvgPool2d((None, 1)) and ((1, None)) are exact means over one axis
        context = x.mean(dim=3, keepdim=True) + x.mean(dim=2, keepdim=True)
        return self.excite(context) * local


class ConvMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RCM(nn.Module):
    """x + gamma * Mlp(BN(RCA(x)))."""

    def __init__(self, dim: int, band_kernel_size: int, square_kernel_size: int = 3, ratio: int = 1,
                 mlp_ratio: float = 2.0, layer_scale_init: float = 1e-6):
        super().__init__()
        self.token_mixer = RectangularCalibrationAttention(dim, band_kernel_size, square_kernel_size, ratio)
        self.norm = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(mlp_ratio * dim))
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.token_mixer(x)))
        return x + y * self.gamma.reshape(1, -1, 1, 1)


class PyramidContext(nn.Module):
    """The RCMs applied to the pooled pyramid (the original's ``trans``)."""

    def __init__(self, dim: int, depth: int, band_kernel_size: int, square_kernel_size: int = 3, ratio: int = 1,
                 mlp_ratio: float = 2.0):
        super().__init__()
        self.transformer_blocks = nn.ModuleList(
            RCM(dim, band_kernel_size, square_kernel_size, ratio, mlp_ratio) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.transformer_blocks:
            x = block(x)
        return x


# ---------------------------------------------------------------------------------------------------------------
# Spatial reconstruction and dynamic prototype guidance (cgr_head.py, dpg_head.py)


class FuseBlockMulti(nn.Module):
    """Local features modulated by the hard-sigmoid of the pooled global semantics, upsampled to the local size."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.fuse1 = ConvModule(in_channels, out_channels, 1, norm="bn")
        self.fuse2 = ConvModule(in_channels, out_channels, 1, norm="bn")

    def forward(self, local: torch.Tensor, semantics: torch.Tensor) -> torch.Tensor:
        gate = F.hardsigmoid(self.fuse2(semantics))  # relu6(x + 3) / 6, applied before the resize as in the original
        return self.fuse1(local) * resize(gate, local.shape[2:])


class DPGHead(nn.Module):
    """Dynamic prototype guidance: attention-pool the class prototypes into one channel gate."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_mask = nn.Conv2d(channels, 1, 1)
        self.channel_mul_conv = nn.Sequential(
            nn.Conv2d(channels, channels, 1), nn.LayerNorm([channels, 1, 1]), nn.ReLU(),
            nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        # prototypes: B x D x K x 1; weights over the K classes
        weights = self.conv_mask(prototypes).flatten(1).softmax(dim=1)  # B x K
        pooled = torch.matmul(prototypes.flatten(2), weights.unsqueeze(2)).unsqueeze(3)  # B x D x 1 x 1
        return x * torch.sigmoid(self.channel_mul_conv(pooled))


def gather_class_prototypes(features: torch.Tensor, class_logits: torch.Tensor) -> torch.Tensor:
    """SpatialGatherModule (scale 1): per class, the softmax-over-pixels mean of ``features``; B x D x K x 1."""
    probs = class_logits.flatten(2).softmax(dim=2)  # B x K x HW
    context = torch.matmul(probs, features.flatten(2).transpose(1, 2))  # B x K x D
    return context.transpose(1, 2).unsqueeze(3)


class CGRSegHead(nn.Module):
    def __init__(self, in_channels=(48, 120, 224), channels: int = 128, num_classes: int = 150,
                 next_repeat: int = 5, neck_size: int = 11, dw_size: int = 11, square_kernel_size: int = 3,
                 ratio: int = 1, mlp_ratio: float = 2.0, dropout: float = 0.1, dynamic_shapes: bool = False):
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.dynamic_shapes = dynamic_shapes
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_fuse = ConvModule(channels, channels, 1, groups=channels, norm="bn", act="relu")
        self.trans = PyramidContext(sum(in_channels), next_repeat, neck_size, square_kernel_size, ratio, mlp_ratio)
        self.SIM = nn.ModuleList(FuseBlockMulti(c, channels) for c in in_channels)
        self.meta = nn.ModuleList(RCM(c, dw_size, square_kernel_size, ratio, mlp_ratio) for c in in_channels)
        self.conv = nn.ModuleList(nn.Conv2d(channels, c, 1) for c in in_channels[:-1])
        self.lgc = DPGHead(channels)

    def pyramid_pool(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Average-pool every map to ceil(h/2) x ceil(w/2) of the coarsest one (stride 64) and concatenate."""
        h, w = features[-1].shape[-2:]
        size = ((h - 1) // 2 + 1, (w - 1) // 2 + 1)
        if self.dynamic_shapes and exporting():
            return torch.cat([adaptive_avg_pool2d_from_shape(f, size) for f in features], dim=1)
        return torch.cat([adaptive_avg_pool2d(f, size) for f in features], dim=1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(x))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        inputs = features[1:]  # in_index [1, 2, 3]: the stride-4 map is not used
        semantics = self.trans(self.pyramid_pool(inputs)).split(self.in_channels, dim=1)
        reconstructed = None
        for i in reversed(range(len(inputs))):  # coarse to fine
            local = inputs[i]
            if reconstructed is not None:
                local = local + self.conv[i](resize(reconstructed, local.shape[2:]))
            reconstructed = self.SIM[i](self.meta[i](local), semantics[i])
        x = reconstructed
        coarse = self.classify(self.linear_fuse(x))
        prototypes = gather_class_prototypes(x, coarse)
        return self.classify(self.lgc(x, prototypes) + x)


# ---------------------------------------------------------------------------------------------------------------
# Segmentor and variants


class CGRSeg(Segmentor):
    size_multiple = 32

    def set_dynamic_shapes(self, enabled: bool = True) -> CGRSeg:
        """Export switch: size-dependent ops read their sizes from the runtime shape (dynamic H/W ONNX graphs)
        instead of folding them as constants of the traced size. Eager outputs are identical either way."""
        self.backbone.set_dynamic_shapes(enabled)
        self.decode_head.dynamic_shapes = enabled
        return self


_VARIANTS = {
    #     backbone  drop_path  head channels  next_repeat  strip kernel (neck_size = dw_size)
    "t": dict(arch="s1", drop_path_rate=0.0, channels=128, next_repeat=5, kernel=11),
    # The released B config uses next_repeat 6 (19.1M params); the paper's 18.1M corresponds to 5.
    "b": dict(arch="s2", drop_path_rate=0.02, channels=256, next_repeat=6, kernel=11),
    "l": dict(arch="l", drop_path_rate=0.1, channels=256, next_repeat=5, kernel=9),
}
_CONFIG = "local_configs/cgrseg/cgrseg-{v}_ade20k_160k.py"


def _builder(variant: str):
    cfg = _VARIANTS[variant]

    def build(num_classes: int = 150, dynamic_shapes: bool = False) -> CGRSeg:
        backbone: EfficientFormerV2 = efficientformer_v2(cfg["arch"], drop_path_rate=cfg["drop_path_rate"],
                                                         dynamic_shapes=dynamic_shapes)
        head = CGRSegHead(backbone.widths[1:], cfg["channels"], num_classes, cfg["next_repeat"],
                          neck_size=cfg["kernel"], dw_size=cfg["kernel"], dynamic_shapes=dynamic_shapes)
        return CGRSeg(backbone, head)

    return build


def _spec(name: str, variant: str) -> ModelSpec:
    return ModelSpec(
        name=name, family="cgrseg", variant=variant.upper(), builder=_builder(variant),
        export_notes=("RCA pools as means over one axis (ReduceMean)",
                      "pyramid pools as exact averaging matrices (segdeploy.models.pooling)",
                      "EfficientFormerV2 stride-2 kernel-1 AvgPool as a strided slice"),
        size_multiple=CGRSeg.size_multiple, output_stride=8, classifier_key="decode_head.conv_seg.weight",
        source_config=_CONFIG.format(v=variant),
        notes=("Follows the released config and checkpoint: next_repeat 6 gives 19.1M params where the paper "
               "reports 18.1M (next_repeat 5). " if variant == "b" else "")
        + "H and W must be multiples of 32 (64 keeps the pyramid pools uniform). Option dynamic_shapes=True "
          "is for ONNX export with dynamic H/W.",
        options={"dynamic_shapes": False}, option_choices={"dynamic_shapes": (False, True)})


register(_spec("cgrseg_t", "t"))
register(_spec("cgrseg_b", "b"))
register(_spec("cgrseg_l", "l"))

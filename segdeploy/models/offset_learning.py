"""OffSeg's offset-learning head (``OffsetLearning``): learned class tokens and pixel features shift each other by
attention, then every pixel is scored per class. Eager mode computes it as the authors' code does; exports take the
channels-first form (no transposes of the head's pixel-sized tensors), whose softmax and LayerNorm over the classes
are parameter-free modules that every INT8 flavour keeps in float (OffSeg's ``int8_float_modules``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segdeploy.models.layers import channel_sum, exporting


class ClassSoftmax(nn.Module):
    """Softmax over the channels of (B, K, H, W) scores, written out: ONNX Runtime runs a Softmax over a non-last
    axis through two transposes, and its ReduceSum over channels is slower than the 1x1 convolution of
    :func:`channel_sum`. Parameter-free: a module so that its nodes carry a name the INT8 flavours keep in float
    (``int8_float_modules``)."""

    def forward(self, scores: torch.Tensor, classes: int) -> torch.Tensor:
        weights = (scores - scores.amax(dim=1, keepdim=True)).exp()
        return weights / channel_sum(weights, classes)


class ClassLayerNorm(nn.Module):
    """``nn.LayerNorm`` over the channels of (B, K, H, W) logits with the head's ``mask_norm`` weights (passed in, so
    that checkpoints keep their keys); the means are 1x1 convolutions, for the reason given in
    :class:`ClassSoftmax`. Parameter-free, and a module for the same reason."""

    def forward(self, logits: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        classes = norm.weight.shape[0]
        centred = logits - channel_sum(logits, classes) / classes
        scaled = centred / (channel_sum(centred * centred, classes) / classes + norm.eps).sqrt()
        return scaled * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)


class OffsetLearning(nn.Module):
    """Learned class tokens and pixel features shift each other by attention, then score each pixel per class.

    The class branch attends over all pixels (softmax over H*W: a global, resolution-dependent pooling), the pixel
    branch over the classes; logits are the LayerNorm (over classes) of the shifted pixel-class scores.
    """

    # How the head is computed: the original's pixel rows (False) or channels-first (True, see
    # forward_channels_first). None picks channels-first while exporting and the original's form in eager mode; both
    # give the same values up to float rounding.
    channels_first: bool | None = None

    def __init__(self, channels: int = 256, num_classes: int = 150):
        super().__init__()
        self.cls_repr = nn.Parameter(torch.zeros(1, num_classes, channels))
        self.mask_norm = nn.LayerNorm(num_classes)
        self.cls_offset_proj = nn.Linear(channels, channels, bias=False)
        self.feat_offset_proj = nn.Linear(channels, channels, bias=False)
        self.class_softmax, self.class_norm = ClassSoftmax(), ClassLayerNorm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if exporting() if self.channels_first is None else self.channels_first:
            return self.forward_channels_first(x)
        feats = x.flatten(2).transpose(1, 2)  # B, M, D (token = y*w + x)
        classes = self.cls_repr  # 1, K, D, broadcast over the batch
        scores = feats @ classes.transpose(1, 2)  # B, M, K
        # both softmaxes over the last (contiguous) axis: ONNX Runtime transposes internally for any other axis
        classes = classes + self.cls_offset_proj(scores.transpose(1, 2).softmax(dim=-1) @ feats)
        feats = feats + self.feat_offset_proj(scores.softmax(dim=-1) @ self.cls_repr)
        logits = self.mask_norm(feats @ classes.transpose(1, 2))  # B, M, K
        return logits.transpose(1, 2).reshape(x.shape[0], -1, x.shape[2], x.shape[3])

    def forward_channels_first(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with every pixel-sized tensor channels-first, for export.

        The original's form transposes the (B, D, H, W) map to pixel rows and its (B, H*W, K) logits back: at
        512x512 those transposes of the head's largest tensors were nearly half of this module's time on OpenVINO.
        Here the two products with the class tokens are 1x1 convolutions of the map (the pixel branch's projection
        folded into its weights, which the exporter folds to a constant), so they stay weight layers that the INT8
        flavours quantize; the softmax over the classes and the LayerNorm run over axis 1, and the one remaining
        transpose feeds a MatMul, which both runtimes fold into it.
        """
        tokens = self.cls_repr  # 1, K, D
        num_classes, channels = tokens.shape[1:]
        scores = F.conv2d(x, tokens.reshape(num_classes, channels, 1, 1))  # B, K, H, W
        flat = x.flatten(2)  # B, D, M
        classes = tokens + self.cls_offset_proj(scores.flatten(2).softmax(dim=-1) @ flat.transpose(1, 2))  # B, K, D
        shift = (self.feat_offset_proj.weight @ tokens[0].t()).reshape(channels, num_classes, 1, 1)
        feats = x + F.conv2d(self.class_softmax(scores, num_classes), shift)  # B, D, H, W
        logits = (classes @ feats.flatten(2)).reshape(x.shape[0], -1, x.shape[2], x.shape[3])  # B, K, H, W
        return self.class_norm(logits, self.mask_norm)

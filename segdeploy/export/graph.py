"""Pre- and post-processing that can live inside the exported graph.

``DeployGraph`` wraps a segmentor so the artifact's input and output are what a deployment wants:

* ``preprocess=True``: the input is a uint8 (N, H, W, 3) BGR image batch (OpenCV's layout), and the graph does the
  channel reorder, the NCHW transpose and ``(x - mean) / std`` with the model spec's constants. The resize stays
  outside: its policy depends on the original image size and is recorded in the artifact's metadata instead.
* ``outputs="mask"``: the decode head's stride-8 logits are bilinearly resized to the input size and argmax'ed, and
  the label map is emitted as uint8 (N, H, W) when the classes fit (MMDeploy emits int64 (N, 1, H, W); a quarter of
  the bytes to copy back matters when the output is the whole image).

The same module runs eagerly as the PyTorch reference in validation, so both sides compute the same thing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segdeploy.errors import SegdeployError

OUTPUT_KINDS = ("logits", "mask")


def mask_dtype(num_classes: int) -> torch.dtype:
    return torch.uint8 if num_classes <= 255 else torch.int64


class NormalizeImage(nn.Module):
    """uint8 (N, H, W, 3) BGR -> float32 (N, 3, H, W) normalised, exactly as segdeploy.preprocess.prepare does."""

    def __init__(self, mean, std, channel_order: str = "RGB"):
        super().__init__()
        if channel_order not in ("RGB", "BGR"):
            raise SegdeployError(f"channel order must be RGB or BGR, not {channel_order!r}")
        self.channel_order = channel_order
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float()
        if self.channel_order == "RGB":
            x = x.flip(1)  # OpenCV gives BGR
        # subtract then divide (not a folded scale/shift) so the graph matches the NumPy preprocessing bit for bit
        return (x - self.mean) / self.std


class LogitsToMask(nn.Module):
    """(N, K, h, w) logits -> (N, H, W) labels at the input size: bilinear resize, then argmax over classes."""

    def __init__(self, num_classes: int, align_corners: bool = False):
        super().__init__()
        self.dtype = mask_dtype(num_classes)
        self.align_corners = align_corners

    def forward(self, logits: torch.Tensor, size) -> torch.Tensor:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)
        return logits.argmax(dim=1).to(self.dtype)


class DeployGraph(nn.Module):
    def __init__(self, model: nn.Module, outputs: str = "logits", preprocess: bool = False):
        super().__init__()
        if outputs not in OUTPUT_KINDS:
            raise SegdeployError(f"--outputs must be one of {', '.join(OUTPUT_KINDS)}, not {outputs!r}")
        spec = model.spec
        self.model = model
        self.output_kind = outputs
        self.normalize = NormalizeImage(spec.mean, spec.std, spec.channel_order) if preprocess else None
        self.to_mask = LogitsToMask(model.num_classes, spec.align_corners) if outputs == "mask" else None

    @property
    def input_name(self) -> str:
        return "image" if self.normalize is not None else "input"

    @property
    def output_name(self) -> str:
        return self.output_kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize is not None:
            x = self.normalize(x)
        logits = self.model(x)
        if self.to_mask is None:
            return logits
        return self.to_mask(logits, x.shape[-2:])

    def example_input(self, batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
        """A deterministic input of the graph's layout and dtype."""
        generator = torch.Generator().manual_seed(seed)
        if self.normalize is not None:
            return torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8, generator=generator)
        return torch.randn((batch, 3, height, width), generator=generator)

    def input_layout(self, batch, height, width) -> dict:
        if self.normalize is not None:
            return {"name": self.input_name, "shape": [batch, height, width, 3], "dtype": "uint8",
                    "layout": "NHWC", "channel_order": "BGR"}
        return {"name": self.input_name, "shape": [batch, 3, height, width], "dtype": "float32", "layout": "NCHW",
                "channel_order": self.model.spec.channel_order}

    def output_layout(self, batch, height, width) -> dict:
        spec = self.model.spec
        if self.to_mask is not None:
            return {"name": self.output_name, "shape": [batch, height, width],
                    "dtype": str(self.to_mask.dtype).removeprefix("torch."),
                    "semantics": "class index per input pixel: logits bilinearly resized to the input size "
                                 f"(align_corners={spec.align_corners}), then argmax over classes"}
        stride = spec.output_stride
        return {"name": self.output_name,
                "shape": [batch, self.model.num_classes, _strided(height, stride), _strided(width, stride)],
                "dtype": "float32",
                "semantics": f"class logits at 1/{stride} of the input size, before the resize to the input size; "
                             f"mask = argmax over classes after a bilinear resize (align_corners="
                             f"{spec.align_corners})"}


def _strided(size, stride):
    return f"{size}/{stride}" if isinstance(size, str) else -(-size // stride)

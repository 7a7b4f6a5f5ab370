"""The segmentor shell every family shares: ``decode_head(backbone(x))``.

State-dict keys start with ``backbone.`` / ``decode_head.`` as in mmsegmentation, so the authors' checkpoints load
as they are. ``forward`` returns the decode head's logits before the final resize to the input size.
"""
from __future__ import annotations

import torch
from torch import nn

from segdeploy.errors import InputError
from segdeploy.models.layers import exporting


def _nearest_multiple(value: int, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


class Segmentor(nn.Module):
    size_multiple: int = 1  # families that need aligned inputs override this

    def __init__(self, backbone: nn.Module, decode_head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head

    def check_input(self, x: torch.Tensor) -> None:
        """Raise InputError for inputs this family cannot take; a no-op while tracing for export."""
        if exporting():
            return
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"expected an input of shape (N, 3, H, W), got {tuple(x.shape)}")
        h, w = int(x.shape[-2]), int(x.shape[-1])
        m = self.size_multiple
        if m > 1 and (h % m or w % m):
            raise InputError(
                f"input {h}x{w} is not a multiple of {m}; nearest valid size is "
                f"{_nearest_multiple(h, m)}x{_nearest_multiple(w, m)}")

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        return list(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.forward_features(x))

"""CARAFE content-aware reassembly (Wang et al., ICCV 2019) as ordinary tensor operations.

mmcv's ``carafe`` is a CUDA-only custom op (``mmcv::MMCVCARAFE`` in ONNX). This module computes the same thing with
Pad / Slice / Gather / MatMul / Transpose / Mul / Add only, so it runs on any device and exports at any opset.

Semantics (mmcv 2.1 ``CARAFEForward``): for features (N, C, h, w) and masks (N, G*k*k, h*s, w*s),

    out[n, c, y, x] = sum_{ky, kx} masks[n, (g*k + ky)*k + kx, y, x] * feat[n, c, y//s + ky - r, x//s + kx - r]

with r = (k - 1) // 2 and g = c // (C / G). Neighbours outside the map count as zero (the kernel skips them and
does not renormalise the mask), every output pixel has its own mask, and the source pixel is the nearest-lower one
(floor division, no half-pixel shift). The op never normalises the masks itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from segdeploy.models.layers import exporting


def _check(features: torch.Tensor, masks: torch.Tensor, kernel_size: int, scale_factor: int, groups: int) -> None:
    if exporting():
        return
    if kernel_size < 1 or kernel_size % 2 == 0 or scale_factor < 1 or groups < 1:
        raise ValueError(f"carafe needs an odd kernel_size and positive scale_factor and groups, got "
                         f"k={kernel_size}, s={scale_factor}, groups={groups}")
    n, c, h, w = features.shape
    expected = (n, groups * kernel_size ** 2, h * scale_factor, w * scale_factor)
    if c % groups or tuple(masks.shape) != expected:
        raise ValueError(f"carafe: features {tuple(features.shape)} with k={kernel_size}, s={scale_factor}, "
                         f"groups={groups} need masks of shape {expected} and channels divisible by groups; "
                         f"got masks {tuple(masks.shape)}")


def _shifted_windows(padded: torch.Tensor, kernel_size: int, dims: tuple[int, int]) -> list[torch.Tensor]:
    """The k*k shifted views (row-major taps) of a map zero-padded by r on ``dims``; static slice bounds only."""
    r2 = kernel_size - 1
    windows = []
    for ky in range(kernel_size):
        rows = slice(ky, (ky - r2) or None)  # ends are counted from the far side: valid for any runtime size
        for kx in range(kernel_size):
            cols = slice(kx, (kx - r2) or None)
            index = [slice(None)] * padded.dim()
            index[dims[0]], index[dims[1]] = rows, cols
            windows.append(padded[tuple(index)])
    return windows


def _carafe_same_size(features: torch.Tensor, masks: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """s = 1: each output pixel has its own k*k weights on its own patch; nothing is shared between pixels, so a
    multiply-accumulate over the k*k shifted maps (mmcv's order: ky outer, kx inner) is the cheapest form."""
    r = (kernel_size - 1) // 2
    padded = F.pad(features, (r, r, r, r))
    out = None
    for tap, window in enumerate(_shifted_windows(padded, kernel_size, (2, 3))):
        term = masks[:, tap:tap + 1] * window
        out = term if out is None else out + term
    return out


def window_rows(features: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Row index of every pixel's k*k window (row-major taps) in the zero-padded channels-last map flattened to
    (N*(h+2r)*(w+2r), C): int64 (N, h, w, k*k).

    Computed with tensor ops from the input itself (cumulative sums of ones), so an exported graph takes the sizes
    from the runtime shape; a static graph folds it to a constant.
    """
    r = (kernel_size - 1) // 2
    ones = torch.ones_like(features[:, :1], dtype=torch.long)  # N, 1, h, w
    image = ones.cumsum(0)[:, :, :1, :1] - 1  # N, 1, 1, 1
    y, x = ones[:1].cumsum(2) - 1, ones[:1].cumsum(3) - 1  # 1, 1, h, w
    padded_h = ones[:1, :, :, :1].sum(2, keepdim=True) + 2 * r
    padded_w = ones[:1, :, :1].sum(3, keepdim=True) + 2 * r
    start = ((image * padded_h + y) * padded_w + x).permute(0, 2, 3, 1)  # N, h, w, 1: the window's top-left row
    taps = torch.arange(kernel_size, device=features.device)
    offsets = (taps.view(-1, 1) * padded_w.view(1, 1) + taps.view(1, -1)).flatten()  # k*k
    return start + offsets


def image_to_subpixels(image: torch.Tensor, scale: int) -> torch.Tensor:
    """(N, C, h*s, w*s) -> (N, h, w, s*s, C): element [n, y, x, i*s + j, c] is image[n, c, s*y + i, s*x + j].

    Written as s*s strided slices and one transpose: ONNX Runtime ran the equivalent 6-D transpose (split both
    axes, permute) at half the speed."""
    parts = [image[:, :, i::scale, j::scale] for i in range(scale) for j in range(scale)]
    return torch.stack(parts, 1).permute(0, 3, 4, 1, 2)


def carafe_weighted(features: torch.Tensor, weights: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """CARAFE upsampling (groups 1) with the masks already in the sub-pixel layout: features (N, C, h, w), weights
    (N, h, w, s*s, k*k) as :func:`image_to_subpixels` lays out the (N, k*k, h*s, w*s) masks -> (N, h, w, s*s, C).

    The s*s output pixels above one source pixel all read the same k*k patch, so per source pixel the op is one
    small matrix product (s*s, k*k) @ (k*k, C). The patches are gathered channels-last (one Gather of whole channel
    rows; ONNX Runtime's Concat of k*k shifted slices along the channel axis was 2-3x slower) and MatMul does the
    contraction: each value is touched a few times instead of k*k passes over an upsampled map.
    """
    r = (kernel_size - 1) // 2
    padded = F.pad(features.permute(0, 2, 3, 1), (0, 0, r, r, r, r))  # N, h+2r, w+2r, C
    rows = window_rows(features, kernel_size)  # N, h, w, k*k
    patches = padded.flatten(0, 2).index_select(0, rows.flatten()).view(*rows.shape, -1)  # N, h, w, k*k, C
    return weights @ patches


def carafe_subpixels(features: torch.Tensor, masks: torch.Tensor, kernel_size: int, scale: int) -> torch.Tensor:
    """CARAFE upsampling (groups 1) before the sub-pixels are interleaved: (N, h, w, s, s, C), where element
    [n, y, x, i, j, c] is output pixel (s*y + i, s*x + j) of channel c. Consumers that gather pixels (the FreqFusion
    sampler's export form) read this layout directly and skip the interleaving."""
    return carafe_weighted(features, image_to_subpixels(masks, scale), kernel_size).unflatten(3, (scale, scale))


def subpixels_to_image(subpixels: torch.Tensor) -> torch.Tensor:
    """(N, h, w, s, s, C) -> (N, C, h*s, w*s)."""
    return subpixels.permute(0, 5, 1, 3, 2, 4).flatten(4, 5).flatten(2, 3)


def carafe(features: torch.Tensor, masks: torch.Tensor, kernel_size: int, scale_factor: int = 1,
           groups: int = 1) -> torch.Tensor:
    """mmcv ``carafe(features, masks, kernel_size, group_size=groups, scale_factor)`` in plain PyTorch.

    features (N, C, h, w), masks (N, groups*k*k, h*s, w*s) -> (N, C, h*s, w*s). Float accumulation as in mmcv;
    results agree with its kernel up to float32 summation order.
    """
    _check(features, masks, kernel_size, scale_factor, groups)
    if groups > 1:
        # channel groups are independent CARAFEs with their own masks: fold them into the batch axis
        out = carafe(features.unflatten(1, (groups, -1)).flatten(0, 1),
                     masks.unflatten(1, (groups, -1)).flatten(0, 1), kernel_size, scale_factor)
        return out.unflatten(0, (-1, groups)).flatten(1, 2)
    if scale_factor == 1:
        return _carafe_same_size(features, masks, kernel_size)
    return subpixels_to_image(carafe_subpixels(features, masks, kernel_size, scale_factor))

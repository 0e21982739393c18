"""Choosing the focus plane: from a pixel or from a mask (median disparity inside it, as in the paper)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_disparity, check_range, check_same_spatial

__all__ = ["focus_from_point", "focus_from_mask"]


def focus_from_point(
    disparity: torch.Tensor, x: float, y: float, *, normalized: bool = True, radius: int = 2
) -> torch.Tensor:
    """Focus disparity at a point: the median over a small window, robust to a pixel on an edge.

    Args:
        disparity: (B, 1, H, W) in [0, 1].
        x, y: the point; in [0, 1] of the width/height when ``normalized`` (resolution independent: what the
            click-to-focus node stores), else pixel coordinates (0 = left/top pixel centre).
        radius: half-size of the window in pixels (0 = the single pixel), in [0, 64].

    Returns:
        (B,) focus values in [0, 1], one per image.
    """
    check_disparity(disparity)
    h, w = disparity.shape[-2:]
    radius = int(check_range(radius, "radius", 0, 64))
    if normalized:
        x = check_range(x, "x", 0.0, 1.0)
        y = check_range(y, "y", 0.0, 1.0)
        col = min(int(x * w), w - 1)
        row = min(int(y * h), h - 1)
    else:
        col = int(round(check_range(x, "x", 0, w - 1)))
        row = int(round(check_range(y, "y", 0, h - 1)))
    window = disparity[:, 0, max(row - radius, 0) : row + radius + 1, max(col - radius, 0) : col + radius + 1]
    return window.reshape(disparity.shape[0], -1).median(dim=1).values.clamp(0, 1).to(torch.float32)


def focus_from_mask(disparity: torch.Tensor, mask: torch.Tensor, *, threshold: float = 0.5) -> torch.Tensor:
    """Focus disparity from a subject mask: the median disparity of the pixels where ``mask > threshold``.

    Args:
        disparity: (B, 1, H, W) in [0, 1].
        mask: (B or 1, 1, h, w) in [0, 1], e.g. from a segmentation node; resized (nearest) to the
            disparity's size when it differs.
        threshold: mask values above it count as inside, in [0, 1).

    Returns:
        (B,) focus values in [0, 1].
    """
    check_disparity(disparity)
    check_disparity(mask, "mask")
    threshold = check_range(threshold, "threshold", 0.0, 0.999)
    if mask.shape[-2:] != disparity.shape[-2:]:
        mask = F.interpolate(mask.to(torch.float32), size=disparity.shape[-2:], mode="nearest")
    check_same_spatial(disparity, mask, "disparity", "mask")
    batch = max(disparity.shape[0], mask.shape[0])
    disparity = disparity.expand(batch, -1, -1, -1)
    mask = mask.expand(batch, -1, -1, -1).to(disparity.device)
    out = torch.empty(batch, dtype=torch.float32)
    for i in range(batch):
        inside = disparity[i, 0][mask[i, 0] > threshold]
        if inside.numel() == 0:
            raise ValueError(
                f"mask {i} selects no pixel (all values <= {threshold:g}); draw the subject in the mask or lower "
                f"the threshold"
            )
        out[i] = inside.median().clamp(0, 1)
    return out

"""The official dilated defocus: a signed max of ``int(defocus)`` over every source whose blur disk reaches.

``dilated[t] = max(int(d[t]), max{ int(d[p]) : |p - t| <= |d[p]| })`` with ``int`` truncating toward 0 and the
distance ``sqrt(dx^2 + dy^2)`` computed in float32 like the official kernel (SPEC section 2). The reach is
always a circle of radius ``|d|`` (also for polygon, mask and anamorphic apertures, as upstream).

Algorithm: each source covers, on every row ``dy`` it reaches, one contiguous run of pixels
``|dx| <= m(dy)-1`` where ``m`` counts the ``k >= 0`` with ``float32(sqrt(k^2+dy^2)) <= r`` (a binary search
on a per-row table). "Range max-assign, then read every point" is solved offline with a sparse table:
a run ``[a, b]`` of length ``L`` writes its value at level ``j = floor(log2 L)`` at ``a`` and at ``b - 2^j + 1``
(two writes); levels are then pushed down (``T[j-1][i] = max(T[j-1][i], T[j][i])`` and
``T[j-1][i + 2^(j-1)]`` likewise). Cost: O(sum over sources of their row count + H*W*log2(W)).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["dilate_defocus"]

_EMPTY = -(2**30)


def dilate_defocus(defocus_px: torch.Tensor, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Signed-max dilation of the truncated defocus.

    Args:
        defocus_px: (B, 1, H, W) signed defocus in pixels, finite.
    Returns:
        (B, 1, H, W) float32 holding integers (pixels).
    """
    B, _, H, W = defocus_px.shape
    out = torch.empty(B, 1, H, W, dtype=torch.float32, device=defocus_px.device)
    for b in range(B):
        out[b, 0] = _dilate_one(defocus_px[b, 0].to(torch.float32))
        if progress is not None:
            progress(b + 1, B)
    return out


def _dilate_one(defocus: torch.Tensor) -> torch.Tensor:
    H, W = defocus.shape
    device = defocus.device
    value = torch.trunc(defocus).to(torch.int32).flatten()
    radius = defocus.abs().flatten()
    radius_sorted, order = torch.sort(radius)
    ys = torch.div(order, W, rounding_mode="floor")
    xs = order - ys * W
    value_sorted = value[order]
    levels = max(1, W.bit_length())
    table = torch.full((levels, H * W), _EMPTY, dtype=torch.int32, device=device)
    rmax = float(radius_sorted[-1]) if radius_sorted.numel() else 0.0
    reach_rows = min(math.floor(rmax), H - 1)
    reach_cols = min(math.floor(rmax), W - 1)
    k = torch.arange(reach_cols + 1, dtype=torch.float32, device=device)
    for dy in range(-reach_rows, reach_rows + 1):
        row_dist = torch.sqrt(k * k + float(dy * dy))  # float32, as the official kernel
        first = int(torch.searchsorted(radius_sorted, row_dist[:1], right=False))  # r >= |dy|
        if first >= radius_sorted.numel():
            continue
        r = radius_sorted[first:]
        y = ys[first:] + dy
        inside = (y >= 0) & (y < H)
        if not bool(inside.any()):
            continue
        r, y, x, v = r[inside], y[inside], xs[first:][inside], value_sorted[first:][inside]
        m = torch.searchsorted(row_dist, r, right=True)  # number of k with dist <= r, >= 1 here
        a = torch.clamp(x - (m - 1), min=0)
        bnd = torch.clamp(x + (m - 1), max=W - 1)
        length = bnd - a + 1
        level = torch.floor(torch.log2(length.to(torch.float64))).to(torch.int64)
        # guard against log2 rounding at exact powers of two
        level = level - ((1 << level) > length).to(torch.int64) + ((1 << (level + 1)) <= length).to(torch.int64)
        base = level * (H * W) + y * W
        idx = torch.cat([base + a, base + bnd - (1 << level) + 1])
        table.view(-1).scatter_reduce_(0, idx, torch.cat([v, v]), reduce="amax", include_self=True)
    for j in range(levels - 1, 0, -1):
        step = 1 << (j - 1)
        torch.maximum(table[j - 1], table[j], out=table[j - 1])
        torch.maximum(table[j - 1, step:], table[j, :-step], out=table[j - 1, step:])
    result = torch.maximum(table[0], value)
    return result.view(H, W).to(torch.float32)

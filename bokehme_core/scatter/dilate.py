"""The official dilated defocus: a signed max of ``int(defocus)`` over every source whose blur disk reaches.

``dilated[t] = max(int(d[t]), max{ int(d[p]) : |p - t| <= |d[p]| })`` with ``int`` truncating toward 0 and the
distance ``sqrt(dx^2 + dy^2)`` in float32 like the official kernel (docs/official-behaviour.md, section 5). The reach is
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

#: empty cell of the sparse table (below any truncated defocus: |defocus| <= 2000 px is checked upstream)
_EMPTY = -(2**15)


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
    # int16 halves the sparse table on CPU (|int(d)| <= 2000); int32 on GPUs, where scatter max is native
    table_dtype = torch.int16 if device.type == "cpu" else torch.int32
    value = torch.trunc(defocus).clamp(-32767, 32767).to(table_dtype).flatten()
    radius = defocus.abs().flatten()
    n_src = radius.numel()
    # order by floor(r), then raster order: sources reaching row dy (r >= |dy|, i.e. floor(r) >= |dy|) are a
    # suffix, and their writes go through memory in order
    reach = torch.floor(radius).to(torch.int64)
    order = torch.argsort(reach * n_src + torch.arange(n_src, device=device))
    reach_sorted = reach[order]
    radius_sorted = radius[order]
    ys = torch.div(order, W, rounding_mode="floor")
    xs = order - ys * W
    value_sorted = value[order]
    levels = max(1, W.bit_length())
    floor_log2 = torch.zeros(W + 1, dtype=torch.int64, device=device)
    for j in range(1, levels + 1):
        floor_log2[1 << (j - 1):] = j - 1
    table = torch.full((levels, H * W), _EMPTY, dtype=table_dtype, device=device)
    table_flat = table.view(-1)
    rmax = float(radius.max()) if n_src else 0.0
    reach_rows = min(math.floor(rmax), H - 1)
    reach_cols = min(math.floor(rmax), W - 1)
    k = torch.arange(reach_cols + 1, dtype=torch.float32, device=device)
    empty = torch.tensor(_EMPTY, dtype=table_dtype, device=device)
    for dy in range(-reach_rows, reach_rows + 1):
        row_dist = torch.sqrt(k * k + float(dy * dy))  # float32, as the official kernel
        first = int(torch.searchsorted(reach_sorted, torch.tensor([abs(dy)], device=device)))
        if first >= n_src:
            continue
        r = radius_sorted[first:]
        y = ys[first:] + dy
        x = xs[first:]
        v = torch.where((y >= 0) & (y < H), value_sorted[first:], empty)
        y = torch.clamp(y, 0, H - 1)
        m = torch.searchsorted(row_dist, r, right=True)  # number of k with dist <= r, >= 1 here
        a = torch.clamp(x - (m - 1), min=0)
        bnd = torch.clamp(x + (m - 1), max=W - 1)
        level = floor_log2[bnd - a + 1]
        base = level * (H * W) + y * W
        idx = torch.cat([base + a, base + bnd - (1 << level) + 1])
        table_flat.scatter_reduce_(0, idx, torch.cat([v, v]), reduce="amax", include_self=True)
    for j in range(levels - 1, 0, -1):
        step = 1 << (j - 1)
        torch.maximum(table[j - 1], table[j], out=table[j - 1])
        torch.maximum(table[j - 1, step:], table[j, :-step], out=table[j - 1, step:])
    result = torch.maximum(table[0], value)
    return result.view(H, W).to(torch.float32)

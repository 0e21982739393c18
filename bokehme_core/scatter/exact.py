"""Exact mode: the official scatter kernel (docs/official-behaviour.md, section 4), in torch on CPU or CUDA.

Per source pixel with blur radius ``r`` and window offsets ``(dx, dy)`` the official weight is
``profile(dx, dy, r) / (r^2 + 0.2)``. It is split in two parts that together equal the official sum:

* **interior** cells, where ``dist' + DELTA < r * c`` (``dist'`` is the anamorphic-scaled distance, ``DELTA`` =
  :data:`.common.DELTA`, ``c`` = :attr:`Aperture.inner_fraction`): there ``tanh(4*(edge - dist)) >=
  tanh(4*DELTA)`` and the profile is replaced by 1 (relative error ``<= exp(-8*DELTA) = 6.1e-6``). On each row
  such cells form one run, added with two writes into a per-row difference array (prefix-summed at the end, in
  float64).
* **rim** cells, all other window cells with ``dist' - DELTA <= r`` (beyond, the profile is below
  ``exp(-8*DELTA) = 6.1e-6`` and the cell is dropped): evaluated with the exact profile. They are visited offset
  by offset; with sources sorted by radius, the sources for which one offset is a rim cell form a contiguous
  slice found by binary search (views, no gathers; sources are ordered by radius bucket, then raster order,
  so the writes of one offset go through memory in order), so no work is spent on cells outside the rim.

Mask apertures have no interior (``c = 0``): every window cell is a rim cell, cost O(r^2) per source.
Work per source ~ (2r+1) row writes + (about 6*pi*r) rim cells instead of (2r+3)^2; memory is O(H*W) plus
chunks of at most ``EXACT_CHUNK`` sources.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..aperture import Aperture
from .common import BUCKETS_PER_PX, EXACT_CHUNK, Progress, per_image, window_tables

__all__ = ["scatter_exact"]


def scatter_exact(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    aperture: Aperture,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Normalised scatter of ``image`` (B,3,H,W) with per-pixel radius ``|defocus_px|`` (B,1,H,W).

    Returns (B,3,H,W) float32: ``sum(w * I) / sum(w)`` over the official kernel.
    """
    return per_image(image, defocus_px, lambda img, dfc, sub: _scatter_one(img, dfc, aperture, sub), progress)


def _scatter_one(image, defocus, aperture: Aperture, progress) -> torch.Tensor:
    _, H, W = image.shape
    device = image.device
    acc_dtype = torch.float64
    radius = defocus.to(torch.float32).abs().flatten()
    weight = 1.0 / (radius.to(acc_dtype) ** 2 + 0.2)
    premult = torch.cat([image.reshape(3, -1).to(acc_dtype), torch.ones(1, H * W, dtype=acc_dtype, device=device)])
    premult = (premult * weight).t()  # (N, 4): w*R, w*G, w*B, w

    # sort by radius bucket (1/BUCKETS_PER_PX px), raster order inside a bucket: a radius range is a contiguous
    # slice (plus exact masking in the two end buckets) whose targets are visited in memory order
    n_src = radius.numel()
    bucket = torch.floor(radius * BUCKETS_PER_PX).to(torch.int64)
    order = torch.argsort(bucket * n_src + torch.arange(n_src, device=device))
    radius_sorted = radius[order]
    bucket_sorted = bucket[order]
    pos = order
    ys = torch.div(order, W, rounding_mode="floor")
    xs = order - ys * W
    premult_sorted = premult[order].contiguous()  # float64 for the interior runs
    premult_sorted32 = premult_sorted.to(torch.float32)  # rim cells accumulate in float32 like upstream
    del premult, weight, bucket  # keep the peak memory down on large images
    rmax = float(radius.max())

    ax, ay = aperture.axis_scale
    win_x = min(math.floor(rmax * ax) + 1, W - 1)
    win_y = min(math.floor(rmax * ay) + 1, H - 1)
    # thresholds: interior iff r > thr[dy, |dx|]; lo: lowest radius for which a cell gets a non-negligible weight
    # and lies in the window (same float32 numbers used by both parts)
    thr, lo = window_tables(aperture, win_x, win_y, device)

    ticks = Progress(progress, 2 * (2 * win_y + 1))
    rows = torch.zeros(H, W + 1, 4, dtype=acc_dtype, device=device)
    rows_flat = rows.view(-1, 4)
    acc = torch.zeros(H * W, 4, dtype=torch.float32, device=device)

    # ---- interior: one run per (source, row)
    for row_index in range(2 * win_y + 1):
        dy = row_index - win_y
        thr_row = thr[row_index]
        first = int(torch.searchsorted(bucket_sorted, _bucket(thr_row[:1], rmax), right=False))
        for start in range(first, n_src, EXACT_CHUNK):
            stop = min(start + EXACT_CHUNK, n_src)
            y = ys[start:stop] + dy
            r = radius_sorted[start:stop]
            x = xs[start:stop]
            m = torch.searchsorted(thr_row, r, right=False)  # count of k with thr < r; 0 = no interior
            keep = (y >= 0) & (y < H) & (m > 0)
            left = torch.clamp(x - (m - 1), min=0)
            right = torch.clamp(x + m, max=W)
            base = torch.clamp(y, 0, H - 1) * (W + 1)
            vals = premult_sorted[start:stop] * keep.unsqueeze(1)
            rows_flat.index_add_(0, torch.cat([base + left, base + right]), torch.cat([vals, -vals]))
            ticks.work(stop - start)
        ticks.step()

    # ---- rim: exact profile, offset by offset, on the slice of sources for which it is a rim cell
    for row_index in range(2 * win_y + 1):
        dy = row_index - win_y
        lo_row = lo[row_index]
        thr_row = thr[row_index]
        starts = torch.searchsorted(bucket_sorted, _bucket(lo_row, rmax), right=False).tolist()
        stops = torch.searchsorted(bucket_sorted, _bucket(thr_row, rmax), right=True).tolist()
        lo_list, thr_list = lo_row.tolist(), thr_row.tolist()
        dy_t = torch.tensor(float(dy), device=device)
        for dx in range(-win_x, win_x + 1):
            s0, s1 = starts[abs(dx)], stops[abs(dx)]
            if s1 <= s0:
                continue
            dx_t = torch.tensor(float(dx), device=device)
            shift = dy * W + dx
            for start in range(s0, s1, EXACT_CHUNK):
                stop = min(start + EXACT_CHUNK, s1)
                x = xs[start:stop]
                y = ys[start:stop]
                r = radius_sorted[start:stop]
                keep = (x >= -dx) & (x < W - dx) & (y >= -dy) & (y < H - dy)
                keep &= (r >= lo_list[abs(dx)]) & (r <= thr_list[abs(dx)])  # exact range in the end buckets
                prof = aperture.profile(dx_t, dy_t, r) * keep
                target = torch.clamp(pos[start:stop] + shift, 0, H * W - 1)
                acc.index_add_(0, target, premult_sorted32[start:stop] * prof.unsqueeze(1))
                ticks.work(stop - start)
        ticks.step()

    del premult_sorted, premult_sorted32
    rows.cumsum_(dim=1)
    total_acc = rows[:, :W]
    total_acc += acc.view(H, W, 4)
    del acc
    out = (total_acc[..., :3] / total_acc[..., 3:]).to(torch.float32)
    return out.permute(2, 0, 1).contiguous()



def _bucket(threshold: torch.Tensor, rmax: float) -> torch.Tensor:
    """Bucket index of radius thresholds (clipped to the largest radius so that inf stays finite)."""
    return torch.floor(torch.clamp(threshold, max=rmax + 1.0) * BUCKETS_PER_PX).to(torch.int64)

"""Fast mode: every source is splatted row by row as anti-aliased runs (difference arrays + prefix sums).

For each blur radius the exact kernel (:meth:`Aperture.profile`, window of the official kernel) is rasterised
once and every kernel row is summarised by its runs of non-negligible cells (one run for circles and polygons,
several for masks with holes). A run becomes a box segment ``[L, R]`` of height ``A`` (``A`` = the run's peak,
``R - L`` = run mass / ``A``, centred on the run's centroid), so each row keeps the exact row mass and centre
of the official kernel and the soft rim becomes box-filter anti-aliasing at both segment ends. A segment costs
four writes into a per-row difference array (fractional coverage at both ends); one cumulative sum per row
turns them into the splat. Work per source: ``(2*floor(r)+3) * runs`` row segments, i.e. linear in the radius.

Radius tables: radii up to ``TABLE_RADIUS`` px use the nearest of the levels spaced ``1/LEVELS_PER_PX`` px
(error <= 1/32 px in radius); larger radii scale the rows of the ``TABLE_RADIUS`` level (row ``dy`` of radius
``r`` reads the base row ``dy * TABLE_RADIUS / r``, interpolated linearly, extents multiplied by
``r / TABLE_RADIUS``), so memory and set-up time do not grow with the radius.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..aperture import Aperture
from .common import (CHUNK, LEVELS_PER_PX, TABLE_RADIUS, Progress, base_rows, box_writes, entry_writes, lerp_rows,
                     per_image, row_runs, source_mass, table_radius)

__all__ = ["scatter_fast"]


def scatter_fast(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    aperture: Aperture,
    progress: Callable[[int, int], None] | None = None,
    *,
    coverage: torch.Tensor | None = None,
    max_radius: float | None = None,
) -> torch.Tensor:
    """Row-run approximation of the official scatter; same contract as :func:`.exact.scatter_exact`.

    image (B,3,H,W) linear values, defocus_px (B or 1,1,H,W) px -> (B,3,H,W) float32.

    With ``coverage`` (B,1,H,W) >= 0, the un-normalised, energy-preserving splat used by the layered mode:
    ``image`` is then premultiplied colour (colour * coverage), every source's kernel is scaled to unit mass
    (:func:`.common.source_mass` instead of the official ``1 / (r^2 + 0.2)``), sources with coverage 0 are
    skipped, and the result is (B,4,H,W): the accumulated premultiplied colour and coverage, NOT divided.
    ``max_radius`` (px, default the largest ``|defocus_px|``) sets the radius the row tables are built for;
    several calls with the same value share them.
    """
    rmax = float(defocus_px.abs().max()) if max_radius is None else float(max_radius)
    tables = [t.to(image.device) for t in row_runs(aperture, table_radius(rmax))]
    if coverage is None:
        return per_image(image, defocus_px, lambda img, dfc, sub: _scatter_one(img, dfc, aperture, tables, sub),
                         progress)
    image = torch.cat([image, coverage.to(image.dtype)], dim=1)
    return per_image(image, defocus_px,
                     lambda img, dfc, sub: _scatter_one(img[:3], dfc, aperture, tables, sub, img[3]), progress)


def _scatter_one(image, defocus, aperture: Aperture, tables, progress, coverage=None) -> torch.Tensor:
    _, H, W = image.shape
    device = image.device
    left_t, right_t, height_t = tables
    n_levels, n_rows, n_runs = left_t.shape
    half_rows = (n_rows - 1) // 2
    ax, ay = aperture.axis_scale

    radius = defocus.to(torch.float32).abs().flatten()
    if coverage is None:
        weight = 1.0 / (radius * radius + 0.2)
        premult = torch.cat([image.reshape(3, -1).to(torch.float32), torch.ones(1, H * W, device=device)])
    else:  # energy-preserving splat of premultiplied colour + coverage (see scatter_fast)
        weight = 1.0 / source_mass(radius, aperture, tables)
        premult = torch.cat([image.reshape(3, -1).to(torch.float32), coverage.reshape(1, -1).to(torch.float32)])
    premult = (premult * weight).t()  # (N, 4)
    # order by window height, then raster order: the sources reaching row dy are a suffix, and their writes go
    # through memory in order (cache friendly)
    n_src = radius.numel()
    reach = (torch.floor(radius * ay) + 1).to(torch.int64)
    order = torch.argsort(reach * n_src + torch.arange(n_src, device=device))
    if coverage is not None:  # sources with coverage 0 add nothing: skip them
        order = order[premult[order, 3] > 0]
        n_src = order.numel()
        if n_src == 0:
            return torch.zeros(4, H, W, dtype=torch.float32, device=device)
    radius_sorted = radius[order]
    reach_sorted = reach[order]
    ys = torch.div(order, W, rounding_mode="floor")
    xs = order - ys * W
    premult_sorted = premult[order].contiguous()
    del premult, reach, order, radius, weight  # keep the peak memory down on large images
    # per source: table level and row scale (radii above the table scale the last level)
    # 'big' is decided on the reach (the sort key) so that the table radii form a prefix of the order;
    # reach <= floor(TABLE_RADIUS*ay) implies r < TABLE_RADIUS
    big = reach_sorted > math.floor(TABLE_RADIUS * ay)
    level = torch.where(big, n_levels - 1, torch.round(radius_sorted * LEVELS_PER_PX).long().clamp(max=n_levels - 1))
    base_radius = float(n_levels - 1) / LEVELS_PER_PX
    scale = torch.where(big, radius_sorted / base_radius, torch.ones_like(radius_sorted))
    level_base = level * (n_rows * n_runs)
    left_flat, right_flat, height_flat = left_t.flatten(), right_t.flatten(), height_t.flatten()
    runs = torch.arange(n_runs, device=device)
    # for integer-centred sources on table rows the four writes of a run are fixed offsets and coefficients
    entry_cols, entry_coef = entry_writes(left_flat, right_flat, height_flat)
    entry_cols = entry_cols.long()  # (entries, 4)
    n_small = int((~big).sum())  # sources are ordered by reach, so the small radii come first

    rmax = float(radius_sorted.max())
    win_y = min(math.floor(rmax * ay) + 1, H - 1)
    # row H is a dump row for writes that fall outside the image (no masking needed)
    rows = torch.zeros(H + 1, W + 1, 4, dtype=torch.float32, device=device)
    rows_flat = rows.view(-1, 4)
    # kernels symmetric under dy -> -dy (circles, ellipses, symmetric masks/polygons): rows dy and -dy share
    # their columns and coefficients, computed once
    mirrored = n_rows == 1 or bool(
        torch.equal(left_t, left_t.flip(1)) and torch.equal(right_t, right_t.flip(1))
        and torch.equal(height_t, height_t.flip(1))
    )
    row_offsets = range(0, win_y + 1) if mirrored else range(-win_y, win_y + 1)
    ticks = Progress(progress, len(row_offsets))
    for dy in row_offsets:
        # sources whose window reaches row dy: floor(r*ay) + 1 >= |dy|
        first = int(torch.searchsorted(reach_sorted, torch.tensor([abs(dy)], device=device)))
        table_row = dy + half_rows
        targets = (dy, -dy) if mirrored and dy > 0 else (dy,)
        for start in range(first, n_src, CHUNK):
            stop = min(start + CHUNK, n_src)
            mid = min(max(n_small, start), stop)
            if mid > start and 0 <= table_row < n_rows:  # table radii: direct lookup
                entry = (level_base[start:mid] + table_row * n_runs).unsqueeze(1) + runs  # (n, runs)
                cols = (xs[start:mid].view(-1, 1, 1) + entry_cols[entry]).clamp_(0, W)  # (n, runs, 4)
                values = premult_sorted[start:mid].view(-1, 1, 1, 4) * entry_coef[entry].unsqueeze(-1)
                values = values.reshape(-1, 4)  # (n * runs * 4, 4)
                for target_dy in targets:
                    y = ys[start:mid] + target_dy
                    y = torch.where((y >= 0) & (y < H), y, H)
                    index = cols + (y * (W + 1)).view(-1, 1, 1)
                    rows_flat.index_add_(0, index.flatten(), values)
            if stop > mid:
                for target_dy in targets:
                    _scaled_rows(rows_flat, target_dy, slice(mid, stop), ys, xs, scale, level_base, left_flat,
                                 right_flat, height_flat, runs, n_runs, n_rows, half_rows, premult_sorted, H, W)
            ticks.work((stop - start) * len(targets))
        ticks.step()
    del premult_sorted, entry_cols, entry_coef
    total_acc = rows[:H].to(torch.float64)
    del rows, rows_flat
    total_acc.cumsum_(dim=1)
    if coverage is not None:
        return total_acc[:, :W, :].to(torch.float32).permute(2, 0, 1).contiguous()
    out = (total_acc[:, :W, :3] / total_acc[:, :W, 3:]).to(torch.float32)
    return out.permute(2, 0, 1).contiguous()


def _scaled_rows(rows_flat, dy, part, ys, xs, scale, level_base, left_flat, right_flat, height_flat, runs, n_runs,
                 n_rows, half_rows, premult_sorted, H, W) -> None:
    """Row ``dy`` of the sources ``part`` with radii above the table: base rows interpolated and scaled."""
    y = ys[part] + dy
    y = torch.where((y >= 0) & (y < H), y, H)  # row H: dump row
    sc = scale[part]
    i0, i1, frac = base_rows(dy, sc, half_rows, n_rows)  # row of the base level, fractional
    frac = frac.unsqueeze(1)
    idx0 = (level_base[part] + i0 * n_runs).unsqueeze(1) + runs
    idx1 = (level_base[part] + i1 * n_runs).unsqueeze(1) + runs
    left = lerp_rows(left_flat, idx0, idx1, frac) * sc.unsqueeze(1)
    right = lerp_rows(right_flat, idx0, idx1, frac) * sc.unsqueeze(1)
    height = lerp_rows(height_flat, idx0, idx1, frac)
    x = xs[part].to(torch.float32).unsqueeze(1)
    # cell c covers [c - 0.5, c + 0.5]; shift by 0.5 so the cell holding a point is its floor
    cols, coef = box_writes(x + left + 0.5, x + right + 0.5, height)  # (4, n, runs)
    cols = cols.clamp(0, W).long()
    index = (cols + (y * (W + 1)).unsqueeze(1)).flatten()
    values = premult_sorted[part].unsqueeze(0).unsqueeze(2) * coef.unsqueeze(-1)  # (4, n, runs, 4)
    rows_flat.index_add_(0, index, values.reshape(-1, 4))

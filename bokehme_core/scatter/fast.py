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

import functools
import math
from typing import Callable

import torch

from ..aperture import Aperture, Lens
from .common import Progress

__all__ = ["scatter_fast", "row_runs", "source_mass", "TABLE_RADIUS", "LEVELS_PER_PX"]

TABLE_RADIUS = 48
LEVELS_PER_PX = 16
#: cells with a profile below this are not part of any run
RUN_THRESHOLD = 1e-6
#: largest number of (source, row) pairs processed at once
CHUNK = 1 << 20


@functools.lru_cache(maxsize=16)
def row_runs(aperture: Aperture, max_radius: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row-run tables of the exact kernel for radii ``0, 1/LEVELS_PER_PX, ..`` up to ``min(max_radius, TABLE_RADIUS)``.

    Returns ``(left, right, height)``, each (levels, rows, runs) float32 on the CPU, rows indexed by
    ``dy + half_rows`` with ``half_rows = floor(TABLE_RADIUS*ay) + 2`` (one zero row of padding each side);
    ``left``/``right`` are the segment ends in pixels relative to the source, ``height`` the box height
    (0 for no run).
    """
    ax, ay = aperture.axis_scale
    top = min(max_radius, TABLE_RADIUS)
    n_levels = int(math.floor(top * LEVELS_PER_PX)) + 2
    radii = torch.arange(n_levels, dtype=torch.float32) / LEVELS_PER_PX
    half_rows = math.floor(TABLE_RADIUS * ay) + 2
    half_cols = math.floor(float(radii[-1]) * ax) + 1
    dy = torch.arange(-half_rows, half_rows + 1, dtype=torch.float32).view(1, -1, 1)
    dx = torch.arange(-half_cols, half_cols + 1, dtype=torch.float32).view(1, 1, -1)
    r = radii.view(-1, 1, 1)
    prof = aperture.profile(dx, dy, r)
    wx = torch.floor(r * ax) + 1
    wy = torch.floor(r * ay) + 1
    prof = prof * ((dx.abs() <= wx) & (dy.abs() <= wy))  # official window
    on = prof > RUN_THRESHOLD
    start = on & ~torch.nn.functional.pad(on, (1, 0))[..., :-1]
    run_id = torch.cumsum(start.to(torch.int64), dim=-1) * on  # 1-based run index, 0 = off
    n_runs = max(int(run_id.max()), 1)
    flat_rows = prof.shape[0] * prof.shape[1]
    slot = (torch.arange(flat_rows).view(prof.shape[0], prof.shape[1], 1) * (n_runs + 1) + run_id).flatten()
    size = flat_rows * (n_runs + 1)
    mass = torch.zeros(size, dtype=torch.float64).index_add_(0, slot, prof.flatten().double())
    moment = torch.zeros(size, dtype=torch.float64).index_add_(0, slot, (prof * dx).flatten().double())
    peak = torch.zeros(size, dtype=torch.float64).scatter_reduce_(0, slot, prof.flatten().double(), "amax")
    mass, moment, peak = (t.view(prof.shape[0], prof.shape[1], n_runs + 1)[..., 1:] for t in (mass, moment, peak))
    has = mass > 0
    centre = torch.where(has, moment / mass.clamp(min=1e-300), 0.0)
    half = torch.where(has, mass / peak.clamp(min=1e-300) / 2, 0.0)
    height = torch.where(has, peak, 0.0)
    return (centre - half).float(), (centre + half).float(), height.float()


def scatter_fast(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    aperture: Aperture,
    progress: Callable[[int, int], None] | None = None,
    *,
    coverage: torch.Tensor | None = None,
    max_radius: float | None = None,
    lens: Lens | None = None,
    lens_frame: tuple | None = None,
) -> torch.Tensor:
    """Row-run approximation of the official scatter; same contract as :func:`.exact.scatter_exact`.

    image (B,3,H,W) linear values, defocus_px (B or 1,1,H,W) px -> (B,3,H,W) float32.

    With ``coverage`` (B,1,H,W) >= 0, the un-normalised, energy-preserving splat used by the layered mode:
    ``image`` is then premultiplied colour (colour * coverage), every source's kernel is scaled to unit mass
    (:func:`source_mass` instead of the official ``1 / (r^2 + 0.2)``), sources with coverage 0 are skipped,
    and the result is (B,4,H,W): the accumulated premultiplied colour and coverage, NOT divided.
    ``max_radius`` (px, default the largest ``|defocus_px|``) sets the radius the row tables are built for;
    several calls with the same value share them.
    ``lens``: lens character (:func:`.lens_kernels.scatter_fast_lens`, with ``coverage`` too); ``lens_frame =
    (top, left, frame_height, frame_width)`` places this image in a larger frame for the lens fields.
    """
    if lens is not None and not lens.shapes_neutral:  # lens character: per-source kernels
        from .lens_kernels import scatter_fast_lens

        return scatter_fast_lens(image, defocus_px, aperture, lens, progress, coverage=coverage,
                                 max_radius=max_radius, frame=lens_frame)
    B = image.shape[0]
    rmax = float(defocus_px.abs().max()) if max_radius is None else float(max_radius)
    tables = [t.to(image.device) for t in row_runs(aperture, float(min(math.floor(rmax) + 1, TABLE_RADIUS)))]
    outs = []
    for b in range(B):
        sub = None
        if progress is not None:
            sub = lambda done, total, b=b: progress(b * total + done, B * total)  # noqa: E731
        cov = None if coverage is None else coverage[b, 0]
        outs.append(_scatter_one(image[b], defocus_px[b if defocus_px.shape[0] > 1 else 0, 0], aperture, tables, sub,
                                 cov))
    return torch.stack(outs)


_LEVEL_MASS: dict = {}  # mass per table level, per (cached) row-run table


def source_mass(radius: torch.Tensor, aperture: Aperture, tables) -> torch.Tensor:
    """Total weight that the fast kernel of radius ``radius`` (px, any shape) spreads, with the row tables
    ``tables`` of :func:`row_runs` (before any clipping at the image border): the per-source normaliser of the
    energy-preserving splat. Radii above the tables (scaled rows) are interpolated from a grid of exact
    values (relative error below 1e-3)."""
    left_t, right_t, height_t = (t.to(radius.device) for t in tables)
    n_levels, n_rows, n_runs = left_t.shape
    half_rows = (n_rows - 1) // 2
    ax, ay = aperture.axis_scale
    key = (id(tables[0]), left_t.shape, str(radius.device))
    level_mass = _LEVEL_MASS.get(key)
    if level_mass is None:
        level_mass = ((right_t - left_t) * height_t).sum(dim=(1, 2)).to(torch.float64)  # (levels,)
        if len(_LEVEL_MASS) > 32:
            _LEVEL_MASS.clear()
        _LEVEL_MASS[key] = level_mass
    radius = radius.to(torch.float32)
    reach = torch.floor(radius * ay) + 1
    big = reach > math.floor(TABLE_RADIUS * ay)
    level = torch.round(radius * LEVELS_PER_PX).long().clamp(max=n_levels - 1)
    mass = level_mass[level]
    if bool(big.any()):
        base_radius = float(n_levels - 1) / LEVELS_PER_PX
        r_big = radius[big].to(torch.float64)
        grid = torch.linspace(base_radius, float(r_big.max()) + 1.0, 96, dtype=torch.float64, device=radius.device)
        masses = []
        for r in grid.tolist():  # exact mass of the scaled rows, as the kernels compute them
            sc = r / base_radius
            win = math.floor(r * ay) + 1
            dy = torch.arange(-win, win + 1, dtype=torch.float32, device=radius.device)
            u = dy / sc
            u0 = torch.floor(u)
            frac = (u - u0).unsqueeze(1)
            i0 = (u0.long() + half_rows).clamp(0, n_rows - 1)
            i1 = (u0.long() + 1 + half_rows).clamp(0, n_rows - 1)
            base_l, base_r, base_h = left_t[-1], right_t[-1], height_t[-1]
            left = (base_l[i0] * (1 - frac) + base_l[i1] * frac) * sc
            right = (base_r[i0] * (1 - frac) + base_r[i1] * frac) * sc
            height = base_h[i0] * (1 - frac) + base_h[i1] * frac
            masses.append(float(((right - left) * height).sum()))
        per_area = torch.tensor(masses, dtype=torch.float64, device=radius.device) / grid**2
        pos = ((r_big - grid[0]) / (grid[1] - grid[0])).clamp(0, len(grid) - 1.000001)
        i = pos.floor().long()
        f = pos - i
        mass = mass.clone()
        mass[big] = (per_area[i] * (1 - f) + per_area[(i + 1).clamp(max=len(grid) - 1)] * f) * r_big**2
    return mass.to(torch.float32)


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
    pos_l, pos_r = left_flat + 0.5, right_flat + 0.5
    cell_l, cell_r = torch.floor(pos_l), torch.floor(pos_r)
    cover_l, cover_r = cell_l + 1 - pos_l, pos_r - cell_r
    entry_cols = torch.stack([cell_l, cell_l + 1, cell_r, cell_r + 1], dim=1).long()  # (entries, 4)
    entry_coef = torch.stack([cover_l, 1 - cover_l, cover_r - 1, -cover_r], dim=1) * height_flat.unsqueeze(1)
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
    u = dy / sc  # row of the base level, fractional
    u0 = torch.floor(u)
    frac = (u - u0).unsqueeze(1)
    i0 = (u0.long() + half_rows).clamp(0, n_rows - 1)
    i1 = (u0.long() + 1 + half_rows).clamp(0, n_rows - 1)
    idx0 = (level_base[part] + i0 * n_runs).unsqueeze(1) + runs
    idx1 = (level_base[part] + i1 * n_runs).unsqueeze(1) + runs
    left = (left_flat[idx0] * (1 - frac) + left_flat[idx1] * frac) * sc.unsqueeze(1)
    right = (right_flat[idx0] * (1 - frac) + right_flat[idx1] * frac) * sc.unsqueeze(1)
    height = height_flat[idx0] * (1 - frac) + height_flat[idx1] * frac
    x = xs[part].to(torch.float32).unsqueeze(1)
    # cell c covers [c - 0.5, c + 0.5]; shift by 0.5 so the cell holding a point is its floor
    pos_l = x + left + 0.5
    pos_r = x + right + 0.5
    cell_l = torch.floor(pos_l)
    cell_r = torch.floor(pos_r)
    cover_l = cell_l + 1 - pos_l  # coverage of the first cell
    cover_r = pos_r - cell_r  # coverage of the last cell
    coef = torch.stack([cover_l, 1 - cover_l, cover_r - 1, -cover_r]) * height  # (4, n, runs)
    cols = torch.stack([cell_l, cell_l + 1, cell_r, cell_r + 1]).clamp(0, W).long()
    index = (cols + (y * (W + 1)).unsqueeze(1)).flatten()
    values = premult_sorted[part].unsqueeze(0).unsqueeze(2) * coef.unsqueeze(-1)  # (4, n, runs, 4)
    rows_flat.index_add_(0, index, values.reshape(-1, 4))

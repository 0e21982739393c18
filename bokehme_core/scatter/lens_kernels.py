"""Torch scatter kernels with lens character (cat's eye, swirl, ring): per-source kernels that depend on the
source's position in the frame (:class:`bokehme_core.aperture.LensShape`, formulas in :mod:`bokehme_core.aperture`).

The torch backend's "shaped" cells of the kernel table (:mod:`.table`); a neutral lens shape (no cat's eye, swirl
or ring) gets the plain cells instead, bit-identical to no lens.

* :func:`scatter_exact_lens`: the exact weights ``LensShape.profile * norm / (r^2 + 0.2)`` over the official window,
  offset by offset, vectorised over the sources whose window and support reach the offset (sources sorted by
  radius: a suffix per offset). Cost O(r^2) per source: meant for tests, CUDA and modest sizes; the numba
  backend (:mod:`.lens_numba`) evaluates only the rim exactly.
* :func:`scatter_fast_lens`: the fast-mode row runs. Per source and row the aperture's run table row (of
  :func:`.common.row_runs`, read at the fractional row of the moved shape and scaled above the table radius) is
  intersected with the run of the moved clip circle (the circle's table), giving box segments of height
  ``min(heights)``; the ring subtracts the same construction at ``RING_INNER * r`` (intersected with the outer
  segment) with weight ``ring``. Four difference-array writes per segment, one prefix sum per row. Each source
  is weighted by the mass of its own segments (a first pass over the rows sums their areas), not by the energy
  table of :meth:`LensShape.fields` (the exact kernel's): the box model of a lemon a few pixels wide holds 0.5 to
  1.1 times the exact one's mass, so only its own mass keeps the energy.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..aperture import RING_INNER, Aperture, LensShape
from .common import (CHUNK, LEVELS_PER_PX, Progress, base_rows, box_writes, lerp_rows, per_image, row_runs,
                     table_radius, window_tables)

__all__ = ["scatter_exact_lens", "scatter_fast_lens", "lens_premult", "fast_tables"]


def lens_premult(image: torch.Tensor, radius: torch.Tensor, norm: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """(H*W, 4): ``(w*R, w*G, w*B, w)`` with ``w = norm / (r^2 + 0.2)`` for one (3, H, W) image."""
    H, W = radius.shape
    weight = norm.to(dtype) / (radius.to(dtype) ** 2 + 0.2)
    premult = torch.cat([image.reshape(3, -1).to(dtype), torch.ones(1, H * W, dtype=dtype, device=image.device)])
    return (premult * weight.reshape(1, -1)).t().contiguous()


def _finish(total: torch.Tensor, H: int, W: int, raw: bool) -> torch.Tensor:
    total = total.reshape(H, W, 4)
    if raw:
        return total.to(torch.float32).permute(2, 0, 1).contiguous()
    return (total[..., :3] / total[..., 3:]).to(torch.float32).permute(2, 0, 1).contiguous()


# ------------------------------------------------------------------------------------------------ exact
def scatter_exact_lens(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    aperture: Aperture,
    lens: LensShape,
    progress: Callable[[int, int], None] | None = None,
    *,
    raw: bool = False,
) -> torch.Tensor:
    """Exact lens-character scatter: (B,3,H,W) linear image, (B or 1,1,H,W) px -> (B,3,H,W) float32.

    With ``raw`` the un-normalised sums ``(sum w*R, sum w*G, sum w*B, sum w)`` come back as (B,4,H,W).
    """
    return per_image(image, defocus_px, lambda img, dfc, sub: _exact_one(img, dfc, aperture, lens, sub, raw),
                      progress)


def _exact_one(image, defocus, aperture: Aperture, lens: LensShape, progress, raw: bool) -> torch.Tensor:
    _, H, W = image.shape
    device = image.device
    radius_map = defocus.to(torch.float32).abs()
    fields = lens.fields(aperture, radius_map)
    premult = lens_premult(image, radius_map, fields.norm, torch.float64)
    radius = radius_map.flatten()
    order = torch.argsort(radius, stable=True)
    radius_sorted = radius[order].contiguous()
    ys = torch.div(order, W, rounding_mode="floor")
    xs = order - ys * W
    premult_sorted = premult[order]
    shift_x = fields.shift_x.flatten()[order]
    shift_y = fields.shift_y.flatten()[order]
    ring = fields.ring.flatten()[order]
    rmax = float(radius_sorted[-1])
    ax, ay = aperture.axis_scale
    win_x = min(math.floor(rmax * ax) + 1, W - 1)
    win_y = min(math.floor(rmax * ay) + 1, H - 1)
    # the least radius for which offset (dy, |dx|) is inside the window and the support of a lens kernel (the
    # lemon lies inside the plain shape's support disc of radius r + DELTA)
    _, lo = window_tables(aperture, win_x, win_y, device)
    acc = torch.zeros(H * W, 4, dtype=torch.float64, device=device)
    ticks = Progress(progress, 2 * win_y + 1)
    for row_index in range(2 * win_y + 1):
        dy = row_index - win_y
        lo_row = lo[row_index].tolist()
        dy_t = torch.tensor(float(dy), device=device)
        for dx in range(-win_x, win_x + 1):
            start = int(torch.searchsorted(radius_sorted, torch.tensor([lo_row[abs(dx)]], device=device)))
            if start >= radius_sorted.numel():
                continue
            dx_t = torch.tensor(float(dx), device=device)
            for s0 in range(start, radius_sorted.numel(), CHUNK):
                s1 = min(s0 + CHUNK, radius_sorted.numel())
                x, y, r = xs[s0:s1], ys[s0:s1], radius_sorted[s0:s1]
                keep = (x >= -dx) & (x < W - dx) & (y >= -dy) & (y < H - dy)
                keep &= (torch.floor(r * ax) + 1 >= abs(dx)) & (torch.floor(r * ay) + 1 >= abs(dy))  # official window
                prof = lens.profile(aperture, dx_t, dy_t, r, shift_x[s0:s1], shift_y[s0:s1], ring[s0:s1])
                prof = prof.to(torch.float64) * keep
                target = torch.clamp((y + dy) * W + x + dx, 0, H * W - 1)
                acc.index_add_(0, target, premult_sorted[s0:s1] * prof.unsqueeze(1))
                ticks.work(s1 - s0)
        ticks.step()
    return _finish(acc, H, W, raw)


# ------------------------------------------------------------------------------------------------- fast
def fast_tables(aperture: Aperture, rmax: float, device=None) -> dict:
    """Run tables of the aperture and of its clip circle for radii up to ``rmax`` (see :func:`.common.row_runs`)."""
    top = table_radius(rmax)
    shape = row_runs(aperture, top)
    circle = Aperture.circle(aperture.anamorphic)
    clip = shape if circle == aperture else row_runs(circle, top)
    n_levels = shape[0].shape[0]
    return {
        "shape": tuple(t.to(device) for t in shape),
        "clip": tuple(t.to(device) for t in clip),
        "base_radius": float(n_levels - 1) / LEVELS_PER_PX,
        "levels_per_px": LEVELS_PER_PX,
    }


def scatter_fast_lens(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    aperture: Aperture,
    lens: LensShape,
    progress: Callable[[int, int], None] | None = None,
    *,
    raw: bool = False,
    coverage: torch.Tensor | None = None,
    max_radius: float | None = None,
    frame: tuple | None = None,
) -> torch.Tensor:
    """Fast-mode lens-character scatter; same contract as :func:`scatter_exact_lens`.

    ``coverage`` (B,1,H,W) / ``max_radius``: the energy-preserving splat of :func:`.fast.scatter_fast` (``image``
    premultiplied colour, each source's lens kernel scaled to unit mass (1 / the mass of its box segments), sources
    with coverage 0 skipped, (B,4,H,W) sums returned). Without ``coverage`` each source's weight is its plain fast
    kernel's energy (its rows' mass / (r^2 + 0.2)) over the mass of its box segments: the lens keeps every bokeh
    ball's energy at every radius and position (up to float rounding; the image borders clip as without a lens).
    ``frame = (top, left, frame_height, frame_width)`` places the image in a larger frame for the lens fields
    (:meth:`LensShape.fields`).
    """
    rmax = float(defocus_px.abs().max()) if max_radius is None else float(max_radius)
    tables = fast_tables(aperture, rmax, image.device)
    if coverage is None:
        return per_image(image, defocus_px,
                         lambda img, dfc, sub: _fast_one(img, dfc, aperture, lens, tables, sub, raw, None, frame),
                         progress)
    image = torch.cat([image, coverage.to(image.dtype).expand(image.shape[0], -1, -1, -1)], dim=1)
    return per_image(image, defocus_px,
                     lambda img, dfc, sub: _fast_one(img[:3], dfc, aperture, lens, tables, sub, True, img[3], frame),
                     progress)


def _rows(table, radius, row, x_offset, base_radius, levels_per_px):
    """Runs of ``table`` for sources with ``radius`` (n,) at fractional kernel row ``row`` (n,) (image px,
    relative to the shape's centre), moved by ``x_offset`` (n,): (left, right, height), each (n, runs)."""
    left_t, right_t, height_t = table
    n_levels, n_rows, n_runs = left_t.shape
    half_rows = (n_rows - 1) // 2
    small = radius <= base_radius
    level = torch.where(small, torch.round(radius * levels_per_px).long().clamp(max=n_levels - 1), n_levels - 1)
    scale = torch.where(small, torch.ones_like(radius), radius / base_radius)
    i0, i1, frac = base_rows(row, scale, half_rows, n_rows)
    frac = frac.unsqueeze(1)
    runs = torch.arange(n_runs, device=radius.device)
    base = level * (n_rows * n_runs)
    idx0 = (base + i0 * n_runs).unsqueeze(1) + runs
    idx1 = (base + i1 * n_runs).unsqueeze(1) + runs
    lf, rf, hf = left_t.flatten(), right_t.flatten(), height_t.flatten()
    sc = scale.unsqueeze(1)
    left = lerp_rows(lf, idx0, idx1, frac) * sc + x_offset.unsqueeze(1)
    right = lerp_rows(rf, idx0, idx1, frac) * sc + x_offset.unsqueeze(1)
    height = lerp_rows(hf, idx0, idx1, frac)
    return left, right, height


def _lemon_rows(tables, radius, dy, ox, oy):
    """Segments of the lemon (aperture moved by -o, clip circle by +o) on kernel row dy: (left, right, height)."""
    base_radius, lpp = tables["base_radius"], tables["levels_per_px"]
    sl, sr, sh = _rows(tables["shape"], radius, dy + oy, -ox, base_radius, lpp)
    cl, cr, ch = _rows(tables["clip"], radius, dy - oy, ox, base_radius, lpp)
    unshifted = ((ox == 0) & (oy == 0)).unsqueeze(1)  # no clip: the plain aperture's rows exactly
    cl = torch.where(unshifted, -1e30, cl[:, :1])
    cr = torch.where(unshifted, 1e30, cr[:, :1])
    ch = torch.where(unshifted, 1e30, ch[:, :1])
    left = torch.maximum(sl, cl)
    right = torch.minimum(sr, cr)
    height = torch.where(right > left, torch.minimum(sh, ch), torch.zeros_like(sh))
    return left, right, height


def _segments(tables, radius, dy: float, ox, oy, ring):
    """Box segments of the lens kernels of sources with ``radius`` (n,) on kernel row dy: the lemon's
    (left, right, height) and, with ``ring`` (n,) (None: no ring), the ring's inner lemon (height times -ring)."""
    left, right, height = _lemon_rows(tables, radius, dy, ox, oy)
    segments = [(left, right, height)]
    if ring is not None:
        il, ir, ih = _lemon_rows(tables, radius * RING_INNER, dy, ox * RING_INNER, oy * RING_INNER)
        il, ir = torch.maximum(il, left), torch.minimum(ir, right)
        ih = torch.where(ir > il, torch.minimum(ih, height), torch.zeros_like(ih)) * -ring.unsqueeze(1)
        segments.append((il, ir, ih))
    return segments


def _segment_mass(left, right, height) -> torch.Tensor:
    """(n,) float64: the mass that :func:`_write_segments` writes for segments (n, runs)."""
    area = (right - left).double() * height.double()
    return torch.where(right > left, area, torch.zeros_like(area)).sum(dim=1)


def _fast_one(image, defocus, aperture: Aperture, lens: LensShape, tables, progress, raw: bool, coverage=None,
              frame=None) -> torch.Tensor:
    _, H, W = image.shape
    device = image.device
    ax, ay = aperture.axis_scale
    radius_map = defocus.to(torch.float32).abs()
    fields = lens.fields(aperture, radius_map, frame)
    radius = radius_map.flatten()
    reach = (torch.floor(radius * ay) + 1).to(torch.int64)
    if coverage is not None:  # sources with coverage 0 add nothing: they reach no row
        reach = torch.where(coverage.reshape(-1) > 0, reach, torch.full_like(reach, -1))
    order = torch.argsort(reach, stable=True)
    reach_sorted = reach[order]
    radius_sorted = radius[order]
    ys = torch.div(order, W, rounding_mode="floor")
    xs = order - ys * W
    ox_all = (fields.shift_x.flatten()[order] * radius_sorted * ax).contiguous()
    oy_all = (fields.shift_y.flatten()[order] * radius_sorted * ay).contiguous()
    ring_all = fields.ring.flatten()[order].contiguous() if lens.ring > 0 else None
    win_y = min(int(reach_sorted[-1]), H - 1)
    n_src = radius.numel()
    # the weights: the plain kernel's energy (plain mass / (r^2 + 0.2), or 1 with coverage) over the mass of the
    # lens kernel's box segments, so that every source keeps the plain energy at every radius and position (all
    # its rows, also those outside the image)
    lemon_mass = torch.zeros(n_src, dtype=torch.float64, device=device)
    plain_mass = torch.zeros(n_src, dtype=torch.float64, device=device) if coverage is None else None
    no_offset = torch.zeros_like(radius_sorted)
    base_radius, lpp = tables["base_radius"], tables["levels_per_px"]
    max_reach = int(reach_sorted[-1])
    ticks = Progress(progress, (2 * max_reach + 1) + (2 * win_y + 1))  # the mass pass, then the splat
    for dy in range(-max_reach, max_reach + 1):
        first = int(torch.searchsorted(reach_sorted, torch.tensor([abs(dy)], device=device)))
        for start in range(first, n_src, CHUNK):
            part = slice(start, min(start + CHUNK, n_src))
            r = radius_sorted[part]
            ring = None if ring_all is None else ring_all[part]
            for segment in _segments(tables, r, float(dy), ox_all[part], oy_all[part], ring):
                lemon_mass[part] += _segment_mass(*segment)
            if plain_mass is not None:
                plain_mass[part] += _segment_mass(*_rows(tables["shape"], r, no_offset[part] + dy, no_offset[part],
                                                         base_radius, lpp))
            ticks.work(part.stop - part.start)
        ticks.step()
    if coverage is None:
        energy = plain_mass / (radius_sorted * radius_sorted + 0.2).double()
        colour = torch.cat([image.reshape(3, -1), torch.ones(1, H * W, device=device)])
    else:  # energy-preserving splat: premultiplied colour + coverage, unit-mass lens kernels
        energy = torch.ones_like(lemon_mass)
        colour = torch.cat([image.reshape(3, -1), coverage.reshape(1, -1)])
    weight = torch.where(lemon_mass > 0, energy / lemon_mass.clamp(min=1e-300), 0.0).to(torch.float32)
    premult_sorted = (colour.to(torch.float32)[:, order] * weight.view(1, -1)).t().contiguous()
    rows = torch.zeros(H + 1, W + 1, 4, dtype=torch.float32, device=device)  # row H: dump row
    rows_flat = rows.view(-1, 4)
    for dy in range(-win_y, win_y + 1):
        first = int(torch.searchsorted(reach_sorted, torch.tensor([abs(dy)], device=device)))
        for start in range(first, n_src, CHUNK):
            part = slice(start, min(start + CHUNK, n_src))
            ring = None if ring_all is None else ring_all[part]
            segments = _segments(tables, radius_sorted[part], float(dy), ox_all[part], oy_all[part], ring)
            y = ys[part] + dy
            y = torch.where((y >= 0) & (y < H), y, H)
            x = xs[part].to(torch.float32).unsqueeze(1)
            for seg_left, seg_right, seg_height in segments:
                _write_segments(rows_flat, x, y, seg_left, seg_right, seg_height, premult_sorted[part], W)
            ticks.work(part.stop - part.start)
        ticks.step()
    total_acc = rows[:H].to(torch.float64)
    total_acc.cumsum_(dim=1)
    return _finish(total_acc[:, :W], H, W, raw)


def _write_segments(rows_flat, x, y, left, right, height, premult, W) -> None:
    """Box segments [x+left, x+right] of ``height`` (n, runs) into the row difference arrays (4 writes each)."""
    height = torch.where(right > left, height, torch.zeros_like(height))
    cols, coef = box_writes(left + 0.5, right + 0.5, height)  # (4, n, runs); cell c covers [c - 0.5, c + 0.5]
    cols = (cols + x).clamp(0, W).long()
    index = (cols + (y * (W + 1)).view(1, -1, 1)).flatten()
    values = premult.view(1, -1, 1, 4) * coef.unsqueeze(-1)
    rows_flat.index_add_(0, index, values.reshape(-1, 4))

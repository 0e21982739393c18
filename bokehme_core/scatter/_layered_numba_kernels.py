"""The numba kernels of the layered mode (:mod:`.layered`, ``backend="numba"``), imported only when numba is
available and a layered render asks for them.

Module-level functions on purpose, as :mod:`._numba_kernels`: numba's on-disk cache (``cache=True``) then hits
in every later process instead of recompiling. Three passes replace the per-slab torch work of the torch path
with the same arithmetic (float32 where the torch path is float32, the splats accumulated in float64 as
:func:`._numba_kernels.fast_rows` does):

* hidden-sample search (:func:`plate_add`, :func:`plate_grid`, :func:`distance_grid`, :func:`push_pull`,
  :func:`hidden_candidates`, :func:`hidden_samples`): :func:`.layered.hidden_layer` one slab at a time, on the
  same push-pull grid, without (h, w) torch temporaries;
* source lists (:func:`count_sources`, :func:`fill_sources`): every slab's sources (visible pixels and hidden
  samples, tent coverage > 0) bucketed per (slab, row) in raster order, with their premultiplied, unit-mass
  weights, plus each slab's box (its sources' bounding box plus their largest radius, as the torch path's
  crops);
* :func:`layered_rows`: near-to-far compositing of all slabs, one output row at a time: each slab's splat row
  is the fast kernel's (the same difference-array writes, clipped to the slab's box as the crops of the torch
  path are), composited with the occluder coverage of the slabs ``gap`` steps nearer. Rows are independent, so
  threads never write the same memory and the result does not depend on the thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._numba_kernels import splat_scaled_row, splat_table_row

f32 = np.float32


# ------------------------------------------------------------------------------------------ hidden search
@njit(cache=True)
def slab_members(lower, n_slabs):
    """Pixels grouped by their tent's farther slab ``lower`` (a stable counting sort: raster order inside a
    slab): ``(order (N,) int64, bounds (n_slabs + 1,) int64)``."""
    n = lower.shape[0]
    bounds = np.zeros(n_slabs + 1, dtype=np.int64)
    for p in range(n):
        bounds[lower[p] + 1] += 1
    for j in range(n_slabs):
        bounds[j + 1] += bounds[j]
    fill = bounds[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    for p in range(n):
        j = lower[p]
        order[fill[j]] = p
        fill[j] += 1
    return order, bounds


@njit(cache=True)
def plate_add(plate, members, colour, flat_d, W, factor, w):
    """Add the pixels ``members`` (in order) to the per-cell sums ``plate`` (5, h*w): colour, defocus, count."""
    one = f32(1.0)
    for i in range(members.shape[0]):
        p = members[i]
        cell = (p // W) // factor * w + (p % W) // factor
        plate[0, cell] += colour[0, p]
        plate[1, cell] += colour[1, p]
        plate[2, cell] += colour[2, p]
        plate[3, cell] += flat_d[p]
        plate[4, cell] += one


@njit(cache=True)
def plate_grid(plate, cells_per, grid):
    """``grid = plate / cells_per`` (5, h, w) and the plate's reach: the largest ``|defocus|`` of a covered
    cell (0 if none)."""
    _, h, w = grid.shape
    tiny = f32(1e-12)
    reach = f32(0.0)
    for c in range(5):
        for i in range(h):
            for j in range(w):
                grid[c, i, j] = plate[c, i * w + j] / cells_per
    for i in range(h):
        for j in range(w):
            cov = grid[4, i, j]
            if cov > 0:
                v = grid[3, i, j] / max(cov, tiny)
                reach = max(reach, max(v, -v))
    return reach


@njit(cache=True)
def distance_grid(grid, factor, dist):
    """Euclidean distance (cells, times ``factor``, float32) of every cell of (h, w) to the nearest cell with
    coverage ``grid[4] > 0``: exact squared distances (a column pass, then the lower envelope of parabolas along
    the rows), square-rooted in float64 as scipy's exact EDT does. At least one cell must be covered."""
    _, h, w = grid.shape
    big = np.inf
    col = np.empty((h, w), dtype=np.float64)  # squared distance along the column
    for j in range(w):
        last = -1
        for i in range(h):
            if grid[4, i, j] > 0:
                last = i
            col[i, j] = big if last < 0 else float((i - last) * (i - last))
        last = -1
        for i in range(h - 1, -1, -1):
            if grid[4, i, j] > 0:
                last = i
            if last >= 0:
                col[i, j] = min(col[i, j], float((last - i) * (last - i)))
    sites = np.empty(w, dtype=np.int64)
    edges = np.empty(w + 1, dtype=np.float64)
    fsq = factor
    for i in range(h):
        k = -1
        for q in range(w):
            fq = col[i, q]
            if fq == big:
                continue
            while True:
                if k < 0:
                    k = 0
                    sites[0] = q
                    edges[0] = -big
                    edges[1] = big
                    break
                p = sites[k]
                s = ((fq + q * q) - (col[i, p] + p * p)) / (2.0 * (q - p))
                if s <= edges[k]:
                    k -= 1
                    continue
                k += 1
                sites[k] = q
                edges[k] = s
                edges[k + 1] = big
                break
        if k < 0:  # no covered cell on this row's columns (cannot happen with one covered cell in the grid)
            for q in range(w):
                dist[i, q] = f32(np.inf)
            continue
        m = 0
        for q in range(w):
            while edges[m + 1] < q:
                m += 1
            p = sites[m]
            dist[i, q] = f32(math.sqrt((q - p) * (q - p) + col[i, p])) * f32(fsq)


@njit(cache=True)
def _level_shapes(h, w):
    n = 1
    hh, ww = h, w
    while hh > 1 or ww > 1:
        hh, ww = (hh + 1) // 2, (ww + 1) // 2
        n += 1
    shapes = np.empty((n, 2), dtype=np.int64)
    hh, ww = h, w
    for level in range(n):
        shapes[level, 0] = hh
        shapes[level, 1] = ww
        hh, ww = (hh + 1) // 2, (ww + 1) // 2
    return shapes


@njit(cache=True, inline="always")
def _fma(a, b, c):
    """``a * b + c`` rounded once to float32 (the product is exact in float64), as torch's CPU bilinear
    upsampling computes its weighted sums (fused multiply-adds)."""
    return f32(np.float64(a) * np.float64(b) + np.float64(c))


@njit(cache=True)
def push_pull(grid, threshold, filled):
    """:func:`.layered._push_pull` of ``grid`` (5, h, w) into ``filled`` (4, h, w): pull = 2x2 means of the
    zero-padded levels down to one cell, push = bilinear (align_corners=False) upsampling blended with
    ``alpha = clamp(coverage / threshold, 0, 1)``, in the order of operations of the torch ops."""
    _, h, w = grid.shape
    shapes = _level_shapes(h, w)
    n_levels = shapes.shape[0]
    offsets = np.zeros(n_levels + 1, dtype=np.int64)
    for level in range(n_levels):
        offsets[level + 1] = offsets[level] + shapes[level, 0] * shapes[level, 1]
    pyramid = np.empty((5, offsets[n_levels]), dtype=np.float32)  # level 0 is grid itself (not copied)
    zero = f32(0.0)
    quarter = f32(4.0)
    for level in range(1, n_levels):
        fh, fw = shapes[level - 1, 0], shapes[level - 1, 1]
        ch, cw = shapes[level, 0], shapes[level, 1]
        for c in range(5):
            for i in range(ch):
                for j in range(cw):
                    s = zero
                    for di in range(2):
                        y = 2 * i + di
                        for dj in range(2):
                            x = 2 * j + dj
                            if y < fh and x < fw:
                                if level == 1:
                                    s += grid[c, y, x]
                                else:
                                    s += pyramid[c, offsets[level - 1] + y * fw + x]
                            else:
                                s += zero
                    pyramid[c, offsets[level] + i * cw + j] = s / quarter
    tiny = f32(1e-12)
    one = f32(1.0)
    half = f32(0.5)
    if n_levels == 1:  # a single cell
        cov = max(grid[4, 0, 0], tiny)
        for c in range(4):
            filled[c, 0, 0] = grid[c, 0, 0] / cov
        return
    top = offsets[n_levels - 1]
    cov = max(pyramid[4, top], tiny)
    coarse = np.empty((4, 1, 1), dtype=np.float32)
    for c in range(4):
        coarse[c, 0, 0] = pyramid[c, top] / cov
    for level in range(n_levels - 2, -1, -1):
        fh, fw = shapes[level, 0], shapes[level, 1]
        ch, cw = shapes[level + 1, 0], shapes[level + 1, 1]
        value = np.empty((4, fh, fw), dtype=np.float32) if level > 0 else filled
        for i in range(fh):
            sy = max(half * (f32(i) + half) - half, zero)
            y0 = int(sy)
            y1 = y0 + 1 if y0 < ch - 1 else y0
            ly1 = sy - f32(y0)
            ly0 = one - ly1
            for j in range(fw):
                sx = max(half * (f32(j) + half) - half, zero)
                x0 = int(sx)
                x1 = x0 + 1 if x0 < cw - 1 else x0
                lx1 = sx - f32(x0)
                lx0 = one - lx1
                if level == 0:
                    cov = grid[4, i, j]
                else:
                    cov = pyramid[4, offsets[level] + i * fw + j]
                alpha = min(max(cov / threshold, zero), one)
                cov = max(cov, tiny)
                for c in range(4):
                    top_row = _fma(coarse[c, y0, x0], lx0, coarse[c, y0, x1] * lx1)
                    bottom_row = _fma(coarse[c, y1, x0], lx0, coarse[c, y1, x1] * lx1)
                    up = _fma(top_row, ly0, bottom_row * ly1)
                    if level == 0:
                        g = grid[c, i, j]
                    else:
                        g = pyramid[c, offsets[level] + i * fw + j]
                    value[c, i, j] = alpha * (g / cov) + (one - alpha) * up
        coarse = value


@njit(cache=True)
def _cell_position(t, W, factor, h, w):
    """Fractional grid position (float32, clamped inside) of pixel ``t``, as :func:`.layered.hidden_layer`."""
    half = f32(0.5)
    fy = (f32(t // W) + half) / f32(factor) - half
    fx = (f32(t % W) + half) / f32(factor) - half
    fy = min(max(fy, f32(0.0)), f32(h - 1))
    fx = min(max(fx, f32(0.0)), f32(w - 1))
    return fy, fx


@njit(cache=True)
def hidden_candidates(targets, radius, dist, plate_reach, W, factor, cand):
    """Mark in ``cand`` the targets with farther content within their radius + the plate's reach (+ a cell);
    returns how many."""
    h, w = dist.shape
    n = 0
    pr = f32(plate_reach)
    ff = f32(factor)
    for i in range(targets.shape[0]):
        t = targets[i]
        fy, fx = _cell_position(t, W, factor, h, w)
        iy = min(max(int(np.rint(fy)), 0), h - 1)
        ix = min(max(int(np.rint(fx)), 0), w - 1)
        ok = dist[iy, ix] <= (radius[t] + pr) + ff
        cand[i] = ok
        if ok:
            n += 1
    return n


@njit(cache=True)
def hidden_samples(targets, cand, radius, dist, filled, W, factor, has, out_c, out_d):
    """Bilinear samples of ``filled`` (4, h, w) at the candidates; a target gets its hidden sample
    (``has[t] = True``, colour ``out_c[:, t]``, defocus ``out_d[t]``) when the content lies within its radius
    plus the sample's radius (plus a cell)."""
    h, w = dist.shape
    one = f32(1.0)
    ff = f32(factor)
    for i in range(targets.shape[0]):
        if not cand[i]:
            continue
        t = targets[i]
        fy, fx = _cell_position(t, W, factor, h, w)
        y0 = min(max(int(np.floor(fy)), 0), h - 1)
        x0 = min(max(int(np.floor(fx)), 0), w - 1)
        y1 = min(y0 + 1, h - 1)
        x1 = min(x0 + 1, w - 1)
        wy = fy - f32(y0)
        wx = fx - f32(x0)
        s3 = ((filled[3, y0, x0] * (one - wx) + filled[3, y0, x1] * wx) * (one - wy)
              + (filled[3, y1, x0] * (one - wx) + filled[3, y1, x1] * wx) * wy)
        d = dist[min(max(int(np.rint(fy)), 0), h - 1), min(max(int(np.rint(fx)), 0), w - 1)]
        if not (d <= (radius[t] + abs(s3)) + ff):
            continue
        has[t] = True
        out_d[t] = s3
        for c in range(3):
            out_c[c, t] = ((filled[c, y0, x0] * (one - wx) + filled[c, y0, x1] * wx) * (one - wy)
                           + (filled[c, y1, x0] * (one - wx) + filled[c, y1, x1] * wx) * wy)


# ------------------------------------------------------------------------------------------- source lists
@njit(cache=True, inline="always")
def _parts(u, pair):
    """The records of a source split ``(1 - u, u)`` between slabs ``lo`` and ``lo + 1``: ``(lower alone, upper
    alone, both paired)`` flags; a paired record lives in the upper slab and writes the lower part too."""
    one = f32(1.0)
    has_lo = one - u > 0
    has_up = u > 0
    both = pair and has_lo and has_up
    return has_lo and not both, has_up and not both, both


@njit(cache=True, parallel=True)
def count_sources(lower, upper_w, hidden_of, h_lower, h_upper, pair, H, W, counts):
    """Records per (slab, row) into ``counts`` (n_slabs, H): every pixel's two tent parts and its hidden
    sample's two, those with coverage > 0; with ``pair`` the two parts of one source make one record."""
    for y in prange(H):
        for x in range(W):
            p = y * W + x
            lo_only, up_only, both = _parts(upper_w[p], pair)
            if lo_only:
                counts[lower[p], y] += 1
            if up_only or both:
                counts[lower[p] + 1, y] += 1
            k = hidden_of[p]
            if k >= 0:
                lo_only, up_only, both = _parts(h_upper[k], pair)
                if lo_only:
                    counts[h_lower[k], y] += 1
                if up_only or both:
                    counts[h_lower[k] + 1, y] += 1


@njit(cache=True, inline="always")
def _put(s, x, e, cov, cr, cg, cb, weight, src_x, src_entry, src_cov, premult):
    src_x[s] = x
    src_entry[s] = e
    src_cov[s] = cov
    premult[s, 0] = (cr * cov) * weight
    premult[s, 1] = (cg * cov) * weight
    premult[s, 2] = (cb * cov) * weight
    premult[s, 3] = cov * weight


@njit(cache=True, inline="always")
def _put_source(y, x, e, u, lo, cr, cg, cb, weight, pair, bucket_fill, H, src_x, src_entry, src_cov, premult,
                partner, paired):
    one = f32(1.0)
    lo_only, up_only, both = _parts(u, pair)
    if lo_only:
        s = bucket_fill[lo * H + y]
        bucket_fill[lo * H + y] = s + 1
        _put(s, x, e, one - u, cr, cg, cb, weight, src_x, src_entry, src_cov, premult)
        paired[s] = False
    if up_only or both:
        s = bucket_fill[(lo + 1) * H + y]
        bucket_fill[(lo + 1) * H + y] = s + 1
        _put(s, x, e, u, cr, cg, cb, weight, src_x, src_entry, src_cov, premult)
        paired[s] = both
        if both:
            cov = one - u
            partner[s, 0] = (cr * cov) * weight
            partner[s, 1] = (cg * cov) * weight
            partner[s, 2] = (cb * cov) * weight
            partner[s, 3] = cov * weight


@njit(cache=True, parallel=True)
def fill_sources(lower, upper_w, hidden_of, h_lower, h_upper, pair, colour, hidden_colour, mass, H, W, bucket_start,
                 src_x, src_entry, src_cov, premult, partner, paired):
    """Write every record into its (slab, row) bucket (raster order: a pixel holds at most one record per
    slab): column, entry (pixel ``p``, or ``H*W + k`` for hidden sample ``k``), coverage, premultiplied unit-mass
    weights ``(colour * coverage / mass, coverage / mass)`` and, for a paired record (``paired``), those of its
    lower part (``partner``, slab - 1)."""
    one = f32(1.0)
    n = H * W
    bucket_fill = bucket_start[:-1].copy()
    for y in prange(H):
        for x in range(W):
            p = y * W + x
            _put_source(y, x, p, upper_w[p], lower[p], colour[0, p], colour[1, p], colour[2, p], one / mass[p], pair,
                        bucket_fill, H, src_x, src_entry, src_cov, premult, partner, paired)
            k = hidden_of[p]
            if k >= 0:
                _put_source(y, x, n + k, h_upper[k], h_lower[k], hidden_colour[0, k], hidden_colour[1, k],
                            hidden_colour[2, k], one / mass[n + k], pair, bucket_fill, H, src_x, src_entry, src_cov,
                            premult, partner, paired)


@njit(cache=True)
def slab_boxes(bucket_start, src_x, src_entry, paired, reach, big, entry_d, n_slabs, H, W, ay, boxes, row_reach):
    """Per slab: ``boxes[j] = (y0, y1, x0, x1, win_y, reach_x)``: the bounding box of its sources (own records
    and the lower parts of slab ``j + 1``'s paired records) grown by their largest ``|defocus|`` (ceil) + 2 px,
    clipped to the image (as the torch path's crops), the kernel's row window in that box, and how far
    (columns) a source's writes can reach (that growth; the image width when scaled rows above the tables may
    overshoot); all 0 for an empty slab. ``row_reach[j * H + y]``: the largest row reach of bucket (j, y), -1
    if empty."""
    stats = np.zeros((n_slabs, 4), dtype=np.int64)  # ymin, ymax, xmin, xmax
    stats[:, 0] = H
    stats[:, 1] = -1
    stats[:, 2] = W
    stats[:, 3] = -1
    dmax = np.zeros(n_slabs, dtype=np.float32)
    scaled = np.zeros(n_slabs, dtype=np.bool_)
    for j in range(n_slabs):
        for y in range(H):
            b = j * H + y
            best = -1
            for s in range(bucket_start[b], bucket_start[b + 1]):
                e = src_entry[s]
                best = max(best, reach[e])
                for t in range(j, j - 2, -1):
                    if t < j and not paired[s]:
                        break
                    stats[t, 0] = min(stats[t, 0], y)
                    stats[t, 1] = max(stats[t, 1], y)
                    stats[t, 2] = min(stats[t, 2], src_x[s])
                    stats[t, 3] = max(stats[t, 3], src_x[s])
                    dmax[t] = max(dmax[t], abs(entry_d[e]))
                    scaled[t] = scaled[t] or big[e]
            row_reach[b] = best
    for j in range(n_slabs):
        if stats[j, 1] < 0:
            boxes[j, :] = 0
            continue
        grow = int(math.ceil(float(dmax[j]))) + 2
        y0, y1 = max(stats[j, 0] - grow, 0), min(stats[j, 1] + grow + 1, H)
        boxes[j, 0] = y0
        boxes[j, 1] = y1
        boxes[j, 2] = max(stats[j, 2] - grow, 0)
        boxes[j, 3] = min(stats[j, 3] + grow + 1, W)
        boxes[j, 4] = min(math.floor(float(dmax[j]) * ay) + 1, y1 - y0 - 1)
        boxes[j, 5] = W if scaled[j] else grow


# ----------------------------------------------------------------------------------------------- compositing
@njit(cache=True, parallel=True)
def layered_rows(row_lo, row_hi, n_slabs, gap, boxes, bucket_start, row_reach, src_x, src_entry, premult, partner,
                 paired, src_reach, src_level, scale, entry_cols, entry_coef, left_flat, right_flat, height_flat,
                 n_rows, n_runs, half_rows, settled):
    """Output rows ``row_lo .. row_hi - 1`` of the layered composite into ``settled`` (4, H, W) float32
    (premultiplied colour, coverage): near to far, ``settled += splat_j * clamp(1 - occluder, 0, 1)`` where the
    occluder sums the splat coverage of the slabs at least ``gap`` steps nearer. Slab ``j``'s splat row is the
    fast kernel's over its box ``boxes[j]`` (writes clipped to the box, as the torch path's crops), summed in
    float64 and rounded to float32; a paired record of slab ``j`` also writes its lower part into slab
    ``j - 1``'s row (same columns and coefficients), resolved next. Per record: ``src_reach`` its row reach,
    ``src_level`` its table level (``-1 - level`` for radii above the tables: rows scaled by ``scale[entry]``)."""
    _, H, W = settled.shape
    one = f32(1.0)
    zero = f32(0.0)
    level_stride = n_rows * n_runs
    for ty in prange(row_lo, row_hi):
        diffs = np.zeros((2, W + 1, 4), dtype=np.float64)  # slab j's row and slab j - 1's (alternating)
        span = np.zeros((2, 2), dtype=np.int64)  # per row buffer: the columns written, first .. last - 1
        span[:, 0] = W
        occluder = np.zeros(W, dtype=np.float32)
        # coverage rows of the last `gap` slabs, nonzero only in columns ring_span[slot, 0] .. ring_span[slot, 1]
        ring = np.zeros((gap, W), dtype=np.float32)
        ring_span = np.zeros((gap, 2), dtype=np.int64)
        for j in range(n_slabs - 1, -1, -1):
            slot = j % gap
            due = j + gap
            if due < n_slabs and boxes[due, 0] <= ty < boxes[due, 1]:
                for x in range(ring_span[slot, 0], ring_span[slot, 1]):
                    occluder[x] += ring[slot, x]
            ring_span[slot, 0] = 0
            ring_span[slot, 1] = 0
            cur = j & 1
            nxt = 1 - cur
            y0, y1, x0, x1, win_y, grow = boxes[j, 0], boxes[j, 1], boxes[j, 2], boxes[j, 3], boxes[j, 4], boxes[j, 5]
            if not (y0 <= ty < y1):
                span[cur, 0] = W
                span[cur, 1] = 0
                continue
            diff = diffs[cur]
            bw = x1 - x0
            lower_box = j > 0 and boxes[j - 1, 0] <= ty < boxes[j - 1, 1]
            nx0 = boxes[j - 1, 2] if lower_box else 0
            nbw = boxes[j - 1, 3] - nx0 if lower_box else 0
            ngrow = boxes[j - 1, 5] if lower_box else 0
            diff_next = diffs[nxt]
            for dy in range(-win_y, win_y + 1):
                sy = ty - dy
                if sy < y0 or sy >= y1:
                    continue
                b = j * H + sy
                ady = abs(dy)
                if row_reach[b] < ady:
                    continue
                first_x, last_x = src_x[bucket_start[b]], src_x[bucket_start[b + 1] - 1]
                span[cur, 0] = min(span[cur, 0], max(first_x - x0 - grow, 0))
                span[cur, 1] = max(span[cur, 1], min(last_x - x0 + grow + 1, bw))
                if lower_box:
                    span[nxt, 0] = min(span[nxt, 0], max(first_x - nx0 - ngrow, 0))
                    span[nxt, 1] = max(span[nxt, 1], min(last_x - nx0 + ngrow + 1, nbw))
                table_row = dy + half_rows
                for s in range(bucket_start[b], bucket_start[b + 1]):
                    if src_reach[s] < ady:
                        continue
                    both = paired[s]
                    lev = src_level[s]
                    if lev >= 0:
                        if table_row < 0 or table_row >= n_rows:
                            continue
                        e_start = lev * level_stride + table_row * n_runs
                        splat_table_row(diff, src_x[s] - x0, e_start, n_runs, height_flat, entry_cols, entry_coef,
                                        premult[s, 0], premult[s, 1], premult[s, 2], premult[s, 3], bw)
                        if both:
                            splat_table_row(diff_next, src_x[s] - nx0, e_start, n_runs, height_flat, entry_cols,
                                            entry_coef, partner[s, 0], partner[s, 1], partner[s, 2], partner[s, 3],
                                            nbw)
                    else:
                        e = src_entry[s]
                        lev = -1 - lev
                        splat_scaled_row(diff, src_x[s] - x0, bw, dy, scale[e], lev, n_rows, n_runs, half_rows,
                                         left_flat, right_flat, height_flat, premult[s, 0], premult[s, 1],
                                         premult[s, 2], premult[s, 3])
                        if both:
                            splat_scaled_row(diff_next, src_x[s] - nx0, nbw, dy, scale[e], lev, n_rows, n_runs,
                                             half_rows, left_flat, right_flat, height_flat, partner[s, 0],
                                             partner[s, 1], partner[s, 2], partner[s, 3])
            first, last = span[cur, 0], span[cur, 1]
            span[cur, 0] = W
            span[cur, 1] = 0
            if last <= first:
                continue
            # resolve the box row (running sums), composite it, keep its coverage for the occluder: zero before
            # `first` (nothing written there), constant from `last` on (to the box end unless exactly zero)
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            end = last
            i = first
            while i < end:
                s0 += diff[i, 0]
                s1 += diff[i, 1]
                s2 += diff[i, 2]
                s3 += diff[i, 3]
                x = x0 + i
                keep = min(max(one - occluder[x], zero), one)
                c3 = f32(s3)
                settled[0, ty, x] += f32(s0) * keep
                settled[1, ty, x] += f32(s1) * keep
                settled[2, ty, x] += f32(s2) * keep
                settled[3, ty, x] += c3 * keep
                ring[slot, x] = c3
                i += 1
                if i == last and not (s0 == 0.0 and s1 == 0.0 and s2 == 0.0 and s3 == 0.0):
                    end = bw
            ring_span[slot, 0] = x0 + first
            ring_span[slot, 1] = x0 + end
            for i in range(first, min(end + 1, bw + 1)):
                diff[i, 0] = 0.0
                diff[i, 1] = 0.0
                diff[i, 2] = 0.0
                diff[i, 3] = 0.0

"""The numba kernels of :mod:`.numba_backend` (imported only when numba is available and a kernel is needed).

They are module-level functions on purpose: numba's on-disk cache (``cache=True``) keys a function by its code
and its closure, and a closure holding another compiled function pickles differently in every process, so
kernels defined inside a function were recompiled by every new process (seconds each). Defined here, the
first process on a machine compiles them and every later one loads them from ``__pycache__``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

f32 = np.float32


@njit(cache=True, inline="always")
def add_weighted(arr, i, weight, p0, p1, p2, p3):
    """``arr[i] += (p0, p1, p2, p3) * weight`` (a row of a (W, 4) difference array or accumulator)."""
    arr[i, 0] += p0 * weight
    arr[i, 1] += p1 * weight
    arr[i, 2] += p2 * weight
    arr[i, 3] += p3 * weight


@njit(cache=True, inline="always")
def splat_table_row(diff, x, e_start, n_runs, heights, entry_cols, entry_coef, p0, p1, p2, p3, W):
    """The runs of one table row (entries ``e_start .. e_start + n_runs - 1``) of a source at column ``x``:
    each run's four precomputed difference-array writes (:func:`.numba_runtime.numba_entry_writes`)."""
    for run in range(n_runs):
        e = e_start + run
        if heights[e] == 0:
            continue
        for q in range(4):
            add_weighted(diff, min(max(x + entry_cols[e, q], 0), W), entry_coef[e, q], p0, p1, p2, p3)


@njit(cache=True, inline="always")
def splat_scaled_row(diff, x, W, dy, sc, level, n_rows, n_runs, half_rows, left_flat, right_flat, height_flat,
                     p0, p1, p2, p3):
    """Kernel row ``dy`` of a source above the tables (its table level's rows read at ``dy / sc``) at column ``x``
    of a difference array of width ``W + 1``: each run's four writes (fractional coverage at both ends), columns
    clipped to ``[0, W]``."""
    one = f32(1.0)
    half = f32(0.5)
    xf = f32(x)
    for run in range(n_runs):
        # left, right: xf + the scaled run ends (the sum as the table run moved by xf)
        left, right, height = table_run(left_flat, right_flat, height_flat, n_rows, n_runs, half_rows, level, sc,
                                        f32(dy), xf, run)
        if height == 0:
            continue
        pos_l = left + half
        pos_r = right + half
        cell_l = np.floor(pos_l)
        cell_r = np.floor(pos_r)
        cover_l = cell_l + one - pos_l
        cover_r = pos_r - cell_r
        cl = min(max(cell_l, f32(-1.0)), f32(W))  # clamp as floats first (huge radii)
        cr = min(max(cell_r, f32(-1.0)), f32(W))
        cols = (min(max(int(cl), 0), W), min(max(int(cl) + 1, 0), W),
                min(max(int(cr), 0), W), min(max(int(cr) + 1, 0), W))
        coefs = (cover_l * height, (one - cover_l) * height, (cover_r - one) * height, -cover_r * height)
        for q in range(4):
            add_weighted(diff, cols[q], coefs[q], p0, p1, p2, p3)


@njit(cache=True, inline="always")
def scaled_entries(n_rows, n_runs, half_rows, level, sc, row, run):
    """The two table entries (run ``run`` of the rows around ``row / sc`` of table level ``level``, rows clamped to
    the table) and the interpolation weight of the second: ``(e0, e1, frac)``."""
    u = row / sc
    u0 = np.floor(u)
    frac = u - u0
    i0 = min(max(int(u0) + half_rows, 0), n_rows - 1)
    i1 = min(max(int(u0) + 1 + half_rows, 0), n_rows - 1)
    base = level * (n_rows * n_runs)
    return base + i0 * n_runs + run, base + i1 * n_runs + run, frac


@njit(cache=True, inline="always")
def table_run(lf, rf, hf, n_rows, n_runs, half_rows, level, sc, row, x_off, run):
    """Run ``run`` of a row-run table at fractional kernel row ``row`` (px), scaled by ``sc``, moved by
    ``x_off``: ``(left, right, height)`` interpolated linearly between the two nearest table rows."""
    one = f32(1.0)
    e0, e1, frac = scaled_entries(n_rows, n_runs, half_rows, level, sc, row, run)
    left = (lf[e0] * (one - frac) + lf[e1] * frac) * sc + x_off
    right = (rf[e0] * (one - frac) + rf[e1] * frac) * sc + x_off
    height = hf[e0] * (one - frac) + hf[e1] * frac
    return left, right, height


@njit(cache=True, fastmath=False)
def resolve_row(diff, acc, ty, out):
    """Output row ``ty``: the running sum of the difference array ``diff`` (W + 1, 4) plus the directly
    accumulated ``acc`` (W, 4; zero rows = none), divided by its weight channel; with a 4-channel ``out``
    the four sums are written as they are (the un-normalised splat with ``coverage``, or ``raw``). Shared by
    the lens kernels (:mod:`._lens_numba_kernels`)."""
    with_acc = acc.shape[0] > 0
    raw = out.shape[0] == 4
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    for x in range(out.shape[2]):
        s0 += diff[x, 0]
        s1 += diff[x, 1]
        s2 += diff[x, 2]
        s3 += diff[x, 3]
        if with_acc:  # (a running sum never is -0.0, so adding a zero acc changes no bit)
            a0 = acc[x, 0]
            a1 = acc[x, 1]
            a2 = acc[x, 2]
            a3 = acc[x, 3]
        if raw:
            out[0, ty, x] = s0 + a0
            out[1, ty, x] = s1 + a1
            out[2, ty, x] = s2 + a2
            out[3, ty, x] = s3 + a3
        else:
            w = s3 + a3
            out[0, ty, x] = (s0 + a0) / w
            out[1, ty, x] = (s1 + a1) / w
            out[2, ty, x] = (s2 + a2) / w

@njit(cache=True, fastmath=False, parallel=True)
def fast_rows(row_lo, row_hi, win_y, row_reach, reach, premult, level, big, scale, entry_cols, entry_coef,
              left_flat, right_flat, height_flat, n_rows, n_runs, half_rows, out):
    H, W = reach.shape
    level_stride = n_rows * n_runs
    no_acc = np.zeros((0, 4), dtype=np.float64)
    for ty in prange(row_lo, row_hi):
        diff = np.zeros((W + 1, 4), dtype=np.float64)
        for dy in range(-win_y, win_y + 1):
            sy = ty - dy
            if sy < 0 or sy >= H:
                continue
            ady = abs(dy)
            table_row = dy + half_rows
            if row_reach[sy] < ady:
                continue
            for x in range(W):
                if reach[sy, x] < ady:
                    continue
                base = level[sy, x] * level_stride
                p0 = premult[sy, x, 0]
                p1 = premult[sy, x, 1]
                p2 = premult[sy, x, 2]
                p3 = premult[sy, x, 3]
                if not big[sy, x]:
                    if table_row < 0 or table_row >= n_rows:
                        continue
                    splat_table_row(diff, x, base + table_row * n_runs, n_runs, height_flat, entry_cols, entry_coef,
                                    p0, p1, p2, p3, W)
                else:
                    splat_scaled_row(diff, x, W, dy, scale[sy, x], level[sy, x], n_rows, n_runs, half_rows,
                                     left_flat, right_flat, height_flat, p0, p1, p2, p3)
        resolve_row(diff, no_acc, ty, out)


@njit(cache=True, fastmath=False, parallel=True)
def exact_rows(row_lo, row_hi, win_y, row_radius, radius, premult, thr, lo, dist_tab, edge_tab, polygon, out):
    H, W = radius.shape
    n_cols = thr.shape[1]
    win_x = n_cols - 1
    one = f32(1.0)
    minus_eight = f32(-8.0)
    for ty in prange(row_lo, row_hi):
        diff = np.zeros((W + 1, 4), dtype=np.float64)
        acc = np.zeros((W, 4), dtype=np.float64)
        for dy in range(-win_y, win_y + 1):
            sy = ty - dy
            if sy < 0 or sy >= H:
                continue
            row = dy + win_y
            lo_row = lo[row, 0]
            if row_radius[sy] < lo_row:
                continue
            m_prev = 0
            m2_prev = 0
            for x in range(W):
                r = radius[sy, x]
                if r < lo_row:
                    continue  # no cell of this source on row dy
                # interior: k < m (thr < r); rim: m <= k < m2 (lo <= r <= thr); both tables increase with k:
                # walk from the previous source's answers (neighbours have similar radii), exact
                m = m_prev
                while m < n_cols and thr[row, m] < r:
                    m += 1
                while m > 0 and thr[row, m - 1] >= r:
                    m -= 1
                m2 = max(m2_prev, m)
                while m2 < n_cols and lo[row, m2] <= r:
                    m2 += 1
                while m2 > m and lo[row, m2 - 1] > r:
                    m2 -= 1
                m_prev = m
                m2_prev = m2
                p0 = premult[sy, x, 0]
                p1 = premult[sy, x, 1]
                p2 = premult[sy, x, 2]
                p3 = premult[sy, x, 3]
                if m > 0:
                    left = max(x - (m - 1), 0)
                    right = min(x + m, W)
                    add_weighted(diff, left, one, p0, p1, p2, p3)
                    add_weighted(diff, right, -one, p0, p1, p2, p3)
                # rim cells: profile 0.5 + 0.5*tanh(4*(edge - dist)) == 1 / (1 + exp(-8*(edge - dist)))
                for k in range(m, min(m2, max(x + 1, W - x))):
                    dist = dist_tab[row, k]
                    tx = x + k
                    if tx < W:
                        edge = r * edge_tab[row, win_x + k] if polygon else r
                        prof = one / (one + np.exp(minus_eight * (edge - dist)))
                        add_weighted(acc, tx, prof, p0, p1, p2, p3)
                    tx = x - k
                    if tx >= 0 and k > 0:
                        if polygon:
                            edge = r * edge_tab[row, win_x - k]
                            prof = one / (one + np.exp(minus_eight * (edge - dist)))
                        elif x + k >= W:
                            prof = one / (one + np.exp(minus_eight * (r - dist)))
                        add_weighted(acc, tx, prof, p0, p1, p2, p3)
        resolve_row(diff, acc, ty, out)

@njit(cache=True, fastmath=False, parallel=True)
def dilate_rows(row_lo, row_hi, reach_rows, row_reach, reach, radius, value, dist_tab, floor_log2, levels, empty,
                out):
    H, W = radius.shape
    n_cols = dist_tab.shape[1]
    for ty in prange(row_lo, row_hi):
        table = np.full((levels, W), empty, dtype=np.int32)
        for dy in range(-reach_rows, reach_rows + 1):
            sy = ty - dy
            if sy < 0 or sy >= H:
                continue
            ady = abs(dy)
            if row_reach[sy] < ady:
                continue
            k_prev = 0
            for x in range(W):
                if reach[sy, x] < ady:
                    continue
                r = radius[sy, x]
                # m = number of k with dist_tab[ady, k] <= r (>= 1 here): walk from the previous source's
                # answer (neighbours have similar radii), exact
                k = k_prev
                while k + 1 < n_cols and dist_tab[ady, k + 1] <= r:
                    k += 1
                while k > 0 and dist_tab[ady, k] > r:
                    k -= 1
                m = k + 1
                k_prev = k
                lo_x = max(x - (m - 1), 0)
                hi_x = min(x + (m - 1), W - 1)
                length = hi_x - lo_x + 1
                lev = floor_log2[length]
                v = value[sy, x]
                if v > table[lev, lo_x]:
                    table[lev, lo_x] = v
                p = hi_x - (1 << lev) + 1
                if v > table[lev, p]:
                    table[lev, p] = v
        for j in range(levels - 1, 0, -1):
            step = 1 << (j - 1)
            for i in range(W):
                t = table[j, i]
                if t > table[j - 1, i]:
                    table[j - 1, i] = t
                if i + step < W and t > table[j - 1, i + step]:
                    table[j - 1, i + step] = t
        for x in range(W):
            out[ty, x] = max(table[0, x], value[ty, x])

"""The numba kernels of :mod:`.lens_numba` (lens character: cat's eye, swirl, ring), imported only when numba is
available and a lens kernel is needed.

Module-level functions on purpose, as :mod:`._numba_kernels`: numba's on-disk cache (``cache=True``) then
hits in every later process instead of recompiling. :func:`fast_fields` prepares every source once (lens
fields, energy factor, premultiplied weights, table levels: no (H, W) torch temporaries), :func:`fast_rows`
splats them (see :mod:`.lens_numba` for the arithmetic), :func:`exact_rows` is the exact lens kernel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._numba_kernels import add_weighted, resolve_row, splat_table_row, table_run

f32 = np.float32


@njit(cache=True, inline="always")
def row_at(lf, rf, hf, n_rows, n_runs, base, row, frac, x_off, run):
    """:func:`._numba_kernels.table_run` for a table radius (scale 1) at kernel row ``row + frac`` (``row`` an
    integer table row index, ``frac`` in [0, 1)), moved by ``x_off``."""
    one = f32(1.0)
    i0 = min(max(row, 0), n_rows - 1)
    i1 = min(max(row + 1, 0), n_rows - 1)
    e0 = base + i0 * n_runs + run
    e1 = base + i1 * n_runs + run
    g = one - frac
    left = lf[e0] * g + lf[e1] * frac + x_off
    right = rf[e0] * g + rf[e1] * frac + x_off
    height = hf[e0] * g + hf[e1] * frac
    return left, right, height


@njit(cache=True, inline="always")
def write_segment(diff, x, left, right, height, p0, p1, p2, p3, W):
    if not (right > left) or height == 0:
        return
    one = f32(1.0)
    pos_l = left + f32(0.5)
    pos_r = right + f32(0.5)
    cell_l = np.floor(pos_l)
    cell_r = np.floor(pos_r)
    cover_l = cell_l + one - pos_l
    cover_r = pos_r - cell_r
    cl = min(max(cell_l + f32(x), f32(-1.0)), f32(W))
    cr = min(max(cell_r + f32(x), f32(-1.0)), f32(W))
    cols = (min(max(int(cl), 0), W), min(max(int(cl) + 1, 0), W), min(max(int(cr), 0), W),
            min(max(int(cr) + 1, 0), W))
    coefs = (cover_l * height, (one - cover_l) * height, (cover_r - one) * height, -cover_r * height)
    for q in range(4):
        add_weighted(diff, cols[q], coefs[q], p0, p1, p2, p3)


@njit(cache=True, inline="always")
def clipped_segment(diff, x, left, right, height, cl, cr, ch, weight, p0, p1, p2, p3, W):
    """:func:`write_segment` of the run ``(left, right, height)`` clipped to ``[cl, cr]`` and height ``ch``,
    times ``weight``; returns the clipped run (nothing written where it is empty)."""
    left = max(left, cl)
    right = min(right, cr)
    height = min(height, ch)
    write_segment(diff, x, left, right, weight * height, p0, p1, p2, p3, W)
    return left, right, height


@njit(cache=True, inline="always")
def level_scale(R, n_levels, base_radius, lpp):
    if R <= base_radius:
        return min(int(np.round(R * lpp)), n_levels - 1), f32(1.0)
    return n_levels - 1, f32(R / base_radius)


@njit(cache=True, inline="always")
def chord(cx, cy, rad, yrow):
    """x extent (scaled units) of the disc (cx, cy, rad) on the row yrow; (1, 0) when empty."""
    if rad <= 0.0:
        return 1.0, 0.0
    h2 = rad * rad - (yrow - cy) * (yrow - cy)
    if h2 < 0.0:
        return 1.0, 0.0
    h = math.sqrt(h2)
    return cx - h, cx + h


@njit(cache=True, inline="always")
def cells(lo, hi, scale, limit):
    """Integer offsets k with lo <= k/scale <= hi, clipped to [-limit, limit]; (1, 0) when empty."""
    if hi < lo:
        return 1, 0
    a = max(int(math.ceil(lo * scale - 1e-9)), -limit)
    b = min(int(math.floor(hi * scale + 1e-9)), limit)
    return a, b


@njit(cache=True, inline="always")
def lemon_value(kx, ky, r, ox, oy, polygon, a1, a2, rotation, sin_a2):
    """Exact float32 profile min(A(p + o), C(p - o)) at scaled offset (kx, ky)."""
    one = f32(1.0)
    m8 = f32(-8.0)
    xa = f32(kx + ox)
    ya = f32(ky + oy)
    dist_a = np.sqrt(xa * xa + ya * ya)
    edge = r
    if polygon:
        phi = np.fmod(np.abs(np.arctan2(ya, xa) + rotation), a1)
        edge = r * sin_a2 / np.sin(phi + a2)
    a = one / (one + np.exp(m8 * (edge - dist_a)))
    xc = f32(kx - ox)
    yc = f32(ky - oy)
    dist_c = np.sqrt(xc * xc + yc * yc)
    c = one / (one + np.exp(m8 * (r - dist_c)))
    return min(a, c)


@njit(cache=True, fastmath=False, parallel=True)
def exact_rows(row_lo, row_hi, win_y, row_radius, radius, premult, sxs, sys_, ring, ax, ay, inner_frac, delta,
               polygon, a1, a2, rotation, ring_inner, out):
    H, W = radius.shape
    sin_a2 = f32(math.sin(a2))
    for ty in prange(row_lo, row_hi):
        diff = np.zeros((W + 1, 4), dtype=np.float64)
        acc = np.zeros((W, 4), dtype=np.float64)
        for dy in range(-win_y, win_y + 1):
            sy = ty - dy
            if sy < 0 or sy >= H:
                continue
            ady = abs(dy)
            if (ady - 1) / ay > row_radius[sy]:
                continue
            yrow = dy / ay
            for x in range(W):
                r32 = radius[sy, x]
                r = float(r32)
                wy = math.floor(r32 * f32(ay)) + 1
                if ady > wy:
                    continue
                wx = int(math.floor(r32 * f32(ax))) + 1
                ox = float(sxs[sy, x]) * r
                oy = float(sys_[sy, x]) * r
                p0 = premult[sy, x, 0]
                p1 = premult[sy, x, 1]
                p2 = premult[sy, x, 2]
                p3 = premult[sy, x, 3]
                rw = float(ring[sy, x])
                for part in range(2 if rw > 0 else 1):
                    scale = 1.0 if part == 0 else ring_inner
                    R = r * scale
                    pox = ox * scale
                    poy = oy * scale
                    weight = 1.0 if part == 0 else -rw
                    # support: aperture circumcircle at -o and clip circle at +o, radius R + delta
                    l1, h1 = chord(-pox, -poy, R + delta, yrow)
                    l2, h2 = chord(pox, poy, R + delta, yrow)
                    s_lo, s_hi = cells(max(l1, l2), min(h1, h2), ax, wx)
                    if s_hi < s_lo:
                        continue
                    # interior: inscribed circle of the aperture and the clip circle, shrunk by delta
                    l1, h1 = chord(-pox, -poy, R * inner_frac - delta, yrow)
                    l2, h2 = chord(pox, poy, R - delta, yrow)
                    i_lo, i_hi = cells(max(l1, l2), min(h1, h2), ax, wx)
                    if part == 1:  # inner interior only where the outer lemon is interior too
                        l1, h1 = chord(-ox, -oy, r * inner_frac - delta, yrow)
                        l2, h2 = chord(ox, oy, r - delta, yrow)
                        o_lo, o_hi = cells(max(l1, l2), min(h1, h2), ax, wx)
                        i_lo = max(i_lo, o_lo)
                        i_hi = min(i_hi, o_hi)
                    if i_hi >= i_lo:
                        left = max(x + i_lo, 0)
                        right = min(x + i_hi + 1, W)
                        if right > left:
                            add_weighted(diff, left, weight, p0, p1, p2, p3)
                            add_weighted(diff, right, -weight, p0, p1, p2, p3)
                    for k in range(max(s_lo, -x), min(s_hi, W - 1 - x) + 1):
                        if i_lo <= k <= i_hi:
                            continue
                        kx = k / ax
                        value = lemon_value(kx, yrow, f32(R), pox, poy, polygon, a1, a2, rotation, sin_a2)
                        if part == 1:
                            value = min(value, lemon_value(kx, yrow, r32, ox, oy, polygon, a1, a2, rotation,
                                                           sin_a2))
                        tx = x + k
                        add_weighted(acc, tx, weight * value, p0, p1, p2, p3)
        resolve_row(diff, acc, ty, out)


@njit(cache=True, fastmath=False, parallel=True)
def fast_fields(radius, img, denom, top, left, frame_h, frame_w, shifted, gain, cos_a, sin_a, ax, ay, max_clip,
                ring_amount, mass, mass_steps, ring_inner, n_levels, base_radius, lpp, big_reach, src_f, src_x,
                src_i, reach):
    """Per-source lens state of the fast kernel, one pass over the sources (the arithmetic of
    :meth:`bokehme_core.aperture.Lens.fields` and :func:`.lens_kernels.lens_premult`, fused).

    radius (H, W) px; img (C, H, W) linear colour (C = 3) or premultiplied colour + coverage (C = 4, the
    energy-preserving splat: sources with coverage 0 get reach -1); denom (H, W) the plain weight's denominator
    (``r^2 + 0.2``, or the fast kernel's mass with coverage); the tile's place ``(top, left)`` in a
    ``frame_h x frame_w`` frame; mass (2, radii, clips, angles + 1) the energy table of
    :func:`bokehme_core.aperture._mass_volume`. Writes ``src_f`` (H, W, 10) float32: the premultiplied weights
    ``p0..p3``, the shape offset ``ox`` (px), the ring weight and the fractional parts of the four row offsets;
    ``src_x`` (H, W, 3) float32: ``oy`` (px) and the row scales of the outer and inner shape (read only for
    scaled rows: the hot loop streams through compact records); ``src_i`` (H, W, 8) int16: the table levels of
    the outer and inner shape, the kind (1 = the plain fast kernel: no shift, no ring, a table radius; 2 / 3 =
    table radii for the outer and inner shape, shifted / ring only; 0 = scaled rows), the integer parts of the row offsets ``oy, -oy,
    RING_INNER*oy, -RING_INNER*oy`` and the last row offset at which the inner shape has runs; ``reach`` (H, W)
    int32: ``floor(r * ay) + 1``.
    """
    H, W = radius.shape
    coverage = img.shape[0] == 4
    cy = (frame_h - 1) / 2.0
    cx = (frame_w - 1) / 2.0
    half_diag = max(math.hypot(cx, cy), 1e-6)
    n_r = mass.shape[1]
    n_c = mass.shape[2]
    n_a = mass.shape[3]
    two_pi = 2.0 * math.pi
    for y in prange(H):
        ys = (y + top - cy) / half_diag
        for x in range(W):
            r = radius[y, x]
            fade = min(max(r - f32(1.0), f32(0.0)), f32(1.0))
            sx = f32(0.0)
            sy = f32(0.0)
            if shifted:
                xs = (x + left - cx) / half_diag
                rho = math.sqrt(xs * xs + ys * ys)
                clip = min(gain * rho, max_clip)
                ux = (cos_a * xs + sin_a * ys) / ax
                uy = (-sin_a * xs + cos_a * ys) / ay
                length = max(math.sqrt(ux * ux + uy * uy), 1e-12)
                half = 0.5 * clip / length
                sx = f32(ux * half) * fade
                sy = f32(uy * half) * fade
            rw = f32(ring_amount) * fade
            # energy: trilinear in (radius, clip distance, direction) as grid_sample(align_corners=True, border)
            ri = min(max(float(r) * mass_steps, 0.0), n_r - 1.0)
            ci = min(max(2.0 * math.sqrt(float(sx) * sx + float(sy) * sy), 0.0), max_clip) / max_clip * (n_c - 1)
            ang = math.atan2(float(sy), float(sx))
            if ang < 0.0:
                ang += two_pi
            ti = min(max(ang / two_pi * (n_a - 1), 0.0), n_a - 1.0)
            r0 = min(int(ri), n_r - 2) if n_r > 1 else 0
            c0 = min(int(ci), n_c - 2) if n_c > 1 else 0
            t0 = min(int(ti), n_a - 2) if n_a > 1 else 0
            fr = ri - r0
            fc = ci - c0
            ft = ti - t0
            r1 = min(r0 + 1, n_r - 1)
            c1 = min(c0 + 1, n_c - 1)
            t1 = min(t0 + 1, n_a - 1)
            outer_inner = np.zeros(2)
            for k in range(2):
                v00 = mass[k, r0, c0, t0] * (1 - ft) + mass[k, r0, c0, t1] * ft
                v01 = mass[k, r0, c1, t0] * (1 - ft) + mass[k, r0, c1, t1] * ft
                v10 = mass[k, r1, c0, t0] * (1 - ft) + mass[k, r1, c0, t1] * ft
                v11 = mass[k, r1, c1, t0] * (1 - ft) + mass[k, r1, c1, t1] * ft
                outer_inner[k] = (v00 * (1 - fc) + v01 * fc) * (1 - fr) + (v10 * (1 - fc) + v11 * fc) * fr
            norm = f32(1.0) / (f32(outer_inner[0]) - rw * f32(outer_inner[1]))
            w = norm / denom[y, x]
            src_f[y, x, 0] = img[0, y, x] * w
            src_f[y, x, 1] = img[1, y, x] * w
            src_f[y, x, 2] = img[2, y, x] * w
            src_f[y, x, 3] = img[3, y, x] * w if coverage else w
            ox = sx * r * f32(ax)
            oy = sy * r * f32(ay)
            src_f[y, x, 4] = ox
            src_x[y, x, 0] = oy
            src_f[y, x, 5] = rw
            lev, sc = level_scale(r, n_levels, base_radius, lpp)
            ilev, isc = level_scale(r * ring_inner, n_levels, base_radius, lpp)
            src_x[y, x, 1] = sc
            src_x[y, x, 2] = isc
            src_i[y, x, 0] = lev
            src_i[y, x, 1] = ilev
            rch = int(math.floor(r * f32(ay))) + 1
            if coverage and not (img[3, y, x] > 0):
                rch = -1
            reach[y, x] = rch
            # table rows of the inner shape beyond its window (level rounding and interpolation: + 2) hold no run
            src_i[y, x, 7] = int(math.floor(r * ring_inner * f32(ay))) + 3
            kind = 0
            if ox == 0 and oy == 0 and rw == 0 and rch <= big_reach:
                kind = 1
            elif sc == 1 and isc == 1:
                kind = 2 if (ox != 0 or oy != 0) else 3
            src_i[y, x, 2] = kind
            # kind 2 (table radii): the rows read are dy + offset with the offsets below (shape, clip circle,
            # inner shape, inner clip), whose integer and fractional parts are the same for every row
            iy = oy * ring_inner
            for j in range(4):
                offset = oy if j == 0 else (-oy if j == 1 else (iy if j == 2 else -iy))
                whole = np.floor(offset)
                src_i[y, x, 3 + j] = int(whole)
                src_f[y, x, 6 + j] = offset - whole


@njit(cache=True, fastmath=False, parallel=True)
def fast_rows(row_lo, row_hi, win_y, row_reach, reach, src_f, src_x, src_i, entry_cols, entry_coef, s_l, s_r, s_h, c_l,
              c_r, c_h, n_rows, n_runs, half_rows, ring_inner, out):
    """Target rows ``row_lo .. row_hi`` of the fast lens scatter (sources prepared by :func:`fast_fields`)."""
    H, W = reach.shape
    no_acc = np.zeros((0, 4), dtype=np.float64)
    big = f32(1e30)
    one = f32(1.0)
    for ty in prange(row_lo, row_hi):
        diff = np.zeros((W + 1, 4), dtype=np.float64)
        for dy in range(-win_y, win_y + 1):
            sy = ty - dy
            if sy < 0 or sy >= H:
                continue
            ady = abs(dy)
            if row_reach[sy] < ady:
                continue
            fdy = f32(dy)
            table_row = dy + half_rows
            for x in range(W):
                if reach[sy, x] < ady:
                    continue
                p0 = src_f[sy, x, 0]
                p1 = src_f[sy, x, 1]
                p2 = src_f[sy, x, 2]
                p3 = src_f[sy, x, 3]
                lev = src_i[sy, x, 0]
                if src_i[sy, x, 2] == 1:  # the plain fast kernel (table radius, no shift, no ring)
                    if table_row < 0 or table_row >= n_rows:
                        continue
                    splat_table_row(diff, x, lev * (n_rows * n_runs) + table_row * n_runs, n_runs, s_h, entry_cols,
                                    entry_coef, p0, p1, p2, p3, W)
                    continue
                sx_ = src_f[sy, x, 4]
                rw = src_f[sy, x, 5]
                kind = src_i[sy, x, 2]
                if kind >= 2:  # table radii: fixed row offsets (see fast_fields); 2 = shifted, 3 = ring only
                    t_base = lev * (n_rows * n_runs)
                    t_row = table_row + src_i[sy, x, 3]
                    t_frac = src_f[sy, x, 6]
                    t_shifted = kind == 2
                    t_ring = rw > 0 and abs(dy + src_i[sy, x, 5]) <= src_i[sy, x, 7]
                    t_ix = sx_ * ring_inner
                    t_ibase = src_i[sy, x, 1] * (n_rows * n_runs)
                    t_irow = table_row + src_i[sy, x, 5]
                    t_ifrac = src_f[sy, x, 8]
                    t_cl = -big
                    t_cr = big
                    t_ch = big
                    t_icl = -big
                    t_icr = big
                    t_ich = big
                    if t_shifted:
                        t_cl, t_cr, t_ch = row_at(c_l, c_r, c_h, n_rows, 1, lev * n_rows,
                                                  table_row + src_i[sy, x, 4], src_f[sy, x, 7], sx_, 0)
                        if not (t_cr > t_cl) or t_ch == 0:
                            continue  # the clip circle misses this row: so does the lemon (and its ring)
                        if t_ring:
                            t_icl, t_icr, t_ich = row_at(c_l, c_r, c_h, n_rows, 1, src_i[sy, x, 1] * n_rows,
                                                         table_row + src_i[sy, x, 6], src_f[sy, x, 9], t_ix, 0)
                            if not (t_icr > t_icl) or t_ich == 0:
                                t_ring = False
                    for run in range(n_runs):
                        left, right, height = row_at(s_l, s_r, s_h, n_rows, n_runs, t_base, t_row, t_frac, -sx_,
                                                     run)
                        left, right, height = clipped_segment(diff, x, left, right, height, t_cl, t_cr, t_ch, one,
                                                              p0, p1, p2, p3, W)
                        if t_ring and right > left and height != 0:
                            il, ir, ih = row_at(s_l, s_r, s_h, n_rows, n_runs, t_ibase, t_irow, t_ifrac, -t_ix, run)
                            clipped_segment(diff, x, il, ir, ih, max(t_icl, left), min(t_icr, right),
                                            min(t_ich, height), -rw, p0, p1, p2, p3, W)
                    continue
                sy_ = src_x[sy, x, 0]
                sc = src_x[sy, x, 1]
                shifted = sx_ != 0 or sy_ != 0
                cl = -big
                cr = big
                ch = big
                if shifted:
                    cl, cr, ch = table_run(c_l, c_r, c_h, n_rows, 1, half_rows, lev, sc, fdy - sy_, sx_, 0)
                    if not (cr > cl) or ch == 0:
                        continue  # the clip circle misses this row: so does the lemon (and its ring)
                with_ring = rw > 0
                ilev = lev
                isc = sc
                ix = sx_
                iy = sy_
                icl = -big
                icr = big
                ich = big
                if with_ring:
                    ilev = src_i[sy, x, 1]
                    isc = src_x[sy, x, 2]
                    ix = sx_ * ring_inner
                    iy = sy_ * ring_inner
                    if shifted:
                        icl, icr, ich = table_run(c_l, c_r, c_h, n_rows, 1, half_rows, ilev, isc, fdy - iy, ix, 0)
                        if not (icr > icl) or ich == 0:
                            with_ring = False
                for run in range(n_runs):
                    left, right, height = table_run(s_l, s_r, s_h, n_rows, n_runs, half_rows, lev, sc, fdy + sy_,
                                                    -sx_, run)
                    left, right, height = clipped_segment(diff, x, left, right, height, cl, cr, ch, one, p0, p1, p2,
                                                          p3, W)
                    if with_ring and right > left and height != 0:
                        il, ir, ih = table_run(s_l, s_r, s_h, n_rows, n_runs, half_rows, ilev, isc, fdy + iy, -ix,
                                               run)
                        clipped_segment(diff, x, il, ir, ih, max(icl, left), min(icr, right), min(ich, height), -rw,
                                        p0, p1, p2, p3, W)
        resolve_row(diff, no_acc, ty, out)

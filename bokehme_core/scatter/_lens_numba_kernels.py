"""The numba kernels of :mod:`.lens_numba` (lens character: cat's eye, swirl, ring), imported only when numba is
available and a lens kernel is needed.

Module-level functions on purpose, as :mod:`._numba_kernels`: numba's on-disk cache (``cache=True``) then
hits in every later process instead of recompiling. :func:`fast_fields` prepares every source once (lens
fields, the mass of its lens kernel as :func:`fast_rows` writes it, premultiplied weights, table rows and the rows
its lemon and ring reach: no (H, W) torch temporaries), :func:`fast_rows` splats them (see :mod:`.lens_numba` for
the arithmetic), :func:`exact_rows` is the exact lens kernel.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._numba_kernels import add_weighted, resolve_row, scaled_entries

f32 = np.float32
f64 = np.float64
u64 = np.uint64

#: words of a source record of the fast kernel (float32 / int32 views of one buffer, see :func:`fast_fields`)
RECORD = 16
#: source kinds of the fast kernel: scaled rows (radius above the tables, or a lemon touching a table's padding
#: row), the plain table entries, table radii with a shifted clip circle, table radii with a ring only
SCALED, PLAIN, SHIFTED, RING_ONLY = 0, 1, 2, 3


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
def fast_fields(y_lo, y_hi, radius, img, top, left, frame_h, frame_w, shifted, gain, cos_a, sin_a, ax, ay, max_clip,
                ring_amount, plain_mass, shape_t, clip_t, ring_inner, n_levels, base_radius, lpp, big_reach, n_rows,
                n_runs, half_rows, row_lo, row_hi, clip_lo, clip_hi, rec_f, rec_i, span, row_span):
    """Per-source lens state of the fast kernel, one pass over the source rows ``y_lo .. y_hi - 1`` (the clip vectors of
    :meth:`bokehme_core.aperture.LensShape.fields` and the weights of :func:`.lens_kernels.scatter_fast_lens`, fused).

    radius (H, W) px; img (C, H, W) linear colour (C = 3) or premultiplied colour + coverage (C = 4, the
    energy-preserving splat: sources with coverage 0 reach no row); the tile's place ``(top, left)`` in a
    ``frame_h x frame_w`` frame; plain_mass (levels, half_rows + 1) float64: the mass of the plain kernel rows
    ``|dy| <= k`` of each table level; shape_t / clip_t the interleaved run tables of :func:`fast_rows`; row_lo /
    row_hi (levels,) the first and last row of each level of the aperture's run table with a run (clip_lo /
    clip_hi: the clip circle's table).

    The weight of a source is its plain kernel's energy (``plain mass / (r^2 + 0.2)``, or 1 with coverage) over
    the mass of its lens kernel as :func:`fast_rows` writes it (:func:`table_mass`, :func:`scaled_mass`: the
    box segments' areas summed row by row), so every lens kernel keeps the plain kernel's energy at every radius
    and position (before the image borders clip it).

    Writes one record of :data:`RECORD` words per source, ``rec_f`` / ``rec_i`` (H, W, RECORD) float32 / int32
    views of one buffer: 0-3 the premultiplied weights, 4 the shape offset ``ox`` (px), 5 minus the ring weight,
    6-9 the fractional parts of the row offsets ``oy, -oy, RING_INNER*oy, -RING_INNER*oy`` (shape, clip circle,
    inner shape, inner clip circle), 10 ``RING_INNER*ox``, 11-14 the table entries of kernel row 0 of the four
    (level and integer row offset folded in), 15 the kind. Kind :data:`SCALED` keeps ``oy``, the outer and inner
    row scales in 6-8 and the outer and inner levels in 11 and 13; :data:`PLAIN` its entry in 11.
    ``span`` (H, W, 4) int16: the kernel rows ``dy`` the source can reach (within its window ``floor(r*ay) + 1``
    and where the tables read have runs), then those of its ring (empty: first > last); ``row_span`` (H, 2)
    int32: the least first and the largest last row of each source row.
    """
    H, W = radius.shape
    coverage = img.shape[0] == 4
    cy = (frame_h - 1) / 2.0
    cx = (frame_w - 1) / 2.0
    half_diag = max(math.hypot(cx, cy), 1e-6)
    last_row = n_rows - 1
    inv_half_diag = 1.0 / half_diag
    inv_ax = 1.0 / ax
    inv_ay = 1.0 / ay
    for y in prange(y_lo, y_hi):
        ys = (y + top - cy) * inv_half_diag
        first_all = 1 << 30
        last_all = -(1 << 30)
        # first the shifts of the whole row (short independent iterations: the square roots and divisions of
        # neighbouring sources overlap), then the rest per source
        shift_x = np.zeros(W, dtype=np.float32)
        shift_y = np.zeros(W, dtype=np.float32)
        if shifted:
            for x in range(W):
                fade = min(max(radius[y, x] - f32(1.0), f32(0.0)), f32(1.0))
                if not fade > 0:  # no shift, as 0 * the clip vector
                    continue
                xs = (x + left - cx) * inv_half_diag
                rho = math.sqrt(xs * xs + ys * ys)
                clip = min(gain * rho, max_clip)
                ux = (cos_a * xs + sin_a * ys) * inv_ax
                uy = (-sin_a * xs + cos_a * ys) * inv_ay
                length = max(math.sqrt(ux * ux + uy * uy), 1e-12)
                half = 0.5 * clip / length
                shift_x[x] = f32(ux * half) * fade
                shift_y[x] = f32(uy * half) * fade
        for x in range(W):
            r = radius[y, x]
            fade = min(max(r - f32(1.0), f32(0.0)), f32(1.0))
            sx = shift_x[x]
            sy = shift_y[x]
            rw = f32(ring_amount) * fade
            ox = sx * r * f32(ax)
            oy = sy * r * f32(ay)
            rec_f[y, x, 4] = ox
            rec_f[y, x, 5] = -rw
            lev, sc = level_scale(r, n_levels, base_radius, lpp)
            ilev, isc = level_scale(r * ring_inner, n_levels, base_radius, lpp)
            reach = int(math.floor(r * f32(ay))) + 1
            if coverage and not (img[3, y, x] > 0):
                reach = -1
            with_ring = rw > 0
            kind = SCALED
            if ox == 0 and oy == 0 and rw == 0 and reach <= big_reach:
                kind = PLAIN
            elif sc == 1 and isc == 1:
                kind = SHIFTED if (ox != 0 or oy != 0) else RING_ONLY
            first = -reach
            last = reach
            ring_first = 1
            ring_last = 0
            if kind == PLAIN:
                rec_i[y, x, 11] = (lev * n_rows + half_rows) * n_runs
                first = max(first, row_lo[lev] - half_rows)
                last = min(last, row_hi[lev] - half_rows)
            elif kind != SCALED:
                # table radii: kernel row dy reads the table rows dy + offset and the next one (the offsets'
                # fractional parts are the same for every row); only the rows where all the tables read have runs
                # matter, and those never reach a table's padding rows (else: scaled rows, which clamp)
                iy = oy * ring_inner
                whole = (np.floor(oy), np.floor(-oy), np.floor(iy), np.floor(-iy))
                rec_f[y, x, 6] = oy - whole[0]
                rec_f[y, x, 7] = -oy - whole[1]
                rec_f[y, x, 8] = iy - whole[2]
                rec_f[y, x, 9] = -iy - whole[3]
                rec_f[y, x, 10] = ox * ring_inner
                shape_row = half_rows + int(whole[0])
                clip_row = half_rows + int(whole[1])
                inner_row = half_rows + int(whole[2])
                inner_clip_row = half_rows + int(whole[3])
                rec_i[y, x, 11] = (lev * n_rows + shape_row) * n_runs
                rec_i[y, x, 12] = lev * n_rows + clip_row
                rec_i[y, x, 13] = (ilev * n_rows + inner_row) * n_runs
                rec_i[y, x, 14] = ilev * n_rows + inner_clip_row
                edge = row_lo[lev] == 0 or row_hi[lev] == last_row
                first = max(first, row_lo[lev] - 1 - shape_row)
                last = min(last, row_hi[lev] - shape_row)
                if kind == SHIFTED:
                    edge = edge or clip_lo[lev] == 0 or clip_hi[lev] == last_row
                    first = max(first, clip_lo[lev] - 1 - clip_row)
                    last = min(last, clip_hi[lev] - clip_row)
                if with_ring:
                    edge = edge or row_lo[ilev] == 0 or row_hi[ilev] == last_row
                    ring_first = max(first, row_lo[ilev] - 1 - inner_row)
                    ring_last = min(last, row_hi[ilev] - inner_row)
                    if kind == SHIFTED:
                        edge = edge or clip_lo[ilev] == 0 or clip_hi[ilev] == last_row
                        ring_first = max(ring_first, clip_lo[ilev] - 1 - inner_clip_row)
                        ring_last = min(ring_last, clip_hi[ilev] - inner_clip_row)
                if edge:
                    kind = SCALED
                    first = -reach
                    last = reach
            if kind == SCALED:
                rec_f[y, x, 6] = oy
                rec_f[y, x, 7] = sc
                rec_f[y, x, 8] = isc
                rec_i[y, x, 11] = lev
                rec_i[y, x, 13] = ilev
                if with_ring:
                    ring_first = first
                    ring_last = last
            # the weights: the plain kernel's energy over the mass of this lens kernel as fast_rows writes it
            plain = plain_mass[lev, min(max(reach, 0), half_rows)]
            if kind == PLAIN:
                lemon = plain
            elif kind == SCALED:
                lemon, plain = scaled_mass(shape_t, clip_t, n_rows, n_runs, half_rows, lev, sc, ilev, isc, ox, oy,
                                           ring_inner, rec_f[y, x, 5], first, last, ring_first, ring_last, reach,
                                           not coverage)
            else:
                lemon = table_mass(shape_t, clip_t, n_runs, kind == SHIFTED, first, last, ring_first, ring_last,
                                   rec_i[y, x, 11], rec_f[y, x, 6], rec_i[y, x, 12], rec_f[y, x, 7], rec_i[y, x, 13],
                                   rec_f[y, x, 8], rec_i[y, x, 14], rec_f[y, x, 9], ox, rec_f[y, x, 10],
                                   rec_f[y, x, 5])
            energy = 1.0 if coverage else plain / f64(r * r + f32(0.2))
            w = f32(energy / lemon) if lemon > 0 else f32(0.0)
            rec_f[y, x, 0] = img[0, y, x] * w
            rec_f[y, x, 1] = img[1, y, x] * w
            rec_f[y, x, 2] = img[2, y, x] * w
            rec_f[y, x, 3] = img[3, y, x] * w if coverage else w
            rec_i[y, x, 15] = kind
            span[y, x, 0] = first
            span[y, x, 1] = last
            span[y, x, 2] = ring_first
            span[y, x, 3] = ring_last
            if first <= last:
                first_all = min(first_all, first)
                last_all = max(last_all, last)
        row_span[y, 0] = first_all
        row_span[y, 1] = last_all


@njit(cache=True, inline="always")
def table_row(table, e, step, frac, x_off):
    """Run ``(left, right, height)`` between the interleaved table entries ``e`` and ``e + step`` (the next table
    row) at ``frac`` in [0, 1), moved by ``x_off`` (unsigned entries: no negative-index code in the hot loop)."""
    g = f32(1.0) - frac
    e0 = u64(e)
    e1 = u64(e + step)
    left = table[e0, 0] * g + table[e1, 0] * frac + x_off
    right = table[e0, 1] * g + table[e1, 1] * frac + x_off
    height = table[e0, 2] * g + table[e1, 2] * frac
    return left, right, height


@njit(cache=True, inline="always")
def scaled_row(table, n_rows, n_runs, half_rows, level, sc, row, x_off, run):
    """:func:`._numba_kernels.table_run` on an interleaved table: run ``run`` at fractional kernel row ``row``
    (px) of a table level scaled by ``sc``, moved by ``x_off``."""
    one = f32(1.0)
    e0, e1, frac = scaled_entries(n_rows, n_runs, half_rows, level, sc, row, run)
    left = (table[e0, 0] * (one - frac) + table[e1, 0] * frac) * sc + x_off
    right = (table[e0, 1] * (one - frac) + table[e1, 1] * frac) * sc + x_off
    height = table[e0, 2] * (one - frac) + table[e1, 2] * frac
    return left, right, height


@njit(cache=True, inline="always")
def clip_box(left, right, height, clip_left, clip_right, clip_height):
    """A row segment ``[left, right]`` of ``height`` clipped to another (the clip circle's, or the outer shape's
    for the ring): ``(max of the lefts, min of the rights, min of the heights)``; empty when right <= left."""
    return max(left, clip_left), min(right, clip_right), min(height, clip_height)


@njit(cache=True, inline="always")
def segment_mass(left, right, height):
    """Mass of the box segment ``[left, right]`` of ``height`` as :func:`box_segment` writes it (0 when it writes
    nothing)."""
    if not (right > left) or height == 0:
        return 0.0
    return f64(right - left) * f64(height)


@njit(cache=True, inline="always")
def table_mass(shape_t, clip_t, n_runs, clipped, first, last, ring_first, ring_last, shape_e, shape_frac, clip_e,
               clip_frac, inner_e, inner_frac, inner_clip_e, inner_clip_frac, ox, ix, ring_weight):
    """Mass of the lens kernel of a table-radius source (kinds :data:`SHIFTED`, ``clipped``, and
    :data:`RING_ONLY`): the segments of :func:`fast_rows` on rows ``first .. last`` (same float32 arithmetic,
    the record's fields as arguments), summed instead of written. Without its early exits: a row the clip circle
    misses gives an empty segment anyway (and so does its ring's), and the sum stays the same."""
    big = f32(1e30)
    zero = f32(0.0)
    total = 0.0
    for dy in range(first, last + 1):
        cl = -big
        cr = big
        ch = big
        if clipped:
            cl, cr, ch = table_row(clip_t, clip_e + dy, 1, clip_frac, ox)
        ring = ring_first <= dy and dy <= ring_last
        icl = -big
        icr = big
        ich = big
        if ring and clipped:
            icl, icr, ich = table_row(clip_t, inner_clip_e + dy, 1, inner_clip_frac, ix)
        for run in range(n_runs):
            left, right, height = table_row(shape_t, shape_e + dy * n_runs + run, n_runs, shape_frac, -ox)
            left, right, height = clip_box(left, right, height, cl, cr, ch)
            total += f64(max(right - left, zero)) * f64(height)
            if ring:
                il, ir, ih = table_row(shape_t, inner_e + dy * n_runs + run, n_runs, inner_frac, -ix)
                il, ir, ih = clip_box(il, ir, ih, max(icl, left), min(icr, right), min(ich, height))
                total += f64(max(ir - il, zero)) * f64(ring_weight * ih)
    return total


@njit(cache=True, inline="always")
def scaled_clips(clip_t, n_rows, half_rows, lev, sc, ilev, isc, fdy, ox, oy, ix, iy, shifted, ring):
    """The clip circle's segment on kernel row ``fdy`` of a :data:`SCALED` source moved by ``(ox, oy)``, and the
    inner lemon's (``(ix, iy)``) when ``ring``: ``(keep, cl, cr, ch, ring, icl, icr, ich)``; ``keep`` False when the
    row is empty (the clip misses it), ``ring`` False when the inner lemon does. Unshifted sources: no clip."""
    big = f32(1e30)
    cl = -big
    cr = big
    ch = big
    if shifted:
        cl, cr, ch = scaled_row(clip_t, n_rows, 1, half_rows, lev, sc, fdy - oy, ox, 0)
        if not (cr > cl) or ch == 0:
            return False, cl, cr, ch, False, cl, cr, ch
    icl = -big
    icr = big
    ich = big
    if ring and shifted:
        icl, icr, ich = scaled_row(clip_t, n_rows, 1, half_rows, ilev, isc, fdy - iy, ix, 0)
        if not (icr > icl) or ich == 0:
            ring = False
    return True, cl, cr, ch, ring, icl, icr, ich


@njit(cache=True, inline="always")
def scaled_mass(shape_t, clip_t, n_rows, n_runs, half_rows, lev, sc, ilev, isc, ox, oy, ring_inner, ring_weight,
                first, last, ring_first, ring_last, reach, with_plain):
    """``(lens mass, plain mass)`` of a :data:`SCALED` source: its segments of :func:`fast_rows` on rows
    ``first .. last`` summed (same float32 arithmetic), and with ``with_plain`` the mass of the plain kernel's
    scaled rows ``|dy| <= reach`` (else 0)."""
    shifted = ox != 0 or oy != 0
    iy = oy * ring_inner
    ix = ox * ring_inner
    total = 0.0
    for dy in range(first, last + 1):
        fdy = f32(dy)
        keep, cl, cr, ch, ring, icl, icr, ich = scaled_clips(clip_t, n_rows, half_rows, lev, sc, ilev, isc, fdy, ox,
                                                             oy, ix, iy, shifted, ring_first <= dy and dy <= ring_last)
        if not keep:
            continue
        for run in range(n_runs):
            left, right, height = scaled_row(shape_t, n_rows, n_runs, half_rows, lev, sc, fdy + oy, -ox, run)
            left, right, height = clip_box(left, right, height, cl, cr, ch)
            total += segment_mass(left, right, height)
            if ring and right > left and height != 0:
                il, ir, ih = scaled_row(shape_t, n_rows, n_runs, half_rows, ilev, isc, fdy + iy, -ix, run)
                il, ir, ih = clip_box(il, ir, ih, max(icl, left), min(icr, right), min(ich, height))
                total += segment_mass(il, ir, ring_weight * ih)
    plain = 0.0
    if with_plain:
        for dy in range(-reach, reach + 1):
            for run in range(n_runs):
                left, right, height = scaled_row(shape_t, n_rows, n_runs, half_rows, lev, sc, f32(dy), f32(0.0), run)
                plain += segment_mass(left, right, height)
    return total, plain


@intrinsic
def add_scaled(typingctx, diff, k, col, weight, q0, q1, q2, q3):
    """``diff[k, col, :] += (q0, q1, q2, q3) * weight`` for a C-contiguous (rows, W + 1, 4) float64 ``diff``, as
    one 4-lane float64 multiply and add (no index wraparound: ``k``, ``col`` >= 0).

    Lane for lane the arithmetic of the scalar ``diff[k, col, c] += q_c * f64(weight)`` (same bits); numba keeps
    LLVM's SLP vectoriser off, and as four scalar updates these writes took about half of the fast lens kernel's
    time.
    """
    if not (isinstance(diff, types.Array) and diff.dtype == types.float64 and diff.ndim == 3 and diff.layout == "C"):
        return None
    signature = types.void(diff, k, col, weight, q0, q1, q2, q3)

    def codegen(context, builder, sig, args):
        array = context.make_array(sig.args[0])(context, builder, args[0])
        index = [context.cast(builder, args[i], sig.args[i], types.intp) for i in (1, 2)]
        index.append(context.get_constant(types.intp, 0))
        pointer = cgutils.get_item_pointer(context, builder, sig.args[0], array, index, wraparound=False)
        lanes = ir.VectorType(ir.DoubleType(), 4)
        pointer = builder.bitcast(pointer, lanes.as_pointer())
        undefined = ir.Constant(lanes, ir.Undefined)
        values = undefined
        for lane in range(4):
            value = context.cast(builder, args[4 + lane], sig.args[4 + lane], types.float64)
            values = builder.insert_element(values, value, ir.Constant(ir.IntType(32), lane))
        scale = context.cast(builder, args[3], sig.args[3], types.float64)
        scale = builder.insert_element(undefined, scale, ir.Constant(ir.IntType(32), 0))
        scale = builder.shuffle_vector(scale, undefined, ir.Constant(ir.VectorType(ir.IntType(32), 4), [0, 0, 0, 0]))
        total = builder.fadd(builder.load(pointer, align=8), builder.fmul(values, scale))
        builder.store(total, pointer, align=8)
        return context.get_dummy_value()

    return signature, codegen


@njit(cache=True, inline="always")
def box_segment(diff, k, x, left, right, height, q0, q1, q2, q3, W, inside):
    """The box ``[x + left, x + right]`` of ``height`` into row ``k`` of the difference arrays: the four writes of
    :func:`.lens_kernels._write_segments` (fractional coverage at both ends). ``inside``: the source is far enough
    from the borders that no column needs clamping."""
    if not (right > left) or height == 0:
        return
    one = f32(1.0)
    pos_l = left + f32(0.5)
    pos_r = right + f32(0.5)
    cell_l = np.floor(pos_l)
    cell_r = np.floor(pos_r)
    cover_l = cell_l + one - pos_l
    cover_r = pos_r - cell_r
    if inside:
        col_l = int(cell_l) + x
        col_r = int(cell_r) + x
        add_scaled(diff, k, col_l, cover_l * height, q0, q1, q2, q3)
        add_scaled(diff, k, col_l + 1, (one - cover_l) * height, q0, q1, q2, q3)
        add_scaled(diff, k, col_r, (cover_r - one) * height, q0, q1, q2, q3)
        add_scaled(diff, k, col_r + 1, -cover_r * height, q0, q1, q2, q3)
    else:
        col_l = int(min(max(cell_l + f32(x), f32(-1.0)), f32(W)))  # clamp as floats first (huge radii)
        col_r = int(min(max(cell_r + f32(x), f32(-1.0)), f32(W)))
        add_scaled(diff, k, min(max(col_l, 0), W), cover_l * height, q0, q1, q2, q3)
        add_scaled(diff, k, min(col_l + 1, W), (one - cover_l) * height, q0, q1, q2, q3)
        add_scaled(diff, k, min(max(col_r, 0), W), (cover_r - one) * height, q0, q1, q2, q3)
        add_scaled(diff, k, min(col_r + 1, W), -cover_r * height, q0, q1, q2, q3)


@njit(cache=True, fastmath=False, parallel=True)
def fast_rows(row_lo, row_hi, block, win_y, row_span, span, rec_f, rec_i, shape_t, clip_t, entry_cols, entry_coef,
              margin, n_rows, n_runs, half_rows, ring_inner, out):
    """Target rows ``row_lo .. row_hi`` of the fast lens scatter (sources prepared by :func:`fast_fields`).

    Blocks of ``block`` target rows (``prange``), each with its own float64 difference arrays: the source rows that
    reach the block are read once, in order, and every source splats all its kernel rows that fall in the block
    (one record read per source and block instead of one per kernel row). The blocks do not depend on the thread
    count, nor does the result. shape_t / clip_t: the run tables interleaved, (entries, 3) ``left, right,
    height``; margin: sources with ``margin <= x < W - margin`` write no column outside the row.
    """
    H = rec_i.shape[0]
    W = rec_i.shape[1]
    big = f32(1e30)
    no_acc = np.zeros((0, 4), dtype=np.float64)
    n_blocks = (row_hi - row_lo + block - 1) // block
    for b in prange(n_blocks):
        t0 = row_lo + b * block
        t1 = min(t0 + block, row_hi)
        diff = np.zeros((t1 - t0, W + 1, 4), dtype=np.float64)
        for sy in range(max(t0 - win_y, 0), min(t1 + win_y, H)):
            d_first = t0 - sy  # kernel rows dy with t0 <= sy + dy < t1
            d_last = t1 - 1 - sy
            if row_span[sy, 1] < d_first or row_span[sy, 0] > d_last:
                continue
            usy = u64(sy)
            for x in range(W):
                ux = u64(x)
                first = max(d_first, span[usy, ux, 0])
                last = min(d_last, span[usy, ux, 1])
                if last < first:
                    continue
                kind = rec_i[usy, ux, 15]
                q0 = f64(rec_f[usy, ux, 0])
                q1 = f64(rec_f[usy, ux, 1])
                q2 = f64(rec_f[usy, ux, 2])
                q3 = f64(rec_f[usy, ux, 3])
                inside = x >= margin and x < W - margin
                ox = rec_f[usy, ux, 4]
                ring_weight = rec_f[usy, ux, 5]
                ring_first = span[usy, ux, 2]
                ring_last = span[usy, ux, 3]
                if kind == SHIFTED or kind == RING_ONLY:
                    shape_frac = rec_f[usy, ux, 6]
                    clip_frac = rec_f[usy, ux, 7]
                    inner_frac = rec_f[usy, ux, 8]
                    inner_clip_frac = rec_f[usy, ux, 9]
                    ix = rec_f[usy, ux, 10]
                    shape_e = rec_i[usy, ux, 11]
                    clip_e = rec_i[usy, ux, 12]
                    inner_e = rec_i[usy, ux, 13]
                    inner_clip_e = rec_i[usy, ux, 14]
                    for dy in range(first, last + 1):
                        k = sy + dy - t0
                        cl = -big
                        cr = big
                        ch = big
                        if kind == SHIFTED:
                            cl, cr, ch = table_row(clip_t, clip_e + dy, 1, clip_frac, ox)
                            if not (cr > cl) or ch == 0:
                                continue  # the clip circle misses this row: so does the lemon (and its ring)
                        ring = ring_first <= dy and dy <= ring_last
                        icl = -big
                        icr = big
                        ich = big
                        if ring and kind == SHIFTED:
                            icl, icr, ich = table_row(clip_t, inner_clip_e + dy, 1, inner_clip_frac, ix)
                            if not (icr > icl) or ich == 0:
                                ring = False
                        for run in range(n_runs):
                            left, right, height = table_row(shape_t, shape_e + dy * n_runs + run, n_runs, shape_frac,
                                                            -ox)
                            left, right, height = clip_box(left, right, height, cl, cr, ch)
                            box_segment(diff, k, x, left, right, height, q0, q1, q2, q3, W, inside)
                            if ring and right > left and height != 0:
                                il, ir, ih = table_row(shape_t, inner_e + dy * n_runs + run, n_runs, inner_frac, -ix)
                                il, ir, ih = clip_box(il, ir, ih, max(icl, left), min(icr, right), min(ich, height))
                                box_segment(diff, k, x, il, ir, ring_weight * ih, q0, q1, q2, q3, W, inside)
                elif kind == PLAIN:  # the plain fast kernel's precomputed writes (table radius, no shift, no ring)
                    entry = rec_i[usy, ux, 11]
                    for dy in range(first, last + 1):
                        k = sy + dy - t0
                        for run in range(n_runs):
                            e = entry + dy * n_runs + run
                            if shape_t[e, 2] == 0:
                                continue
                            for q in range(4):
                                add_scaled(diff, k, min(max(x + entry_cols[e, q], 0), W), entry_coef[e, q], q0, q1,
                                           q2, q3)
                else:  # scaled rows (radius above the tables): the table rows read at dy / scale
                    oy = rec_f[usy, ux, 6]
                    sc = rec_f[usy, ux, 7]
                    isc = rec_f[usy, ux, 8]
                    lev = rec_i[usy, ux, 11]
                    ilev = rec_i[usy, ux, 13]
                    shifted = ox != 0 or oy != 0
                    iy = oy * ring_inner
                    ix = ox * ring_inner
                    for dy in range(first, last + 1):
                        k = sy + dy - t0
                        fdy = f32(dy)
                        keep, cl, cr, ch, ring, icl, icr, ich = scaled_clips(
                            clip_t, n_rows, half_rows, lev, sc, ilev, isc, fdy, ox, oy, ix, iy, shifted,
                            ring_first <= dy and dy <= ring_last)
                        if not keep:
                            continue
                        for run in range(n_runs):
                            left, right, height = scaled_row(shape_t, n_rows, n_runs, half_rows, lev, sc, fdy + oy,
                                                             -ox, run)
                            left, right, height = clip_box(left, right, height, cl, cr, ch)
                            box_segment(diff, k, x, left, right, height, q0, q1, q2, q3, W, False)
                            if ring and right > left and height != 0:
                                il, ir, ih = scaled_row(shape_t, n_rows, n_runs, half_rows, ilev, isc, fdy + iy, -ix,
                                                        run)
                                il, ir, ih = clip_box(il, ir, ih, max(icl, left), min(icr, right), min(ich, height))
                                box_segment(diff, k, x, il, ir, ring_weight * ih, q0, q1, q2, q3, W, False)
        for ty in range(t0, t1):
            resolve_row(diff[ty - t0], no_acc, ty, out)

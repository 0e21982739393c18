"""Numba kernels with lens character (cat's eye, swirl, ring): the per-source kernels of
:class:`bokehme_core.aperture.Lens` for :func:`.numba_backend.scatter_fast_numba` and
:func:`.numba_backend.scatter_exact_numba` (which hand over here when given a lens whose shapes are not neutral).

Same structure as :mod:`.numba_backend`: a gather over target rows (``prange``), each row owning its float64
accumulators, so results do not depend on the thread count.

* fast: the arithmetic of :func:`.lens_kernels.scatter_fast_lens` (aperture run table read at the moved row,
  intersected with the moved clip circle's run, ring = the same at ``RING_INNER * r`` subtracted); sources with
  no shift and no ring (in focus, r <= 1, or at the frame centre) take the plain table entries of the fast path.
* exact: per source and row, the lemon's support and interior are intervals, from chords of circles (the
  aperture's circumcircle / inscribed circle moved by ``-o``, the clip circle moved by ``+o``): interior cells
  add 1 through the difference array, rim cells get the exact float32 profile ``min(A, C)`` (written as
  ``1 / (1 + exp(-8*(edge - dist)))``); the ring's inner lemon likewise with weight ``-ring``. Circle and
  polygon apertures (masks stay on torch, as without a lens).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import torch

from ..aperture import RING_INNER, Aperture, Lens
from .numba_backend import logged_first_calls

__all__ = ["scatter_fast_lens_numba", "scatter_exact_lens_numba"]

ROWS_PER_CALL = 64


@functools.lru_cache(maxsize=1)
def _kernels():
    from numba import njit, prange

    f32 = np.float32

    @njit(cache=True, inline="always")
    def table_run(lf, rf, hf, n_rows, n_runs, half_rows, level, sc, row, x_off, run):
        """Run ``run`` of a table at fractional kernel row ``row`` (px), scaled by ``sc``, moved by ``x_off``."""
        one = f32(1.0)
        u = row / sc
        u0 = np.floor(u)
        frac = u - u0
        i0 = min(max(int(u0) + half_rows, 0), n_rows - 1)
        i1 = min(max(int(u0) + 1 + half_rows, 0), n_rows - 1)
        base = level * (n_rows * n_runs)
        e0 = base + i0 * n_runs + run
        e1 = base + i1 * n_runs + run
        left = (lf[e0] * (one - frac) + lf[e1] * frac) * sc + x_off
        right = (rf[e0] * (one - frac) + rf[e1] * frac) * sc + x_off
        height = hf[e0] * (one - frac) + hf[e1] * frac
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
            col = cols[q]
            coef = coefs[q]
            diff[col, 0] += p0 * coef
            diff[col, 1] += p1 * coef
            diff[col, 2] += p2 * coef
            diff[col, 3] += p3 * coef

    @njit(cache=True, inline="always")
    def level_scale(R, n_levels, base_radius, lpp):
        if R <= base_radius:
            return min(int(np.round(R * lpp)), n_levels - 1), f32(1.0)
        return n_levels - 1, f32(R / base_radius)

    @njit(cache=True, fastmath=False)
    def resolve(diff, acc, ty, out):
        raw = out.shape[0] == 4
        with_acc = acc.shape[0] > 0
        s = np.zeros(4)
        for x in range(out.shape[2]):
            for c in range(4):
                s[c] += diff[x, c]
            a3 = acc[x, 3] if with_acc else 0.0
            if raw:
                for c in range(4):
                    out[c, ty, x] = s[c] + (acc[x, c] if with_acc else 0.0)
            else:
                w = s[3] + a3
                for c in range(3):
                    out[c, ty, x] = (s[c] + (acc[x, c] if with_acc else 0.0)) / w

    @njit(cache=True, fastmath=False, parallel=True)
    def fast_rows(row_lo, row_hi, win_y, row_reach, reach, radius, premult, ox, oy, ring, plain, level_plain,
                  entry_cols, entry_coef, s_l, s_r, s_h, c_l, c_r, c_h, n_rows, n_runs, half_rows, n_levels,
                  base_radius, lpp, ring_inner, with_ring, same_clip, out):
        H, W = reach.shape
        no_acc = np.zeros((0, 4), dtype=np.float64)
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
                for x in range(W):
                    if reach[sy, x] < ady:
                        continue
                    p0 = premult[sy, x, 0]
                    p1 = premult[sy, x, 1]
                    p2 = premult[sy, x, 2]
                    p3 = premult[sy, x, 3]
                    if plain[sy, x]:  # the plain fast kernel (table radius, no shift, no ring)
                        table_row = dy + half_rows
                        if table_row < 0 or table_row >= n_rows:
                            continue
                        base = level_plain[sy, x] * (n_rows * n_runs)
                        for run in range(n_runs):
                            e = base + table_row * n_runs + run
                            if s_h[e] == 0:
                                continue
                            for q in range(4):
                                col = min(max(x + entry_cols[e, q], 0), W)
                                coef = entry_coef[e, q]
                                diff[col, 0] += p0 * coef
                                diff[col, 1] += p1 * coef
                                diff[col, 2] += p2 * coef
                                diff[col, 3] += p3 * coef
                        continue
                    r = radius[sy, x]
                    sx_ = ox[sy, x]
                    sy_ = oy[sy, x]
                    shifted = sx_ != 0 or sy_ != 0
                    lev, sc = level_scale(r, n_levels, base_radius, lpp)
                    cl = f32(-1e30)
                    cr = f32(1e30)
                    ch = f32(1e30)
                    if shifted:
                        cl, cr, ch = table_run(c_l, c_r, c_h, n_rows, 1, half_rows, lev, sc, fdy - sy_, sx_, 0)
                    rw = ring[sy, x]
                    ilev = lev
                    isc = sc
                    ix = sx_
                    iy = sy_
                    icl = f32(-1e30)
                    icr = f32(1e30)
                    ich = f32(1e30)
                    if with_ring and rw > 0:
                        ilev, isc = level_scale(r * ring_inner, n_levels, base_radius, lpp)
                        ix = sx_ * ring_inner
                        iy = sy_ * ring_inner
                        if shifted:
                            icl, icr, ich = table_run(c_l, c_r, c_h, n_rows, 1, half_rows, ilev, isc, fdy - iy, ix, 0)
                    for run in range(n_runs):
                        left, right, height = table_run(s_l, s_r, s_h, n_rows, n_runs, half_rows, lev, sc, fdy + sy_,
                                                        -sx_, run)
                        left = max(left, cl)
                        right = min(right, cr)
                        height = min(height, ch)
                        if not (right > left) or height == 0:
                            continue
                        write_segment(diff, x, left, right, height, p0, p1, p2, p3, W)
                        if with_ring and rw > 0:
                            il, ir, ih = table_run(s_l, s_r, s_h, n_rows, n_runs, half_rows, ilev, isc, fdy + iy, -ix,
                                                   run)
                            il = max(max(il, icl), left)
                            ir = min(min(ir, icr), right)
                            ih = min(min(ih, ich), height)
                            write_segment(diff, x, il, ir, -rw * ih, p0, p1, p2, p3, W)
            resolve(diff, no_acc, ty, out)

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
                                diff[left, 0] += weight * p0
                                diff[left, 1] += weight * p1
                                diff[left, 2] += weight * p2
                                diff[left, 3] += weight * p3
                                diff[right, 0] -= weight * p0
                                diff[right, 1] -= weight * p1
                                diff[right, 2] -= weight * p2
                                diff[right, 3] -= weight * p3
                        for k in range(max(s_lo, -x), min(s_hi, W - 1 - x) + 1):
                            if i_lo <= k <= i_hi:
                                continue
                            kx = k / ax
                            value = lemon_value(kx, yrow, f32(R), pox, poy, polygon, a1, a2, rotation, sin_a2)
                            if part == 1:
                                value = min(value, lemon_value(kx, yrow, r32, ox, oy, polygon, a1, a2, rotation,
                                                               sin_a2))
                            tx = x + k
                            v = weight * value
                            acc[tx, 0] += p0 * v
                            acc[tx, 1] += p1 * v
                            acc[tx, 2] += p2 * v
                            acc[tx, 3] += p3 * v
            resolve(diff, acc, ty, out)

    return logged_first_calls({"fast": fast_rows, "exact": exact_rows}, "lens")


def _run_rows(kernel, H, args, progress):
    for row_lo in range(0, H, ROWS_PER_CALL):
        row_hi = min(row_lo + ROWS_PER_CALL, H)
        kernel(row_lo, row_hi, *args)
        if progress is not None:
            progress(row_hi, H)


def _per_image(image, defocus_px, progress, one):
    from .numba_backend import _per_image as per_image

    return per_image(image, defocus_px, one, progress)


def _fields(aperture: Aperture, lens: Lens, img, dfc, dtype):
    from .lens_kernels import lens_premult

    radius = dfc.abs()
    fields = lens.fields(aperture, radius)
    H, W = radius.shape
    premult = lens_premult(img, radius, fields.norm, dtype).reshape(H, W, 4).contiguous()
    return radius, fields, premult


def scatter_fast_lens_numba(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    aperture: Aperture,
    lens: Lens,
    progress: Callable[[int, int], None] | None = None,
    *,
    raw: bool = False,
) -> torch.Tensor:
    """Fast mode with lens character (numba); same arithmetic as :func:`.lens_kernels.scatter_fast_lens`.

    image (B,3,H,W) linear, CPU; defocus_px (B or 1,1,H,W) px -> (B,3,H,W) float32 ((B,4,H,W) sums with ``raw``).
    """
    from .fast import LEVELS_PER_PX, TABLE_RADIUS
    from .lens_kernels import fast_tables
    from .numba_backend import _row_max, _set_threads

    kernel = _kernels()["fast"]
    _set_threads()
    tables = fast_tables(aperture, float(defocus_px.abs().max()))
    s_l, s_r, s_h = tables["shape"]
    c_l, c_r, c_h = tables["clip"]
    n_levels, n_rows, n_runs = s_l.shape
    half_rows = (n_rows - 1) // 2
    base_radius = tables["base_radius"]
    ax, ay = aperture.axis_scale
    flat = [t.flatten().contiguous() for t in (s_l, s_r, s_h)]
    pos_l, pos_r = flat[0] + 0.5, flat[1] + 0.5
    cell_l, cell_r = torch.floor(pos_l), torch.floor(pos_r)
    cover_l, cover_r = cell_l + 1 - pos_l, pos_r - cell_r
    entry_cols = torch.stack([cell_l, cell_l + 1, cell_r, cell_r + 1], dim=1).to(torch.int32).numpy()
    entry_coef = (torch.stack([cover_l, 1 - cover_l, cover_r - 1, -cover_r], dim=1)
                  * flat[2].unsqueeze(1)).contiguous().numpy()
    clip_flat = [t.flatten().contiguous().numpy() for t in (c_l, c_r, c_h)]
    big_reach = math.floor(TABLE_RADIUS * ay)

    def one(img, dfc, sub):
        H, W = dfc.shape
        radius, fields, premult = _fields(aperture, lens, img, dfc, torch.float32)
        ox = (fields.shift_x * radius * ax).contiguous()
        oy = (fields.shift_y * radius * ay).contiguous()
        reach = torch.floor(radius * ay) + 1
        big = reach > big_reach
        plain = (ox == 0) & (oy == 0) & (fields.ring == 0) & ~big
        level_plain = torch.round(radius * LEVELS_PER_PX).long().clamp(max=n_levels - 1)
        win_y = min(math.floor(float(radius.max()) * ay) + 1, H - 1)
        out = np.empty((4 if raw else 3, H, W), dtype=np.float32)
        reach = reach.to(torch.int32)
        args = (win_y, _row_max(reach), reach.numpy(), radius.numpy(), premult.numpy(), ox.numpy(), oy.numpy(),
                fields.ring.numpy(), plain.numpy(), level_plain.numpy(), entry_cols, entry_coef,
                flat[0].numpy(), flat[1].numpy(), flat[2].numpy(), *clip_flat, n_rows, n_runs, half_rows, n_levels,
                np.float32(base_radius), np.float32(LEVELS_PER_PX), np.float32(RING_INNER), lens.ring > 0,
                False, out)
        _run_rows(kernel, H, args, sub)
        return torch.from_numpy(out)

    return _per_image(image, defocus_px, progress, one)


def scatter_exact_lens_numba(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    aperture: Aperture,
    lens: Lens,
    progress: Callable[[int, int], None] | None = None,
    *,
    raw: bool = False,
) -> torch.Tensor:
    """Exact mode with lens character (numba), circle and polygon apertures; see the module docstring."""
    from .lens_kernels import DELTA
    from .numba_backend import _set_threads

    if aperture.kind not in ("circle", "polygon"):
        raise ValueError(f"the numba exact kernel handles circle and polygon apertures, got kind "
                         f"{aperture.kind!r}; use backend='torch' for mask apertures")
    kernel = _kernels()["exact"]
    _set_threads()
    ax, ay = aperture.axis_scale
    polygon = aperture.kind == "polygon"
    blades = aperture.blades if polygon else 3
    a1 = 2.0 * math.pi / blades
    a2 = math.pi / 2.0 - math.pi / blades

    def one(img, dfc, sub):
        H, W = dfc.shape
        radius, fields, premult = _fields(aperture, lens, img, dfc, torch.float64)
        win_y = min(math.floor(float(radius.max()) * ay) + 1, H - 1)
        out = np.empty((4 if raw else 3, H, W), dtype=np.float32)
        args = (win_y, radius.amax(dim=1).numpy(), radius.numpy(), premult.numpy(), fields.shift_x.numpy(),
                fields.shift_y.numpy(), fields.ring.numpy(), float(ax), float(ay), float(aperture.inner_fraction),
                float(DELTA), polygon, np.float32(a1), np.float32(a2), np.float32(aperture.rotation),
                float(RING_INNER), out)
        _run_rows(kernel, H, args, sub)
        return torch.from_numpy(out)

    return _per_image(image, defocus_px, progress, one)

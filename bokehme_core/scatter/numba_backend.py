"""Optional Numba CPU backend of the classical renderer: fast mode, exact mode (circle/polygon) and the dilation.

Used by :func:`bokehme_core.render_classical` for CPU tensors when ``numba`` imports (``backend="auto"``) or when
forced with ``backend="numba"``. ``numba`` is an optional dependency, imported lazily by :func:`available` and by
the first render; importing ``bokehme_core`` never imports it.

Compilation: the kernels are compiled with ``@njit(cache=True)``, so the first call on a machine compiles them
(about 10-30 s on a slow CPU) and stores the machine code in numba's cache (``__pycache__`` next to this file,
or numba's user-wide cache directory when that is read-only); later processes load it in well under a second.

Every kernel is a *gather over target rows*: ``prange`` over the rows ``ty`` of the output, each row keeping
its own accumulators (a float64 difference array of width ``W + 1``, plus the rim cells for exact), and for
each offset ``dy`` the sources of row ``sy = ty - dy`` in raster order, skipping those whose window does not
reach ``|dy|`` (whole rows are skipped by their largest radius). No two threads write the same memory (no
races, no atomics), the writes of one source row go left to right through the row's accumulators, and the
result does not depend on the number of threads. Searches along a kernel row (run ends, dilation extents)
start from the previous source's answer, since neighbouring pixels have similar radii.

* :func:`scatter_fast_numba`: the same arithmetic as :mod:`.fast` (row-run tables of :func:`.fast.row_runs`,
  the same four difference-array writes per segment with the same float32 coefficients), accumulated in
  float64 (the torch path accumulates the difference array in float32 and prefix-sums in float64).
* :func:`scatter_exact_numba`: the official kernel with the interior/rim split of :mod:`.exact` (same
  thresholds ``DELTA``, same tables): interior runs of profile 1 into a float64 difference array, rim cells
  with the float32 profile of :meth:`Aperture.profile` (circle and polygon, anamorphic included) written as
  ``1 / (1 + exp(-8*(edge - dist)))``, which equals ``0.5 + 0.5*tanh(4*(edge - dist))``; the scaled distance
  and the polygon's ``edge / r`` are tabulated per offset ``(dy, dx)``. Accumulated in float64 (the official
  kernel and the torch path accumulate the rim in float32). Mask apertures are not handled here (the caller
  uses the torch path).
* :func:`dilate_defocus_numba`: the official signed-max dilation (same algorithm and float32 distances as
  :mod:`.dilate`, a sparse table per target row).

Threads: ``min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)``.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Callable

import numpy as np
import torch

from ..aperture import Aperture, Lens

__all__ = ["available", "scatter_fast_numba", "scatter_exact_numba", "dilate_defocus_numba"]

logger = logging.getLogger(__name__)

#: target rows per kernel call (progress is reported between calls)
ROWS_PER_CALL = 64


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """True when ``numba`` imports (the kernels are compiled on first use, not here)."""
    try:
        import numba  # noqa: F401
    except Exception as err:  # ImportError, or a numba/numpy version mismatch raised at import
        logger.debug("Numba backend unavailable: %s", err)
        return False
    return True


@functools.lru_cache(maxsize=1)
def _kernels():
    """Compile (or load from numba's cache) the kernels; returns them in a dict."""
    from numba import njit, prange

    f32 = np.float32

    @njit(cache=True, fastmath=False)
    def resolve_row(diff, acc, ty, out):
        """Output row ``ty``: the running sum of the difference array ``diff`` (W + 1, 4) plus the directly
        accumulated ``acc`` (W, 4; zero rows = none), divided by its weight channel; with a 4-channel ``out``
        the four sums are written as they are (the un-normalised splat of :func:`scatter_fast_numba` with
        ``coverage``)."""
        with_acc = acc.shape[0] > 0
        raw = out.shape[0] == 4
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        for x in range(out.shape[2]):
            s0 += diff[x, 0]
            s1 += diff[x, 1]
            s2 += diff[x, 2]
            s3 += diff[x, 3]
            if raw:
                out[0, ty, x] = s0
                out[1, ty, x] = s1
                out[2, ty, x] = s2
                out[3, ty, x] = s3
                if with_acc:
                    out[0, ty, x] += acc[x, 0]
                    out[1, ty, x] += acc[x, 1]
                    out[2, ty, x] += acc[x, 2]
                    out[3, ty, x] += acc[x, 3]
            elif with_acc:
                w = s3 + acc[x, 3]
                out[0, ty, x] = (s0 + acc[x, 0]) / w
                out[1, ty, x] = (s1 + acc[x, 1]) / w
                out[2, ty, x] = (s2 + acc[x, 2]) / w
            else:
                out[0, ty, x] = s0 / s3
                out[1, ty, x] = s1 / s3
                out[2, ty, x] = s2 / s3

    @njit(cache=True, fastmath=False, parallel=True)
    def fast_rows(row_lo, row_hi, win_y, row_reach, reach, premult, level, big, scale, entry_cols, entry_coef,
                  left_flat, right_flat, height_flat, n_rows, n_runs, half_rows, out):
        H, W = reach.shape
        one = f32(1.0)
        half = f32(0.5)
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
                        for run in range(n_runs):
                            e = base + table_row * n_runs + run
                            if height_flat[e] == 0:
                                continue
                            for q in range(4):
                                col = min(max(x + entry_cols[e, q], 0), W)
                                coef = entry_coef[e, q]
                                diff[col, 0] += p0 * coef
                                diff[col, 1] += p1 * coef
                                diff[col, 2] += p2 * coef
                                diff[col, 3] += p3 * coef
                    else:
                        sc = scale[sy, x]
                        u = f32(dy) / sc
                        u0 = np.floor(u)
                        frac = u - u0
                        i0 = min(max(int(u0) + half_rows, 0), n_rows - 1)
                        i1 = min(max(int(u0) + 1 + half_rows, 0), n_rows - 1)
                        xf = f32(x)
                        for run in range(n_runs):
                            e0 = base + i0 * n_runs + run
                            e1 = base + i1 * n_runs + run
                            left = (left_flat[e0] * (one - frac) + left_flat[e1] * frac) * sc
                            right = (right_flat[e0] * (one - frac) + right_flat[e1] * frac) * sc
                            height = height_flat[e0] * (one - frac) + height_flat[e1] * frac
                            if height == 0:
                                continue
                            pos_l = xf + left + half
                            pos_r = xf + right + half
                            cell_l = np.floor(pos_l)
                            cell_r = np.floor(pos_r)
                            cover_l = cell_l + one - pos_l
                            cover_r = pos_r - cell_r
                            cl = min(max(cell_l, f32(-1.0)), f32(W))  # clamp as floats first (huge radii)
                            cr = min(max(cell_r, f32(-1.0)), f32(W))
                            cols = (min(max(int(cl), 0), W), min(max(int(cl) + 1, 0), W),
                                    min(max(int(cr), 0), W), min(max(int(cr) + 1, 0), W))
                            coefs = (cover_l * height, (one - cover_l) * height, (cover_r - one) * height,
                                     -cover_r * height)
                            for q in range(4):
                                col = cols[q]
                                coef = coefs[q]
                                diff[col, 0] += p0 * coef
                                diff[col, 1] += p1 * coef
                                diff[col, 2] += p2 * coef
                                diff[col, 3] += p3 * coef
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
                        diff[left, 0] += p0
                        diff[left, 1] += p1
                        diff[left, 2] += p2
                        diff[left, 3] += p3
                        diff[right, 0] -= p0
                        diff[right, 1] -= p1
                        diff[right, 2] -= p2
                        diff[right, 3] -= p3
                    # rim cells: profile 0.5 + 0.5*tanh(4*(edge - dist)) == 1 / (1 + exp(-8*(edge - dist)))
                    for k in range(m, min(m2, max(x + 1, W - x))):
                        dist = dist_tab[row, k]
                        tx = x + k
                        if tx < W:
                            edge = r * edge_tab[row, win_x + k] if polygon else r
                            prof = one / (one + np.exp(minus_eight * (edge - dist)))
                            acc[tx, 0] += p0 * prof
                            acc[tx, 1] += p1 * prof
                            acc[tx, 2] += p2 * prof
                            acc[tx, 3] += p3 * prof
                        tx = x - k
                        if tx >= 0 and k > 0:
                            if polygon:
                                edge = r * edge_tab[row, win_x - k]
                                prof = one / (one + np.exp(minus_eight * (edge - dist)))
                            elif x + k >= W:
                                prof = one / (one + np.exp(minus_eight * (r - dist)))
                            acc[tx, 0] += p0 * prof
                            acc[tx, 1] += p1 * prof
                            acc[tx, 2] += p2 * prof
                            acc[tx, 3] += p3 * prof
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

    return {"fast": fast_rows, "exact": exact_rows, "dilate": dilate_rows}


# --------------------------------------------------------------------------------------------- helpers
def _set_threads() -> None:
    import numba

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _row_max(values: torch.Tensor) -> np.ndarray:
    """(H,) the largest value of each row of (H, W) ``values`` (rows that reach nothing are skipped whole)."""
    return values.amax(dim=1).contiguous().numpy()


def _run_rows(kernel, H: int, args_before: tuple, args_after: tuple, progress, offset: int, total: int) -> None:
    """Call ``kernel(row_lo, row_hi, *args_before... )`` over all target rows in blocks, reporting progress."""
    for row_lo in range(0, H, ROWS_PER_CALL):
        row_hi = min(row_lo + ROWS_PER_CALL, H)
        kernel(row_lo, row_hi, *args_before, *args_after)
        if progress is not None:
            progress(offset + row_hi, total)


def _per_image(image: torch.Tensor, defocus_px: torch.Tensor, one, progress):
    B, _, H, W = image.shape
    outs = []
    for b in range(B):
        sub = None
        if progress is not None:
            sub = lambda done, total, b=b: progress(b * total + done, B * total)  # noqa: E731
        img = image[b].detach().to("cpu", torch.float32).contiguous()
        dfc = defocus_px[b if defocus_px.shape[0] > 1 else 0, 0].detach().to("cpu", torch.float32).contiguous()
        outs.append(one(img, dfc, sub))
    return torch.stack(outs)


# ------------------------------------------------------------------------------------------------ fast
def scatter_fast_numba(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    aperture: Aperture,
    progress: Callable[[int, int], None] | None = None,
    *,
    coverage: torch.Tensor | None = None,
    max_radius: float | None = None,
    lens: Lens | None = None,
) -> torch.Tensor:
    """Fast mode (:func:`.fast.scatter_fast` semantics) with Numba; any aperture (circle, polygon, mask).

    image (B,3,H,W) linear values >= 0, CPU; defocus_px (B or 1,1,H,W) px -> (B,3,H,W) float32 on the CPU.
    The first call on a machine compiles the kernels (cached on disk afterwards).
    ``coverage`` / ``max_radius``: the un-normalised energy-preserving splat of :func:`.fast.scatter_fast`
    (premultiplied ``image``, unit-mass kernels, coverage-0 sources skipped, (B,4,H,W) sums returned).
    """
    if lens is not None and not lens.shapes_neutral:  # lens character: per-source kernels
        from .lens_numba import scatter_fast_lens_numba

        return scatter_fast_lens_numba(image, defocus_px, aperture, lens, progress)
    from .fast import LEVELS_PER_PX, TABLE_RADIUS, row_runs, source_mass

    kernel = _kernels()["fast"]
    _set_threads()
    rmax_all = float(defocus_px.abs().max()) if max_radius is None else float(max_radius)
    runs_tables = row_runs(aperture, float(min(math.floor(rmax_all) + 1, TABLE_RADIUS)))
    left_t, right_t, height_t = runs_tables
    n_levels, n_rows, n_runs = left_t.shape
    half_rows = (n_rows - 1) // 2
    ax, ay = aperture.axis_scale
    left_flat, right_flat, height_flat = left_t.flatten(), right_t.flatten(), height_t.flatten()
    # the four writes of a table entry, as in .fast (same float32 arithmetic)
    pos_l, pos_r = left_flat + 0.5, right_flat + 0.5
    cell_l, cell_r = torch.floor(pos_l), torch.floor(pos_r)
    cover_l, cover_r = cell_l + 1 - pos_l, pos_r - cell_r
    entry_cols = torch.stack([cell_l, cell_l + 1, cell_r, cell_r + 1], dim=1).to(torch.int32).numpy()
    entry_coef = (torch.stack([cover_l, 1 - cover_l, cover_r - 1, -cover_r], dim=1)
                  * height_flat.unsqueeze(1)).contiguous().numpy()
    base_radius = float(n_levels - 1) / LEVELS_PER_PX
    big_reach = math.floor(TABLE_RADIUS * ay)
    tables = (entry_cols, entry_coef, left_flat.numpy(), right_flat.numpy(), height_flat.numpy(), n_rows, n_runs,
              half_rows)

    def one(img, dfc, sub):
        H, W = dfc.shape
        radius = dfc.abs()
        if img.shape[0] == 4:  # energy-preserving splat: premultiplied colour + coverage, unit-mass kernels
            weight = 1.0 / source_mass(radius, aperture, runs_tables)
            premult = img * weight
        else:
            weight = 1.0 / (radius * radius + 0.2)
            premult = torch.cat([img, torch.ones(1, H, W)]) * weight  # (4, H, W) float32, as .fast
        skip = img.shape[0] == 4 and bool((img[3] <= 0).any())
        premult = premult.permute(1, 2, 0).contiguous().numpy()
        reach = torch.floor(radius * ay) + 1
        if skip:  # reach -1: the kernel skips the source on every row
            reach = torch.where(img[3] > 0, reach, torch.full_like(reach, -1.0))
        big = reach > big_reach
        level = torch.where(big, n_levels - 1,
                            torch.round(radius * LEVELS_PER_PX).long().clamp(max=n_levels - 1)).to(torch.int64)
        scale = torch.where(big, radius / base_radius, torch.ones_like(radius))
        win_y = min(math.floor(float(radius.max()) * ay) + 1, H - 1)
        out = np.empty((img.shape[0], H, W), dtype=np.float32)  # 4 channels: raw sums (resolve_row)
        reach = reach.to(torch.int32)
        _run_rows(kernel, H, (win_y, _row_max(reach), reach.numpy(), premult, level.numpy(),
                              big.numpy(), scale.numpy()), (*tables, out), sub, 0, H)
        return torch.from_numpy(out)

    if coverage is not None:
        cov = coverage.to(image.dtype)
        image = torch.cat([image, cov.expand(image.shape[0], -1, -1, -1)], dim=1)
    return _per_image(image, defocus_px, one, progress)


# ----------------------------------------------------------------------------------------------- exact
def scatter_exact_numba(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    aperture: Aperture,
    progress: Callable[[int, int], None] | None = None,
    *,
    lens: Lens | None = None,
) -> torch.Tensor:
    """Exact mode (official kernel, :func:`.exact.scatter_exact` semantics) with Numba, circle and polygon.

    image (B,3,H,W) linear values >= 0, CPU; defocus_px (B or 1,1,H,W) px -> (B,3,H,W) float32 on the CPU.
    Raises ValueError for mask apertures (use the torch path). The first call on a machine compiles the kernels.
    """
    if lens is not None and not lens.shapes_neutral:  # lens character: per-source kernels
        from .lens_numba import scatter_exact_lens_numba

        return scatter_exact_lens_numba(image, defocus_px, aperture, lens, progress)
    from .exact import DELTA

    if aperture.kind not in ("circle", "polygon"):
        raise ValueError(f"the numba exact kernel handles circle and polygon apertures, got kind "
                         f"{aperture.kind!r}; use backend='torch' for mask apertures")
    kernel = _kernels()["exact"]
    _set_threads()
    ax, ay = aperture.axis_scale
    inner = aperture.inner_fraction
    polygon = aperture.kind == "polygon"

    def one(img, dfc, sub):
        H, W = dfc.shape
        radius = dfc.abs()
        rmax = float(radius.max())
        weight = 1.0 / (radius.to(torch.float64) ** 2 + 0.2)
        premult = (torch.cat([img.to(torch.float64), torch.ones(1, H, W, dtype=torch.float64)]) * weight)
        premult = premult.permute(1, 2, 0).contiguous().numpy()
        # the tables of .exact: interior iff r > thr[dy, |dx|]; a cell exists (rim or interior) iff r >= lo
        win_x = min(math.floor(rmax * ax) + 1, W - 1)
        win_y = min(math.floor(rmax * ay) + 1, H - 1)
        kx = torch.arange(win_x + 1, dtype=torch.float64)
        ky = torch.arange(-win_y, win_y + 1, dtype=torch.float64)
        dist_scaled = torch.sqrt((kx.view(1, -1) / ax) ** 2 + (ky.view(-1, 1) / ay) ** 2)
        thr = ((dist_scaled + DELTA) / inner).to(torch.float32)
        win_lo = torch.maximum(((kx.view(1, -1) - 1) / ax).expand_as(dist_scaled),
                               ((ky.abs().view(-1, 1) - 1) / ay).expand_as(dist_scaled))
        lo = torch.maximum(dist_scaled - DELTA, win_lo).to(torch.float32)
        # the float32 distance of Aperture.profile, and (polygons) edge radius / r per offset (dy, dx)
        kx32 = torch.arange(win_x + 1, dtype=torch.float32)
        ky32 = torch.arange(-win_y, win_y + 1, dtype=torch.float32)
        sx = kx32 / ax if ax != 1.0 else kx32
        sy = ky32 / ay if ay != 1.0 else ky32
        dist_tab = torch.sqrt(sx.view(1, -1) ** 2 + sy.view(-1, 1) ** 2)
        if polygon:
            a1 = 2.0 * math.pi / aperture.blades
            a2 = math.pi / 2.0 - math.pi / aperture.blades
            sx_signed = torch.cat([-sx.flip(0)[:-1], sx]).view(1, -1)  # dx = -win_x .. win_x (+0.0 at dx = 0)
            phi = torch.fmod(torch.abs(torch.atan2(sy.view(-1, 1).expand(-1, sx_signed.shape[1]),
                                                   sx_signed.expand(sy.shape[0], -1)) + aperture.rotation), a1)
            edge_tab = math.sin(a2) / torch.sin(phi + a2)
        else:
            edge_tab = torch.ones(1, 1)
        out = np.empty((3, H, W), dtype=np.float32)
        _run_rows(kernel, H, (win_y, _row_max(radius), radius.numpy(), premult, thr.numpy(), lo.numpy()),
                  (dist_tab.numpy(), edge_tab.to(torch.float32).contiguous().numpy(), polygon, out), sub, 0, H)
        return torch.from_numpy(out)

    return _per_image(image, defocus_px, one, progress)


# -------------------------------------------------------------------------------------------- dilation
def dilate_defocus_numba(defocus_px: torch.Tensor) -> torch.Tensor:
    """Official signed-max dilation (:func:`.dilate.dilate_defocus` semantics) with Numba.

    defocus_px (B,1,H,W) px, finite, |d| <= 2000 -> (B,1,H,W) float32 holding integers, on the CPU.
    """
    kernel = _kernels()["dilate"]
    _set_threads()
    B, _, H, W = defocus_px.shape
    out = torch.empty(B, 1, H, W, dtype=torch.float32)
    levels = max(1, W.bit_length())
    floor_log2 = np.zeros(W + 1, dtype=np.int64)
    for j in range(1, levels + 1):
        floor_log2[1 << (j - 1):] = j - 1
    for b in range(B):
        dfc = defocus_px[b, 0].detach().to("cpu", torch.float32).contiguous()
        radius = dfc.abs()
        rmax = float(radius.max())
        reach_rows = min(math.floor(rmax), H - 1)
        reach_cols = min(math.floor(rmax), W - 1)
        k = torch.arange(reach_cols + 1, dtype=torch.float32)
        dy = torch.arange(reach_rows + 1, dtype=torch.float32)
        dist_tab = torch.sqrt(k.view(1, -1) * k.view(1, -1) + dy.view(-1, 1) * dy.view(-1, 1))  # float32
        value = torch.trunc(dfc).to(torch.int32)
        result = np.empty((H, W), dtype=np.int32)
        reach = torch.floor(radius).to(torch.int32)
        _run_rows(kernel, H, (reach_rows, _row_max(reach), reach.numpy(), radius.numpy(), value.numpy(), dist_tab.numpy(),
                              floor_log2, levels, -(2**31) + 1), (result,), None, 0, H)
        out[b, 0] = torch.from_numpy(result).to(torch.float32)
    return out

"""The numba backend of the classical renderer (CPU tensors, optional ``numba`` package): its cells and its
plain kernels (fast mode, exact mode for circle / polygon apertures, the dilation).

The backend's declaration (read by :mod:`.table`): :data:`NAME`, :func:`available`, :data:`CELLS` (exact plain
and shaped: circle / polygon apertures; fast and layered, plain and shaped: every aperture) and :data:`DILATE`.
The lens kernels are in :mod:`.lens_numba`, the layered mode's compiled passes in :mod:`.layered_numba`, what
they share (threads, row bands, first-call logging) in :mod:`.numba_runtime`. ``numba`` is imported lazily by
:func:`available` and by the first render; importing ``bokehme_core`` never imports it.

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

* :func:`scatter_fast_numba`: the same arithmetic as :mod:`.fast` (row-run tables of :func:`.common.row_runs`,
  the same four difference-array writes per segment with the same float32 coefficients), accumulated in
  float64 (the torch path accumulates the difference array in float32 and prefix-sums in float64).
* :func:`scatter_exact_numba`: the official kernel with the interior/rim split of :mod:`.exact` (same
  thresholds ``DELTA``, same tables): interior runs of profile 1 into a float64 difference array, rim cells
  with the float32 profile of :meth:`Aperture.profile` (circle and polygon, anamorphic included) written as
  ``1 / (1 + exp(-8*(edge - dist)))``, which equals ``0.5 + 0.5*tanh(4*(edge - dist))``; the scaled distance
  and the polygon's ``edge / r`` are tabulated per offset ``(dy, dx)``. Accumulated in float64 (the official
  kernel and the torch path accumulate the rim in float32). Mask apertures are not handled here (no cell: the
  table falls back to torch).
* :func:`dilate_defocus_numba`: the official signed-max dilation (same algorithm and float32 distances as
  :mod:`.dilate`, a sparse table per target row).

Threads: ``min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)``.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import torch

from ..aperture import Aperture
from .common import LEVELS_PER_PX, TABLE_RADIUS, Cell, row_runs, source_mass, table_radius, window_tables
from .layered_numba import scatter_layered_lens_numba, scatter_layered_numba
from .lens_numba import scatter_exact_lens_numba, scatter_fast_lens_numba
from .numba_runtime import (available as _numba_imports, band_rows, check_exact_aperture, logged_first_calls,
                            numba_entry_writes, numba_threads, per_image_cpu, row_max, run_rows)

__all__ = ["NAME", "available", "CELLS", "DILATE", "scatter_fast_numba", "scatter_exact_numba",
           "dilate_defocus_numba"]

NAME = "numba"
#: what :func:`available` needs, for the table's error message
NEEDS = "CPU tensors and the optional numba package (pip install numba)"


def available(device: torch.device | str | None = None) -> bool:
    """True when ``numba`` imports and ``device`` (None: any) is the CPU (kernels compile on first use)."""
    if device is not None and torch.device(device).type != "cpu":
        return False
    return _numba_imports()


@functools.lru_cache(maxsize=1)
def _kernels():
    """The compiled kernels (:mod:`._numba_kernels`, loaded from numba's on-disk cache after the first
    compilation on a machine), each logging its first call once."""
    from . import _numba_kernels as k

    return logged_first_calls({"fast": k.fast_rows, "exact": k.exact_rows, "dilate": k.dilate_rows}, "scatter")


# ------------------------------------------------------------------------------------------------ fast
def scatter_fast_numba(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    aperture: Aperture,
    progress: Callable[[int, int], None] | None = None,
    *,
    coverage: torch.Tensor | None = None,
    max_radius: float | None = None,
) -> torch.Tensor:
    """Fast mode (:func:`.fast.scatter_fast` semantics) with Numba; any aperture (circle, polygon, mask).

    image (B,3,H,W) linear values >= 0, CPU; defocus_px (B or 1,1,H,W) px -> (B,3,H,W) float32 on the CPU.
    The first call on a machine compiles the kernels (cached on disk afterwards).
    ``coverage`` / ``max_radius``: the un-normalised energy-preserving splat of :func:`.fast.scatter_fast`
    (premultiplied ``image``, unit-mass kernels, coverage-0 sources skipped, (B,4,H,W) sums returned).
    """
    kernel = _kernels()["fast"]
    rmax_all = float(defocus_px.abs().max()) if max_radius is None else float(max_radius)
    runs_tables = row_runs(aperture, table_radius(rmax_all))
    left_t, right_t, height_t = runs_tables
    n_levels, n_rows, n_runs = left_t.shape
    half_rows = (n_rows - 1) // 2
    ax, ay = aperture.axis_scale
    left_flat, right_flat, height_flat = left_t.flatten(), right_t.flatten(), height_t.flatten()
    entry_cols, entry_coef = numba_entry_writes(left_flat, right_flat, height_flat)
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
        run_rows(kernel, H, (win_y, row_max(reach), reach.numpy(), premult, level.numpy(),
                              big.numpy(), scale.numpy()), (*tables, out), sub, 0, H, band_rows(W, win_y))
        return torch.from_numpy(out)

    if coverage is not None:
        cov = coverage.to(image.dtype)
        image = torch.cat([image, cov.expand(image.shape[0], -1, -1, -1)], dim=1)
    with numba_threads():
        return per_image_cpu(image, defocus_px, one, progress)


# ----------------------------------------------------------------------------------------------- exact
def scatter_exact_numba(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    aperture: Aperture,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Exact mode (official kernel, :func:`.exact.scatter_exact` semantics) with Numba, circle and polygon.

    image (B,3,H,W) linear values >= 0, CPU; defocus_px (B or 1,1,H,W) px -> (B,3,H,W) float32 on the CPU.
    Raises ValueError for mask apertures (use the torch path). The first call on a machine compiles the kernels.
    """
    check_exact_aperture(aperture)
    kernel = _kernels()["exact"]
    ax, ay = aperture.axis_scale
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
        thr, lo = window_tables(aperture, win_x, win_y)
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
        run_rows(kernel, H, (win_y, row_max(radius), radius.numpy(), premult, thr.numpy(), lo.numpy()),
                  (dist_tab.numpy(), edge_tab.to(torch.float32).contiguous().numpy(), polygon, out), sub, 0, H,
                  band_rows(W, win_y))
        return torch.from_numpy(out)

    with numba_threads():
        return per_image_cpu(image, defocus_px, one, progress)


# -------------------------------------------------------------------------------------------- dilation
def dilate_defocus_numba(defocus_px: torch.Tensor, heartbeat: Callable[..., None] | None = None) -> torch.Tensor:
    """Official signed-max dilation (:func:`.dilate.dilate_defocus` semantics) with Numba.

    defocus_px (B,1,H,W) px, finite, |d| <= 2000 -> (B,1,H,W) float32 holding integers, on the CPU.
    ``heartbeat``: optional, called after each band of rows (may raise to cancel).
    """
    kernel = _kernels()["dilate"]
    B, _, H, W = defocus_px.shape
    out = torch.empty(B, 1, H, W, dtype=torch.float32)
    levels = max(1, W.bit_length())
    floor_log2 = np.zeros(W + 1, dtype=np.int64)
    for j in range(1, levels + 1):
        floor_log2[1 << (j - 1):] = j - 1
    with numba_threads():
        for b in range(B):
            _dilate_one(kernel, defocus_px[b, 0], out[b, 0], floor_log2, levels, heartbeat)
    return out


def _dilate_one(kernel, dfc, out, floor_log2, levels, heartbeat=None) -> None:
    """One (H, W) defocus map into ``out`` (H, W) float32."""
    H, W = dfc.shape
    dfc = dfc.detach().to("cpu", torch.float32).contiguous()
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
    run_rows(kernel, H, (reach_rows, row_max(reach), reach.numpy(), radius.numpy(), value.numpy(), dist_tab.numpy(),
                          floor_log2, levels, -(2**31) + 1), (result,), heartbeat, 0, H)
    out.copy_(torch.from_numpy(result).to(torch.float32))


# ------------------------------------------------------------------------------------------ the declaration
#: the cells this backend runs (mode, lens shape, apertures): see :mod:`.table`
CELLS = (
    Cell(NAME, "exact", "plain", scatter_exact_numba, ("circle", "polygon")),
    Cell(NAME, "exact", "shaped", scatter_exact_lens_numba, ("circle", "polygon")),
    Cell(NAME, "fast", "plain", scatter_fast_numba),
    Cell(NAME, "fast", "shaped", scatter_fast_lens_numba),
    Cell(NAME, "layered", "plain", scatter_layered_numba),
    Cell(NAME, "layered", "shaped", scatter_layered_lens_numba),
)
#: the official dilated defocus of this backend
DILATE = dilate_defocus_numba

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

import contextlib
import functools
import logging
import math
import time
from typing import Callable

import numpy as np
import torch

from ..aperture import Aperture, Lens

__all__ = ["available", "scatter_fast_numba", "scatter_exact_numba", "dilate_defocus_numba"]

logger = logging.getLogger(__name__)

#: most target rows per kernel call (progress is reported between calls; see :func:`band_rows`)
ROWS_PER_CALL = 64
#: most (source, kernel row) pairs one kernel call visits (:func:`band_rows`)
BAND_PAIRS = 1 << 24


def logged_first_calls(kernels: dict, family: str) -> dict:
    """Wrap numba dispatchers so that the first call of each logs once, at INFO, how long it took and whether
    the machine code was compiled or loaded from numba's on-disk cache.

    A cache entry written while this package was imported under another name (``bokehme_core`` from the CLI or
    the tests, ``<pack>.bokehme_core`` inside ComfyUI) refers to that name and cannot be loaded
    (ImportError): the kernel is then compiled without the disk cache, once per process, with a warning."""

    def wrap(name, dispatcher):
        state = {"first": True}

        def run(*args):
            try:
                return dispatcher(*args)
            except ImportError as exc:
                if not _drop_disk_cache(dispatcher):
                    raise
                logger.warning("numba %s kernel '%s': its on-disk cache was written under another import name "
                               "of this package (%s); compiling it for this process", family, name, exc)
                return dispatcher(*args)

        def call(*args):
            if not state["first"]:
                return run(*args)
            state["first"] = False
            start = time.perf_counter()
            result = run(*args)
            stats = getattr(dispatcher, "stats", None)
            compiled = bool(getattr(stats, "cache_misses", None)) if stats is not None else True
            logger.info("numba %s kernel '%s' ready in %.1f s (%s)", family, name, time.perf_counter() - start,
                        "compiled and cached on disk" if compiled else "loaded from the on-disk cache")
            return result

        return call

    return {name: wrap(name, dispatcher) for name, dispatcher in kernels.items()}


def _drop_disk_cache(dispatcher) -> bool:
    """Make ``dispatcher`` and every compiled function of its module (the helpers it calls) compile without
    numba's on-disk cache from now on; False if that is not possible."""
    import sys

    try:
        from numba.core.caching import NullCache
        from numba.core.dispatcher import Dispatcher
    except ImportError:
        return False
    module = sys.modules.get(getattr(getattr(dispatcher, "py_func", None), "__module__", ""), None)
    targets = [dispatcher] + ([v for v in vars(module).values() if isinstance(v, Dispatcher)] if module else [])
    for target in targets:
        if hasattr(target, "_cache"):
            target._cache = NullCache()
    return hasattr(dispatcher, "_cache")


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
    """The compiled kernels (:mod:`._numba_kernels`, loaded from numba's on-disk cache after the first
    compilation on a machine), each logging its first call once."""
    from . import _numba_kernels as k

    return logged_first_calls({"fast": k.fast_rows, "exact": k.exact_rows, "dilate": k.dilate_rows}, "scatter")


# --------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def numba_threads():
    """Run the ``with`` block with ``min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)`` numba threads;
    the previous setting comes back on exit, also when the block raises (a cancelled render)."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def band_rows(width: int, win_y: int, multiple: int = 1) -> int:
    """Target rows per kernel call for a ``width``-pixel image whose kernels reach ``win_y`` rows: at most
    :data:`ROWS_PER_CALL`, fewer when one call would visit more than :data:`BAND_PAIRS` (source, kernel row)
    pairs, a multiple of ``multiple`` (the lens kernel's row blocks) and at least ``multiple``. Progress is
    reported between calls, so this bounds the work between two reports; the rows are independent, so the
    result does not depend on it."""
    per_row = max(1, int(width) * (2 * max(int(win_y), 0) + 1))
    rows = min(ROWS_PER_CALL, BAND_PAIRS // per_row)
    return max(multiple, rows - rows % multiple)


def _row_max(values: torch.Tensor) -> np.ndarray:
    """(H,) the largest value of each row of (H, W) ``values`` (rows that reach nothing are skipped whole)."""
    return values.amax(dim=1).contiguous().numpy()


def _run_rows(kernel, H: int, args_before: tuple, args_after: tuple, progress, offset: int, total: int,
              band: int = ROWS_PER_CALL) -> None:
    """Call ``kernel(row_lo, row_hi, *args_before... )`` over all target rows in bands of ``band`` rows
    (:func:`band_rows`), reporting ``progress(offset + row_hi, total)`` after each."""
    for row_lo in range(0, H, band):
        row_hi = min(row_lo + band, H)
        kernel(row_lo, row_hi, *args_before, *args_after)
        if progress is not None:
            progress(offset + row_hi, total)


def _per_image(image: torch.Tensor, defocus_px: torch.Tensor, one, progress):
    """:func:`.exact.per_image` with each image and defocus map as contiguous float32 CPU tensors."""
    from .exact import per_image

    def on_cpu(img, dfc, sub):
        return one(img.detach().to("cpu", torch.float32).contiguous(),
                   dfc.detach().to("cpu", torch.float32).contiguous(), sub)

    return per_image(image, defocus_px, on_cpu, progress)


def entry_writes(left_flat: torch.Tensor, right_flat: torch.Tensor, height_flat: torch.Tensor) -> tuple:
    """The four difference-array writes of every row-run table entry at a table radius, as in :mod:`.fast`
    (same float32 arithmetic): ``(entry_cols (N, 4) int32, entry_coef (N, 4) float32)`` numpy arrays, columns
    relative to the source (:func:`._numba_kernels.splat_table_row`)."""
    pos_l, pos_r = left_flat + 0.5, right_flat + 0.5
    cell_l, cell_r = torch.floor(pos_l), torch.floor(pos_r)
    cover_l, cover_r = cell_l + 1 - pos_l, pos_r - cell_r
    entry_cols = torch.stack([cell_l, cell_l + 1, cell_r, cell_r + 1], dim=1).to(torch.int32).numpy()
    entry_coef = (torch.stack([cover_l, 1 - cover_l, cover_r - 1, -cover_r], dim=1)
                  * height_flat.unsqueeze(1)).contiguous().numpy()
    return entry_cols, entry_coef


def check_exact_aperture(aperture: Aperture) -> None:
    """The numba exact kernels (plain and lens) handle circle and polygon apertures only."""
    if aperture.kind not in ("circle", "polygon"):
        raise ValueError(f"the numba exact kernel handles circle and polygon apertures, got kind "
                         f"{aperture.kind!r}; use backend='torch' for mask apertures")


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
    lens_frame: tuple | None = None,
) -> torch.Tensor:
    """Fast mode (:func:`.fast.scatter_fast` semantics) with Numba; any aperture (circle, polygon, mask).

    image (B,3,H,W) linear values >= 0, CPU; defocus_px (B or 1,1,H,W) px -> (B,3,H,W) float32 on the CPU.
    The first call on a machine compiles the kernels (cached on disk afterwards).
    ``coverage`` / ``max_radius``: the un-normalised energy-preserving splat of :func:`.fast.scatter_fast`
    (premultiplied ``image``, unit-mass kernels, coverage-0 sources skipped, (B,4,H,W) sums returned).
    ``lens`` / ``lens_frame``: lens character (:mod:`.lens_numba`), ``lens_frame = (top, left, frame_height,
    frame_width)`` placing this image in a larger frame for the lens fields (the layered mode's slab boxes).
    """
    if lens is not None and not lens.shapes_neutral:  # lens character: per-source kernels (coverage too)
        from .lens_numba import scatter_fast_lens_numba

        return scatter_fast_lens_numba(image, defocus_px, aperture, lens, progress, coverage=coverage,
                                       max_radius=max_radius, frame=lens_frame)
    from .fast import LEVELS_PER_PX, TABLE_RADIUS, row_runs, source_mass

    kernel = _kernels()["fast"]
    rmax_all = float(defocus_px.abs().max()) if max_radius is None else float(max_radius)
    runs_tables = row_runs(aperture, float(min(math.floor(rmax_all) + 1, TABLE_RADIUS)))
    left_t, right_t, height_t = runs_tables
    n_levels, n_rows, n_runs = left_t.shape
    half_rows = (n_rows - 1) // 2
    ax, ay = aperture.axis_scale
    left_flat, right_flat, height_flat = left_t.flatten(), right_t.flatten(), height_t.flatten()
    entry_cols, entry_coef = entry_writes(left_flat, right_flat, height_flat)
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
                              big.numpy(), scale.numpy()), (*tables, out), sub, 0, H, band_rows(W, win_y))
        return torch.from_numpy(out)

    if coverage is not None:
        cov = coverage.to(image.dtype)
        image = torch.cat([image, cov.expand(image.shape[0], -1, -1, -1)], dim=1)
    with numba_threads():
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

    check_exact_aperture(aperture)
    kernel = _kernels()["exact"]
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
                  (dist_tab.numpy(), edge_tab.to(torch.float32).contiguous().numpy(), polygon, out), sub, 0, H,
                  band_rows(W, win_y))
        return torch.from_numpy(out)

    with numba_threads():
        return _per_image(image, defocus_px, one, progress)


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
    _run_rows(kernel, H, (reach_rows, _row_max(reach), reach.numpy(), radius.numpy(), value.numpy(), dist_tab.numpy(),
                          floor_log2, levels, -(2**31) + 1), (result,), heartbeat, 0, H)
    out.copy_(torch.from_numpy(result).to(torch.float32))

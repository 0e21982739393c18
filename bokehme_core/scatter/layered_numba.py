"""The layered mode's numba cells: :func:`scatter_layered_numba` (no lens shape: the hidden-sample search and the
whole slab loop in compiled passes, :mod:`._layered_numba_kernels`) and :func:`scatter_layered_lens_numba` (lens
shape: the compiled search, every slab splatted with :func:`.lens_numba.scatter_fast_lens_numba`). The algorithm
and its options are :func:`.layered.scatter_layered`'s; the results agree with the torch cells to float rounding.
CPU tensors, optional ``numba`` (:mod:`.numba_runtime`).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import torch

from ..aperture import Aperture
from .common import LEVELS_PER_PX, TABLE_RADIUS, row_runs, source_mass, table_radius
from .layered import FILL_CELLS, FILL_GAP, SlabParts, scatter_layered
from .lens_numba import scatter_fast_lens_numba
from .numba_runtime import band_rows, logged_first_calls, numba_entry_writes, numba_threads

__all__ = ["scatter_layered_numba", "scatter_layered_lens_numba", "hidden_layer_numba", "composite_numba"]


def scatter_layered_numba(image: torch.Tensor, defocus_px: torch.Tensor, aperture: Aperture,
                          progress: Callable[[int, int], None] | None = None, **options) -> torch.Tensor:
    """:func:`.layered.scatter_layered` in compiled passes (CPU); progress over the padded rows of all images."""
    parts = SlabParts(None, hidden_layer_numba, composite=composite_numba, threads=numba_threads)
    return scatter_layered(image, defocus_px, aperture, progress, parts=parts, **options)


def scatter_layered_lens_numba(image: torch.Tensor, defocus_px: torch.Tensor, aperture: Aperture, lens,
                               progress: Callable[[int, int], None] | None = None, **options) -> torch.Tensor:
    """:func:`.layered.scatter_layered` with a lens shape (:class:`bokehme_core.aperture.LensShape`), CPU: the
    compiled hidden-sample search, every slab splatted with :func:`.lens_numba.scatter_fast_lens_numba`."""

    def splat(img, dfc, ap, sub, **kwargs):
        return scatter_fast_lens_numba(img, dfc, ap, lens, sub, **kwargs)

    parts = SlabParts(splat, hidden_layer_numba, framed=True, threads=numba_threads)
    return scatter_layered(image, defocus_px, aperture, progress, parts=parts, **options)


def composite_numba(colour, entry_d, lower, upper_w, hidden, n_slabs, Hp, Wp, aperture, rmax, gap, ticks):
    """The slab loop of :func:`.layered._layered_one` in one compiled pass
    (:func:`._layered_numba_kernels.layered_rows`): the same sources, splats (the fast kernel clipped to each slab's box) and compositing, without per-slab
    crops; ``ticks`` (:class:`.common.Progress` over the Hp rows) steps after every band of rows. Returns
    ``settled`` (4, Hp, Wp): premultiplied colour and coverage."""
    kernels = _numba_kernels()
    n = Hp * Wp
    ax, ay = aperture.axis_scale
    runs_tables = row_runs(aperture, table_radius(rmax))
    left_t, right_t, height_t = runs_tables
    n_levels, n_rows, n_runs = left_t.shape
    left_flat, right_flat, height_flat = left_t.flatten(), right_t.flatten(), height_t.flatten()
    entry_cols, entry_coef = numba_entry_writes(left_flat, right_flat, height_flat)
    # per entry (pixel, then hidden sample): the table level, row scale and row reach of .numba_backend
    radius = entry_d.abs()
    mass = source_mass(radius, aperture, runs_tables)
    ticks.heartbeat()  # the set-up below is a few whole-frame passes: a report between them (Cancel)
    reach = torch.floor(radius * ay) + 1
    big = reach > math.floor(TABLE_RADIUS * ay)
    level = torch.where(big, n_levels - 1,
                        torch.round(radius * LEVELS_PER_PX).long().clamp(max=n_levels - 1)).to(torch.int32)
    scale = torch.where(big, radius / (float(n_levels - 1) / LEVELS_PER_PX), torch.ones_like(radius))
    reach = reach.to(torch.int32)
    if hidden is None:
        hidden_of = torch.full((n,), -1, dtype=torch.int32)
        h_pix, h_colour = torch.zeros(0, dtype=torch.int64), torch.zeros(3, 0)
        h_lower, h_upper = torch.zeros(0, dtype=torch.int64), torch.zeros(0)
    else:
        h_pix, h_colour, h_lower, h_upper = hidden
        hidden_of = torch.full((n,), -1, dtype=torch.int32)
        hidden_of[h_pix] = torch.arange(h_pix.numel(), dtype=torch.int32)
    lists = (lower.contiguous().numpy(), upper_w.contiguous().numpy(), hidden_of.numpy(),
             h_lower.contiguous().numpy(), h_upper.contiguous().numpy())
    big_np = big.numpy()
    # the two tent parts of a source share their kernel: one record writes both (not above the tables, where
    # the unit-mass weight depends on the slab)
    pair = not bool(big_np.any())
    counts = np.zeros((n_slabs, Hp), dtype=np.int64)
    kernels["count_sources"](*lists, pair, Hp, Wp, counts)
    ticks.heartbeat()
    bucket_start = np.zeros(n_slabs * Hp + 1, dtype=np.int64)
    np.cumsum(counts.ravel(), out=bucket_start[1:])
    n_src = int(bucket_start[-1])
    src_x = np.empty(n_src, dtype=np.int32)
    src_entry = np.empty(n_src, dtype=np.int32)
    src_cov = np.empty(n_src, dtype=np.float32)
    premult = np.empty((n_src, 4), dtype=np.float32)
    partner = np.empty((n_src, 4), dtype=np.float32)  # read only where paired
    paired = np.empty(n_src, dtype=np.bool_)
    kernels["fill_sources"](*lists, pair, colour.contiguous().numpy(), h_colour.contiguous().numpy(), mass.numpy(),
                            Hp, Wp, bucket_start, src_x, src_entry, src_cov, premult, partner, paired)
    ticks.heartbeat()
    if not pair:  # radii above the tables: their mass is interpolated on a grid set by the slab's largest
        entry_colour = torch.cat([colour, h_colour], dim=1)
        for j in range(n_slabs):
            lo, hi = int(bucket_start[j * Hp]), int(bucket_start[(j + 1) * Hp])
            entries = torch.from_numpy(src_entry[lo:hi]).long()
            if hi == lo or not bool(big[entries].any()):
                continue
            weight = 1.0 / source_mass(radius[entries], aperture, runs_tables)
            cov = torch.from_numpy(src_cov[lo:hi])
            part = torch.cat([entry_colour[:, entries] * cov, cov.view(1, -1)]) * weight
            premult[lo:hi] = part.t().numpy()
    boxes = np.zeros((n_slabs, 6), dtype=np.int64)
    row_reach = np.empty(n_slabs * Hp, dtype=np.int32)
    reach_np = reach.numpy()
    kernels["slab_boxes"](bucket_start, src_x, src_entry, paired, reach_np, big_np, entry_d.contiguous().numpy(),
                          n_slabs, Hp, Wp, float(ay), boxes, row_reach)
    ticks.heartbeat()
    settled = np.zeros((4, Hp, Wp), dtype=np.float32)
    # per record, in record order: row reach and table level (-1 - level for the scaled rows above the tables)
    src_reach = reach_np[src_entry]
    src_level = np.where(big_np[src_entry], -1 - level.numpy()[src_entry], level.numpy()[src_entry]).astype(np.int32)
    scale_np = scale.numpy()
    tables = (entry_cols, entry_coef, left_flat.numpy(), right_flat.numpy(), height_flat.numpy(), n_rows, n_runs,
              (n_rows - 1) // 2)
    band = band_rows(Wp, min(math.floor(rmax * ay) + 1, Hp - 1))
    for row_lo in range(0, Hp, band):
        row_hi = min(row_lo + band, Hp)
        kernels["layered_rows"](row_lo, row_hi, n_slabs, gap, boxes, bucket_start, row_reach, src_x, src_entry,
                                premult, partner, paired, src_reach, src_level, scale_np, *tables, settled)
        ticks.step(row_hi)
    return torch.from_numpy(settled)


def hidden_layer_numba(colour: torch.Tensor, defocus: torch.Tensor, lower: torch.Tensor, n_slabs: int,
                        step: float, work=None):
    """:func:`.layered.hidden_layer` with the compiled kernels (:mod:`._layered_numba_kernels`), CPU; the same samples
    (in raster order)."""
    kernels = _numba_kernels()
    H, W = defocus.shape
    factor = max(1, math.ceil(math.sqrt(H * W / FILL_CELLS)))
    h, w = math.ceil(H / factor), math.ceil(W / factor)
    colour_np = colour.reshape(3, -1).contiguous().numpy()
    flat_d = defocus.flatten().contiguous().numpy()
    radius = np.abs(flat_d)
    order, bounds = kernels["slab_members"](lower.contiguous().numpy(), n_slabs)
    plate = np.zeros((5, h * w), dtype=np.float32)
    grid = np.empty((5, h, w), dtype=np.float32)
    dist = np.empty((h, w), dtype=np.float32)
    filled = np.empty((4, h, w), dtype=np.float32)
    cand = np.empty(H * W, dtype=np.bool_)
    has = np.zeros(H * W, dtype=np.bool_)
    out_c = np.zeros((3, H * W), dtype=np.float32)
    out_d = np.zeros(H * W, dtype=np.float32)
    cells_per = np.float32(factor * factor)
    covered = False
    for m in range(n_slabs - FILL_GAP):
        if work is not None:
            work(h * w)
        if bounds[m + 1] > bounds[m]:
            kernels["plate_add"](plate, order[bounds[m]:bounds[m + 1]], colour_np, flat_d, W, factor, w)
            covered = True
        t_lo, t_hi = bounds[m + FILL_GAP], bounds[m + FILL_GAP + 1]
        if t_hi <= t_lo or not covered:
            continue
        targets = order[t_lo:t_hi]
        plate_reach = kernels["plate_grid"](plate, cells_per, grid)
        kernels["distance_grid"](grid, factor, dist)
        if kernels["hidden_candidates"](targets, radius, dist, plate_reach, W, factor, cand) == 0:
            continue
        kernels["push_pull"](grid, np.float32(0.25), filled)
        kernels["hidden_samples"](targets, cand, radius, dist, filled, W, factor, has, out_c, out_d)
    pix = torch.from_numpy(np.flatnonzero(has))
    return pix, torch.from_numpy(out_c[:, pix.numpy()]), torch.from_numpy(out_d[pix.numpy()])


@functools.lru_cache(maxsize=1)
def _numba_kernels() -> dict:
    """The compiled kernels of :mod:`._layered_numba_kernels` (loaded from numba's on-disk cache after the first
    compilation on a machine), each logging its first call once."""
    from . import _layered_numba_kernels as k

    names = ("slab_members", "plate_add", "plate_grid", "distance_grid", "hidden_candidates", "push_pull",
             "hidden_samples", "count_sources", "fill_sources", "slab_boxes", "layered_rows")
    return logged_first_calls({name: getattr(k, name) for name in names}, "layered")

"""Numba kernels with a lens shape (cat's eye, swirl, ring): the per-source kernels of
:class:`bokehme_core.aperture.LensShape`, the numba backend's "shaped" cells of the kernel table (:mod:`.table`).

Gathers over target rows, as :mod:`.numba_backend`: every target row is summed by one thread into its own
float64 accumulators in an order fixed by the kernel, so results do not depend on the thread count.

* fast: the arithmetic of :func:`.lens_kernels.scatter_fast_lens` (aperture run table read at the moved row,
  intersected with the moved clip circle's run, ring = the same at ``RING_INNER * r`` subtracted, each source
  weighted by its plain kernel's energy over the mass of its box segments, so it keeps the plain energy at every
  radius); sources with no shift and no ring (in focus, r <= 1, or at the frame centre) take the plain table
  entries of the fast path.
  One pass prepares a compact record per source (weights, shifts, table entries, and the kernel rows where the
  tables read have runs: rows where the lemon or its ring is empty are never visited); the splat then works in
  blocks of :data:`BLOCK_ROWS` target rows (``prange`` over blocks), reading each source once per block and
  writing all its rows in the block. The float32 products of the torch path are float64 here (the weights times
  the box coefficients), so both agree to float32 rounding.
* exact: per source and row, the lemon's support and interior are intervals, from chords of circles (the
  aperture's circumcircle / inscribed circle moved by ``-o``, the clip circle moved by ``+o``): interior cells
  add 1 through the difference array, rim cells get the exact float32 profile ``min(A, C)`` (written as
  ``1 / (1 + exp(-8*(edge - dist)))``); the ring's inner lemon likewise with weight ``-ring``. Circle and
  polygon apertures (masks stay on torch, as without a lens). A gather over single target rows (``prange``).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import torch

from ..aperture import CAT_EYE_GAIN, MAX_CLIP, RING_INNER, SWIRL_ANGLE, SWIRL_GAIN, Aperture, LensShape
from .common import DELTA, LEVELS_PER_PX, TABLE_RADIUS
from .lens_kernels import fast_tables, lens_premult
from .numba_runtime import (band_rows, check_exact_aperture, logged_first_calls, numba_entry_writes, numba_threads,
                            per_image_cpu, run_rows)

__all__ = ["scatter_fast_lens_numba", "scatter_exact_lens_numba"]

#: target rows per block of the fast kernel (:func:`._lens_numba_kernels.fast_rows`): each block reads the source
#: rows that reach it once; fixed, so the result does not depend on the thread count
BLOCK_ROWS = 8


@functools.lru_cache(maxsize=1)
def _kernels():
    """The compiled lens kernels (:mod:`._lens_numba_kernels`, loaded from numba's on-disk cache after the first
    compilation on a machine), each logging its first call once."""
    from . import _lens_numba_kernels as k

    return logged_first_calls({"fast_fields": k.fast_fields, "fast": k.fast_rows, "exact": k.exact_rows}, "lens")


def _interleaved(table) -> tuple:
    """A row-run table ``(left, right, height)`` (levels, rows, runs) as the fast kernel reads it: the
    ``(entries, 3)`` float32 array of the three interleaved (one cache line per lookup), the first and last row
    of each level holding a run ((levels,) int32; ``rows, -1`` for none) and the largest run end (px)."""
    left, right, height = table
    n_rows = left.shape[1]
    interleaved = np.ascontiguousarray(torch.stack([t.flatten() for t in table], dim=1).numpy())
    has_run = (height != 0).any(dim=2)  # (levels, rows)
    rows = torch.arange(n_rows).view(1, -1)
    row_lo = torch.where(has_run, rows, n_rows).amin(dim=1).to(torch.int32).numpy()
    row_hi = torch.where(has_run, rows, -1).amax(dim=1).to(torch.int32).numpy()
    on = height != 0
    extent = float(torch.maximum(left.abs(), right.abs())[on].max()) if bool(on.any()) else 0.0
    return interleaved, row_lo, row_hi, extent


def _plain_row_mass(table) -> np.ndarray:
    """(levels, half_rows + 1) float64: the mass of the rows ``|dy| <= k`` of each level of a run table (the
    plain fast kernel of a table radius with reach ``k``), summed as :func:`._lens_numba_kernels.segment_mass`."""
    left, right, height = table
    half_rows = (left.shape[1] - 1) // 2
    row_mass = ((right - left).double() * height.double()).sum(dim=2)  # (levels, rows)
    centre = row_mass[:, half_rows:half_rows + 1]
    pairs = row_mass[:, half_rows + 1:] + row_mass[:, :half_rows].flip(1)
    return np.ascontiguousarray(torch.cat([centre, centre + pairs.cumsum(dim=1)], dim=1).numpy())


def _fields(aperture: Aperture, lens: LensShape, img, dfc, dtype):
    radius = dfc.abs()
    fields = lens.fields(aperture, radius)
    H, W = radius.shape
    premult = lens_premult(img, radius, fields.norm, dtype).reshape(H, W, 4).contiguous()
    return radius, fields, premult


def scatter_fast_lens_numba(
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
    """Fast mode with lens character (numba); same arithmetic as :func:`.lens_kernels.scatter_fast_lens`.

    image (B,3,H,W) linear, CPU; defocus_px (B or 1,1,H,W) px -> (B,3,H,W) float32 ((B,4,H,W) sums with ``raw``).
    ``coverage`` (B,1,H,W) / ``max_radius``: the energy-preserving splat of :func:`.fast.scatter_fast` (``image``
    premultiplied colour, every source's lens kernel scaled to unit mass: 1 / the mass its box segments write,
    coverage-0 sources skipped, (B,4,H,W) sums returned). ``frame = (top, left, frame_height, frame_width)`` places the
    image in a larger frame for the lens fields (:meth:`LensShape.clip_vectors`; default: the image is the frame).
    The per-source lens state is computed inside the compiled code (:func:`._lens_numba_kernels.fast_fields`).
    """
    from ._lens_numba_kernels import RECORD

    kernels = _kernels()
    rmax = float(defocus_px.abs().max()) if max_radius is None else float(max_radius)
    tables = fast_tables(aperture, rmax)
    s_l, s_r, s_h = tables["shape"]
    n_levels, n_rows, n_runs = s_l.shape
    half_rows = (n_rows - 1) // 2
    base_radius = tables["base_radius"]
    ax, ay = aperture.axis_scale
    entry_cols, entry_coef = numba_entry_writes(*(t.flatten().contiguous() for t in (s_l, s_r, s_h)))
    shape_t, row_lo, row_hi, extent = _interleaved(tables["shape"])
    if tables["clip"][0] is tables["shape"][0]:  # circle apertures: one table (half the cache footprint)
        clip_t, clip_lo, clip_hi = shape_t, row_lo, row_hi
    else:
        clip_t, clip_lo, clip_hi, _ = _interleaved(tables["clip"])
    # sources this far from the borders write no column outside the row: run ends + the largest shift + rounding
    margin = math.ceil(extent + 0.5 * MAX_CLIP * min(rmax, base_radius) * ax) + 3
    big_reach = math.floor(TABLE_RADIUS * ay)
    plain_mass = _plain_row_mass(tables["shape"])
    shifted = lens.cat_eye > 0 or lens.swirl > 0
    gain = CAT_EYE_GAIN * lens.cat_eye + SWIRL_GAIN * lens.swirl
    angle = lens.swirl * SWIRL_ANGLE

    def one(img, dfc, sub):
        H, W = dfc.shape
        radius = dfc.abs().contiguous()
        top, left, frame_h, frame_w = frame if frame is not None else (0, 0, H, W)
        records = np.empty((H, W, RECORD), dtype=np.float32)  # one record per source (see fast_fields)
        span = np.empty((H, W, 4), dtype=np.int16)
        row_span = np.empty((H, 2), dtype=np.int32)
        win_y = min(math.floor(float(radius.max()) * ay) + 1, H - 1)
        band = band_rows(W, win_y, BLOCK_ROWS)
        # two passes over the rows, each in bands with progress: the per-source records, then the splat
        fields = (radius.numpy(), img.contiguous().numpy(), int(top), int(left), int(frame_h), int(frame_w), shifted,
                  float(gain), math.cos(angle), math.sin(angle), float(ax), float(ay), float(MAX_CLIP),
                  float(lens.ring), plain_mass, shape_t, clip_t, np.float32(RING_INNER), n_levels,
                  np.float32(base_radius), np.float32(LEVELS_PER_PX), big_reach, n_rows, n_runs, half_rows, row_lo,
                  row_hi, clip_lo, clip_hi, records, records.view(np.int32), span, row_span)
        run_rows(kernels["fast_fields"], H, fields, (), sub, 0, 2 * H, band)
        out = np.empty((4 if raw or img.shape[0] == 4 else 3, H, W), dtype=np.float32)
        args = (BLOCK_ROWS, win_y, row_span, span, records, records.view(np.int32), shape_t, clip_t, entry_cols,
                entry_coef, margin, n_rows, n_runs, half_rows, np.float32(RING_INNER), out)
        run_rows(kernels["fast"], H, args, (), sub, H, 2 * H, band)
        return torch.from_numpy(out)

    if coverage is not None:
        image = torch.cat([image, coverage.to(image.dtype).expand(image.shape[0], -1, -1, -1)], dim=1)
    with numba_threads():
        return per_image_cpu(image, defocus_px, one, progress)


def scatter_exact_lens_numba(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    aperture: Aperture,
    lens: LensShape,
    progress: Callable[[int, int], None] | None = None,
    *,
    raw: bool = False,
) -> torch.Tensor:
    """Exact mode with lens character (numba), circle and polygon apertures; see the module docstring."""
    check_exact_aperture(aperture)
    kernel = _kernels()["exact"]
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
        run_rows(kernel, H, args, (), sub, 0, H, band_rows(W, win_y))
        return torch.from_numpy(out)

    with numba_threads():
        return per_image_cpu(image, defocus_px, one, progress)

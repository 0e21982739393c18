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
from .numba_backend import _per_image, _run_rows, _set_threads, check_exact_aperture, entry_writes, logged_first_calls

__all__ = ["scatter_fast_lens_numba", "scatter_exact_lens_numba"]

@functools.lru_cache(maxsize=1)
def _kernels():
    """The compiled lens kernels (:mod:`._lens_numba_kernels`, loaded from numba's on-disk cache after the first
    compilation on a machine), each logging its first call once."""
    from . import _lens_numba_kernels as k

    return logged_first_calls({"fast_fields": k.fast_fields, "fast": k.fast_rows, "exact": k.exact_rows}, "lens")


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
    coverage: torch.Tensor | None = None,
    max_radius: float | None = None,
    frame: tuple | None = None,
) -> torch.Tensor:
    """Fast mode with lens character (numba); same arithmetic as :func:`.lens_kernels.scatter_fast_lens`.

    image (B,3,H,W) linear, CPU; defocus_px (B or 1,1,H,W) px -> (B,3,H,W) float32 ((B,4,H,W) sums with ``raw``).
    ``coverage`` (B,1,H,W) / ``max_radius``: the energy-preserving splat of :func:`.fast.scatter_fast` (``image``
    premultiplied colour, every source's lens kernel scaled to unit mass: ``norm / source_mass``, coverage-0
    sources skipped, (B,4,H,W) sums returned). ``frame = (top, left, frame_height, frame_width)`` places the
    image in a larger frame for the lens fields (:meth:`Lens.clip_vectors`; default: the image is the frame).
    The per-source lens state is computed inside the compiled code (:func:`._lens_numba_kernels.fast_fields`).
    """
    from ..aperture import _MASS_STEPS_PER_PX, CAT_EYE_GAIN, MAX_CLIP, SWIRL_ANGLE, SWIRL_GAIN, _mass_volume
    from .fast import LEVELS_PER_PX, TABLE_RADIUS, source_mass
    from .lens_kernels import fast_tables

    kernels = _kernels()
    _set_threads()
    rmax = float(defocus_px.abs().max()) if max_radius is None else float(max_radius)
    tables = fast_tables(aperture, rmax)
    s_l, s_r, s_h = tables["shape"]
    c_l, c_r, c_h = tables["clip"]
    n_levels, n_rows, n_runs = s_l.shape
    half_rows = (n_rows - 1) // 2
    base_radius = tables["base_radius"]
    ax, ay = aperture.axis_scale
    flat = [t.flatten().contiguous() for t in (s_l, s_r, s_h)]
    entry_cols, entry_coef = entry_writes(*flat)
    clip_flat = [t.flatten().contiguous().numpy() for t in (c_l, c_r, c_h)]
    big_reach = math.floor(TABLE_RADIUS * ay)
    mass = _mass_volume(aperture, torch.device("cpu"))[0].contiguous().numpy()  # (2, radii, clips, angles + 1)
    shifted = lens.cat_eye > 0 or lens.swirl > 0
    gain = CAT_EYE_GAIN * lens.cat_eye + SWIRL_GAIN * lens.swirl
    angle = lens.swirl * SWIRL_ANGLE

    def one(img, dfc, sub):
        H, W = dfc.shape
        radius = dfc.abs().contiguous()
        if img.shape[0] == 4:  # premultiplied colour + coverage: unit-mass kernels
            denom = source_mass(radius, aperture, tables["shape"])
        else:
            denom = radius * radius + 0.2
        top, left, frame_h, frame_w = frame if frame is not None else (0, 0, H, W)
        src_f = np.empty((H, W, 10), dtype=np.float32)  # compact records for the hot loop (see fast_fields)
        src_x = np.empty((H, W, 3), dtype=np.float32)
        src_i = np.empty((H, W, 8), dtype=np.int16)
        reach = np.empty((H, W), dtype=np.int32)
        kernels["fast_fields"](radius.numpy(), img.contiguous().numpy(), denom.contiguous().numpy(), int(top),
                               int(left), int(frame_h), int(frame_w), shifted, float(gain), math.cos(angle),
                               math.sin(angle), float(ax), float(ay), float(MAX_CLIP), float(lens.ring), mass,
                               float(_MASS_STEPS_PER_PX), np.float32(RING_INNER), n_levels, np.float32(base_radius),
                               np.float32(LEVELS_PER_PX), big_reach, src_f, src_x, src_i, reach)
        win_y = min(math.floor(float(radius.max()) * ay) + 1, H - 1)
        out = np.empty((4 if raw or img.shape[0] == 4 else 3, H, W), dtype=np.float32)
        args = (win_y, reach.max(axis=1), reach, src_f, src_x, src_i, entry_cols, entry_coef, flat[0].numpy(),
                flat[1].numpy(), flat[2].numpy(), *clip_flat, n_rows, n_runs, half_rows, np.float32(RING_INNER), out)
        _run_rows(kernels["fast"], H, args, (), sub, 0, H)
        return torch.from_numpy(out)

    if coverage is not None:
        image = torch.cat([image, coverage.to(image.dtype).expand(image.shape[0], -1, -1, -1)], dim=1)
    return _per_image(image, defocus_px, one, progress)


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

    check_exact_aperture(aperture)
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
        _run_rows(kernel, H, args, (), sub, 0, H)
        return torch.from_numpy(out)

    return _per_image(image, defocus_px, one, progress)

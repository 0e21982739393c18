"""The pieces every backend of the classical renderer shares, defined once.

* constants: :data:`DELTA` (soft-rim half width of the exact kernels), :data:`CHUNK` / :data:`EXACT_CHUNK` (torch
  work chunks), :data:`BUCKETS_PER_PX`, :data:`TABLE_RADIUS` / :data:`LEVELS_PER_PX` / :data:`RUN_THRESHOLD` (the
  fast-mode row-run tables);
* :func:`per_image`: THE batch loop (every kernel renders one image at a time through it);
* :class:`Progress`: the ``progress(done, total)`` bookkeeping inside a frame (heartbeats, so a callback that
  raises to cancel is seen after a bounded amount of work; reporting never changes what is computed);
* :func:`window_tables`: the exact mode's per-offset radius thresholds (interior / support of a window cell);
* :func:`row_runs` / :func:`source_mass`: the fast mode's row-run tables and the mass of a fast kernel;
* :func:`base_rows` / :func:`lerp_rows`: the scaled-row interpolation (radii above the tables read the rows of the
  largest table level at ``dy / scale``);
* :func:`box_writes` / :func:`entry_writes`: the four difference-array writes of a box segment (fractional
  coverage at both ends).

The compiled (numba) kernels repeat the last three in :mod:`._numba_kernels` (``splat_scaled_row``,
``scaled_entries``), with the same float32 arithmetic.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import torch

__all__ = ["Cell", "LENS_KINDS", "Progress", "HEARTBEAT_PAIRS", "per_image", "DELTA", "CHUNK", "EXACT_CHUNK",
           "BUCKETS_PER_PX", "TABLE_RADIUS", "LEVELS_PER_PX", "RUN_THRESHOLD", "window_tables", "row_runs",
           "table_radius", "source_mass", "base_rows", "lerp_rows", "box_writes", "entry_writes"]

#: units of work (source x kernel-row pairs, or source x window-cell pairs) between two heartbeats
HEARTBEAT_PAIRS = 1 << 20
#: half width (pixels) of the soft rim that the exact kernels evaluate exactly (beyond it the profile is below
#: ``exp(-8*DELTA) = 6.1e-6``)
DELTA = 1.5
#: largest number of (source, row) pairs one torch step processes at once
CHUNK = 1 << 20
#: largest number of (source, cell) pairs one step of the plain torch exact kernel processes at once
EXACT_CHUNK = 1 << 21
#: radius buckets per pixel used to order the sources of the plain torch exact kernel
BUCKETS_PER_PX = 8
#: fast mode: radii up to this use the row-run tables directly; larger radii scale the rows of the largest level
TABLE_RADIUS = 48
#: fast mode: table levels per pixel of radius (error <= 1/32 px in radius)
LEVELS_PER_PX = 16
#: fast mode: cells with a profile below this are not part of any run
RUN_THRESHOLD = 1e-6


#: the lens-shape column of the kernel table: "plain" (no lens shape: the aperture's own kernel) or "shaped"
#: (cat's eye, swirl or ring: per-source kernels that depend on the position in the frame)
LENS_KINDS = ("plain", "shaped")


class Cell(NamedTuple):
    """One cell of the kernel table (:mod:`.table`): the kernel that renders ``mode`` with a ``lens`` kind
    (:data:`LENS_KINDS`) on ``backend`` for the aperture kinds ``apertures``.

    Calling convention (:meth:`run`): a plain kernel is ``kernel(image, defocus_px, aperture, progress)``, a
    shaped one ``kernel(image, defocus_px, aperture, lens, progress)`` (``lens`` a
    :class:`bokehme_core.aperture.LensShape`); image (B,3,H,W) linear, defocus_px (B or 1,1,H,W) px ->
    (B,3,H,W) float32."""

    backend: str
    mode: str
    lens: str
    kernel: Callable
    apertures: tuple = ("circle", "polygon", "mask")

    def run(self, image, defocus_px, aperture, lens, progress):
        """Call the kernel with the arguments of its kind (``lens`` is dropped for a plain cell)."""
        if self.lens == "shaped":
            return self.kernel(image, defocus_px, aperture, lens, progress)
        return self.kernel(image, defocus_px, aperture, progress)

    @property
    def where(self) -> str:
        """``module.function`` of the kernel (for the map in docs/DEVELOPERS.md and error messages)."""
        return f"{self.kernel.__module__}.{getattr(self.kernel, '__qualname__', repr(self.kernel))}"


class Progress:
    """``progress(done, total)`` over ``total`` steps, with heartbeats inside a step.

    :meth:`step` after each step (a kernel row, a slab, a band of target rows); :meth:`work` inside a step calls
    the callback again with the current ``(done, total)`` once :data:`HEARTBEAT_PAIRS` units of work have
    accumulated. ``progress`` may be None (every method is then a no-op)."""

    __slots__ = ("callback", "total", "done", "every", "_pending")

    def __init__(self, progress: Callable[[int, int], None] | None, total: int, every: int | None = None):
        self.callback = progress
        self.total = int(total)
        self.done = 0
        self.every = int(HEARTBEAT_PAIRS if every is None else every)
        self._pending = 0

    def step(self, done: int | None = None) -> None:
        """A step finished (``done``: the new count, default one more)."""
        self.done = self.done + 1 if done is None else int(done)
        self._pending = 0
        if self.callback is not None:
            self.callback(self.done, self.total)

    def heartbeat(self, *_ignored) -> None:
        """Call the callback with the current ``(done, total)`` now (usable as a nested kernel's callback)."""
        if self.callback is not None:
            self.callback(self.done, self.total)

    def work(self, amount: int) -> None:
        """``amount`` units of work done inside the current step: a heartbeat once enough have accumulated."""
        if self.callback is None:
            return
        self._pending += int(amount)
        if self._pending >= self.every:
            self._pending = 0
            self.callback(self.done, self.total)


def per_image(image: torch.Tensor, defocus_px: torch.Tensor, one, progress) -> torch.Tensor:
    """THE batch loop of every scatter kernel: ``one(image[b] (C,H,W), defocus (H,W), sub_progress)`` per image
    (a single defocus map serves every image), stacked; ``progress(done, total)`` over all images."""
    B = image.shape[0]
    outs = []
    for b in range(B):
        sub = None
        if progress is not None:
            sub = lambda done, total, b=b: progress(b * total + done, B * total)  # noqa: E731
        outs.append(one(image[b], defocus_px[b if defocus_px.shape[0] > 1 else 0, 0], sub))
    return torch.stack(outs)


# --------------------------------------------------------------------------------------------- exact mode
def window_tables(aperture, win_x: int, win_y: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window offset ``(dy, |dx|)`` (rows ``dy + win_y``, columns ``|dx|``), float32 (2*win_y+1, win_x+1):

    ``thr``: a source of radius ``r`` covers the cell with profile ~1 (interior) iff ``r > thr``
    (``(dist' + DELTA) / inner_fraction``, inf for masks, which have no interior);
    ``lo``: the least radius for which the cell lies in the official window and gets a non-negligible weight
    (``dist' - DELTA``; for masks the area sampling widens the support by half a target pixel, or by one mask
    pixel when magnified). ``dist'`` is the anamorphic-scaled distance, computed in float64."""
    ax, ay = aperture.axis_scale
    inner = aperture.inner_fraction
    kx = torch.arange(win_x + 1, dtype=torch.float64, device=device)
    ky = torch.arange(-win_y, win_y + 1, dtype=torch.float64, device=device)
    dist_scaled = torch.sqrt((kx.view(1, -1) / ax) ** 2 + (ky.view(-1, 1) / ay) ** 2)  # (rows, cols)
    if inner > 0:
        thr = ((dist_scaled + DELTA) / inner).to(torch.float32)
    else:
        thr = torch.full_like(dist_scaled, float("inf"), dtype=torch.float32)
    if aperture.kind == "mask":
        _, bound_px, _ = aperture._mask_sampler("cpu")
        reach = torch.minimum(dist_scaled - DELTA - 0.5 / min(ax, ay), dist_scaled * bound_px / (bound_px + 1.0))
    else:
        reach = dist_scaled - DELTA
    win_lo = torch.maximum(
        ((kx.view(1, -1) - 1) / ax).expand_as(dist_scaled), ((ky.abs().view(-1, 1) - 1) / ay).expand_as(dist_scaled)
    )
    return thr, torch.maximum(reach, win_lo).to(torch.float32)


# ---------------------------------------------------------------------------------------------- fast mode
@functools.lru_cache(maxsize=16)
def row_runs(aperture, max_radius: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row-run tables of the exact kernel for radii ``0, 1/LEVELS_PER_PX, ..`` up to ``min(max_radius, TABLE_RADIUS)``.

    Returns ``(left, right, height)``, each (levels, rows, runs) float32 on the CPU, rows indexed by
    ``dy + half_rows`` with ``half_rows = floor(TABLE_RADIUS*ay) + 2`` (one zero row of padding each side);
    ``left``/``right`` are the segment ends in pixels relative to the source, ``height`` the box height
    (0 for no run).
    """
    ax, ay = aperture.axis_scale
    top = min(max_radius, TABLE_RADIUS)
    n_levels = int(math.floor(top * LEVELS_PER_PX)) + 2
    radii = torch.arange(n_levels, dtype=torch.float32) / LEVELS_PER_PX
    half_rows = math.floor(TABLE_RADIUS * ay) + 2
    half_cols = math.floor(float(radii[-1]) * ax) + 1
    dy = torch.arange(-half_rows, half_rows + 1, dtype=torch.float32).view(1, -1, 1)
    dx = torch.arange(-half_cols, half_cols + 1, dtype=torch.float32).view(1, 1, -1)
    r = radii.view(-1, 1, 1)
    prof = aperture.profile(dx, dy, r)
    wx = torch.floor(r * ax) + 1
    wy = torch.floor(r * ay) + 1
    prof = prof * ((dx.abs() <= wx) & (dy.abs() <= wy))  # official window
    on = prof > RUN_THRESHOLD
    start = on & ~torch.nn.functional.pad(on, (1, 0))[..., :-1]
    run_id = torch.cumsum(start.to(torch.int64), dim=-1) * on  # 1-based run index, 0 = off
    n_runs = max(int(run_id.max()), 1)
    flat_rows = prof.shape[0] * prof.shape[1]
    slot = (torch.arange(flat_rows).view(prof.shape[0], prof.shape[1], 1) * (n_runs + 1) + run_id).flatten()
    size = flat_rows * (n_runs + 1)
    mass = torch.zeros(size, dtype=torch.float64).index_add_(0, slot, prof.flatten().double())
    moment = torch.zeros(size, dtype=torch.float64).index_add_(0, slot, (prof * dx).flatten().double())
    peak = torch.zeros(size, dtype=torch.float64).scatter_reduce_(0, slot, prof.flatten().double(), "amax")
    mass, moment, peak = (t.view(prof.shape[0], prof.shape[1], n_runs + 1)[..., 1:] for t in (mass, moment, peak))
    has = mass > 0
    centre = torch.where(has, moment / mass.clamp(min=1e-300), 0.0)
    half = torch.where(has, mass / peak.clamp(min=1e-300) / 2, 0.0)
    height = torch.where(has, peak, 0.0)
    return (centre - half).float(), (centre + half).float(), height.float()


def table_radius(max_radius: float) -> float:
    """The ``max_radius`` argument of :func:`row_runs` for blur radii up to ``max_radius`` px."""
    return float(min(math.floor(max_radius) + 1, TABLE_RADIUS))


def base_rows(row, scale, half_rows: int, n_rows: int):
    """The scaled-row lookup: kernel row ``row`` (px, any broadcastable shape) of a source whose rows are the
    base level's scaled by ``scale`` reads the base rows ``i0``, ``i1`` (table row indices, clamped) with weight
    ``frac`` on ``i1``: ``(i0, i1, frac)``."""
    u = row / scale
    u0 = torch.floor(u)
    frac = u - u0
    i0 = (u0.long() + half_rows).clamp(0, n_rows - 1)
    i1 = (u0.long() + 1 + half_rows).clamp(0, n_rows - 1)
    return i0, i1, frac


def lerp_rows(values: torch.Tensor, index0, index1, frac) -> torch.Tensor:
    """``values[index0] * (1 - frac) + values[index1] * frac``: one table column between two base rows."""
    return values[index0] * (1 - frac) + values[index1] * frac


_LEVEL_MASS: dict = {}  # mass per table level, per (cached) row-run table


def source_mass(radius: torch.Tensor, aperture, tables) -> torch.Tensor:
    """Total weight that the fast kernel of radius ``radius`` (px, any shape) spreads, with the row tables
    ``tables`` of :func:`row_runs` (before any clipping at the image border): the per-source normaliser of the
    energy-preserving splat. Radii above the tables (scaled rows) are interpolated from a grid of exact
    values (relative error below 1e-3)."""
    left_t, right_t, height_t = (t.to(radius.device) for t in tables)
    n_levels, n_rows, n_runs = left_t.shape
    half_rows = (n_rows - 1) // 2
    ax, ay = aperture.axis_scale
    key = (id(tables[0]), left_t.shape, str(radius.device))
    level_mass = _LEVEL_MASS.get(key)
    if level_mass is None:
        level_mass = ((right_t - left_t) * height_t).sum(dim=(1, 2)).to(torch.float64)  # (levels,)
        if len(_LEVEL_MASS) > 32:
            _LEVEL_MASS.clear()
        _LEVEL_MASS[key] = level_mass
    radius = radius.to(torch.float32)
    reach = torch.floor(radius * ay) + 1
    big = reach > math.floor(TABLE_RADIUS * ay)
    level = torch.round(radius * LEVELS_PER_PX).long().clamp(max=n_levels - 1)
    mass = level_mass[level]
    if bool(big.any()):
        base_radius = float(n_levels - 1) / LEVELS_PER_PX
        r_big = radius[big].to(torch.float64)
        grid = torch.linspace(base_radius, float(r_big.max()) + 1.0, 96, dtype=torch.float64, device=radius.device)
        masses = []
        for r in grid.tolist():  # exact mass of the scaled rows, as the kernels compute them
            sc = r / base_radius
            win = math.floor(r * ay) + 1
            dy = torch.arange(-win, win + 1, dtype=torch.float32, device=radius.device)
            i0, i1, frac = base_rows(dy, sc, half_rows, n_rows)
            frac = frac.unsqueeze(1)
            left = lerp_rows(left_t[-1], i0, i1, frac) * sc
            right = lerp_rows(right_t[-1], i0, i1, frac) * sc
            height = lerp_rows(height_t[-1], i0, i1, frac)
            masses.append(float(((right - left) * height).sum()))
        per_area = torch.tensor(masses, dtype=torch.float64, device=radius.device) / grid**2
        pos = ((r_big - grid[0]) / (grid[1] - grid[0])).clamp(0, len(grid) - 1.000001)
        i = pos.floor().long()
        f = pos - i
        mass = mass.clone()
        mass[big] = (per_area[i] * (1 - f) + per_area[(i + 1).clamp(max=len(grid) - 1)] * f) * r_big**2
    return mass.to(torch.float32)


# --------------------------------------------------------------------------------------- difference arrays
def box_writes(pos_l: torch.Tensor, pos_r: torch.Tensor, height, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The four difference-array writes of box segments of ``height`` from ``pos_l`` to ``pos_r`` (positions
    already shifted by half a cell, so that the cell holding a point is its floor): ``(columns, coefficients)``,
    each the four writes stacked along ``dim`` (columns as floats, before clipping): ``+cover_l`` at the first
    cell, ``1 - cover_l`` at the next, ``cover_r - 1`` at the last cell and ``-cover_r`` after it, times
    ``height``. A prefix sum along the row turns them into the box with fractional coverage at both ends."""
    cell_l = torch.floor(pos_l)
    cell_r = torch.floor(pos_r)
    cover_l = cell_l + 1 - pos_l  # coverage of the first cell
    cover_r = pos_r - cell_r  # coverage of the last cell
    cols = torch.stack([cell_l, cell_l + 1, cell_r, cell_r + 1], dim=dim)
    coef = torch.stack([cover_l, 1 - cover_l, cover_r - 1, -cover_r], dim=dim) * height
    return cols, coef


def entry_writes(left_flat: torch.Tensor, right_flat: torch.Tensor, height_flat: torch.Tensor):
    """The four writes of every row-run table entry (at a table radius, source at column 0): ``(cols (N, 4)
    float32, coef (N, 4) float32)`` (:func:`box_writes` of the entries' ends)."""
    return box_writes(left_flat + 0.5, right_flat + 0.5, height_flat.unsqueeze(1), dim=1)

"""Layered mode: occlusion-aware classical rendering on top of the fast scatter kernels.

The official scatter renderer (modes ``"exact"`` and ``"fast"``) has no depth order: a blurred background
spreads over a sharp subject in front of it (halo), and a blurred foreground cannot show the background it
hides. The layered mode splits the scene into depth slabs and composites them back to front:

1. **Soft slabs.** The signed defocus range ``[d_min, d_max]`` (px, positive = nearer than focus) is split
   into ``S`` slab centres ``d_min + j * step`` with ``step ~ slab_px`` (default 1 px of blur radius between
   neighbours; at most ``max_slabs`` slabs, the step grows beyond). Every pixel is shared between its two
   neighbouring slabs with tent (linear) weights, so anti-aliased edges and thin structures keep their
   coverage and nothing bands at slab boundaries.
2. **Energy-preserving splats.** Each slab's premultiplied linear colour and its coverage are scattered with
   the fast kernels (:func:`.fast.scatter_fast`, or the lens kernels, with ``coverage=``): every source keeps
   its own blur radius and the aperture (circle, polygon, mask, anamorphic), and its kernel is scaled to unit
   mass, so a slab's blurred coverage is an opacity in [0, 1].
   Only the slab's bounding box (plus its largest radius) is processed, so the cost follows the number of
   sources (each pixel is in at most two slabs, plus the fill below), not ``S`` times the image.
3. **Occlusion ("over" with additive occluder coverage).** ``total = sum_j C_j * clamp(1 - sum_{k >= j + gap}
   A_k, 0, 1)`` (``C`` premultiplied colour, ``A`` blurred coverage), then ``colour = total_rgb /
   total_coverage``. The coverages of nearer slabs are summed rather than multiplied as ``prod (1 - A_k)``:
   the tent parts of one pixel are disjoint parts of it, and a product would leave a pixel split between two
   slabs up to 25 % transparent (the background shining through sharp objects; measured -1 to -3 dB). A slab
   is hidden only by slabs at least ``occlusion_gap`` (default 2) steps nearer, so the two tent parts of one
   pixel and a smoothly varying surface never occlude themselves (depth steps below ~2 px of blur radius are
   blended, as the plain scatter does), while real depth edges occlude.
4. **Hidden background fill** (``fill=True``): what a blurred foreground reveals behind its edge is unknown
   in a single image. Behind every pixel ``p`` of slab ``j`` whose blur (or the blur of what lies behind)
   can reveal it, a hidden sample is added: the colour and defocus of the scene farther than ``j - 3`` slabs,
   extended into ``p`` by push-pull (a pyramid of coverage-weighted means, coarse levels filling where the
   finer ones have no farther content; computed on a grid downscaled to at most ~130k cells). Hidden
   samples join the slab of their own defocus with coverage 1 and are composited like visible pixels, so
   the nearer slab covers them wherever it is opaque and they show through where it is blurred thin.
5. **Image border:** the inputs are reflect-padded by the largest blur radius (at most 64 px) before
   rendering, so blur at the border sees a plausible continuation instead of losing coverage.

Cells (:mod:`.table`): the torch backend renders slab by slab on crops with :func:`.fast.scatter_fast`
(:func:`scatter_layered`) or :func:`.lens_kernels.scatter_fast_lens` (:func:`scatter_layered_lens`), CPU or
CUDA; the numba backend (:mod:`.layered_numba`) does the hidden-sample search and, without a lens shape, the
whole slab loop in compiled passes: the sources bucketed per (slab, row), then every output row composited near
to far with each slab's splat row (the fast kernel over the slab's box, as the crops; a pixel's two tent parts
written by one record); with a lens shape, the per-slab numba lens kernels. Same arithmetic, so the backends
agree to float rounding. A backend plugs its pieces in with :class:`SlabParts`.

Inputs are linear (after ``** gamma``, highlight boost included); :func:`bokehme_core.render_classical`
(``mode="layered"``) does that and the ``** (1/gamma)``. Memory: about 25 float32 values per (padded) pixel
of one image at a time (images of a batch are rendered one by one), whatever K; the slab count is capped
by ``max_slabs``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from .._checks import check_range
from ..aperture import Aperture
from .common import Progress, per_image
from .fast import scatter_fast
from .lens_kernels import scatter_fast_lens

__all__ = ["scatter_layered", "scatter_layered_lens", "SlabParts", "hidden_layer", "SLAB_PX", "MAX_SLABS",
           "OCCLUSION_GAP"]

logger = logging.getLogger(__name__)

#: default spacing of slab centres, px of signed defocus (= blur radius)
SLAB_PX = 1.0
#: default largest number of slabs (time grows with it; memory does not)
MAX_SLABS = 96
#: a slab is occluded by slabs at least this many steps nearer
OCCLUSION_GAP = 2
#: hidden samples come from content at least this many slab steps farther than the pixel
FILL_GAP = 3
#: the push-pull grid has at most about this many cells
FILL_CELLS = 130_000
#: largest reflect padding at the image border (px)
_MAX_PAD = 64


class SlabParts(NamedTuple):
    """What a backend plugs into the layered mode (its layered cells pass their own, see :mod:`.table`).

    splat: ``splat(image (1,3,h,w), defocus (1,1,h,w), aperture, progress, coverage=, max_radius=)`` -> (1,4,h,w),
        the energy-preserving fast splat of one slab's crop (with ``framed``, also ``frame=(top, left,
        frame_height, frame_width)``: the crop's place in the frame, for the lens fields).
    hidden_search: :func:`hidden_layer` or a function with its signature and results.
    composite: None (slab by slab with ``splat``), or the whole slab loop in one pass
        (:func:`.layered_numba.composite_numba`; progress then counts the padded rows).
    framed: ``splat`` takes ``frame=`` (lens kernels).
    threads: a context manager factory around the whole render (numba's thread count).
    """

    splat: Callable
    hidden_search: Callable
    composite: Callable | None = None
    framed: bool = False
    threads: Callable = contextlib.nullcontext


def scatter_layered(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    aperture: Aperture,
    progress: Callable[[int, int], None] | None = None,
    *,
    parts: SlabParts | None = None,
    slab_px: float = SLAB_PX,
    max_slabs: int = MAX_SLABS,
    occlusion_gap: int = OCCLUSION_GAP,
    fill: bool = True,
    pad: bool = True,
) -> torch.Tensor:
    """Occlusion-aware layered scatter (see the module docstring); the torch cell without a lens shape.

    Args:
        image: (B, 3, H, W) float, linear values >= 0 (already ``** gamma``).
        defocus_px: (B or 1, 1, H, W) signed defocus in px (positive = nearer than focus).
        aperture: :class:`bokehme_core.Aperture`.
        progress: optional ``progress(done, total)`` over the slabs (or, with a ``composite``, the padded rows)
            of all images.
        parts: the backend's pieces (:class:`SlabParts`); default the torch ones (:func:`.fast.scatter_fast` per
            slab, :func:`hidden_layer`), CPU or CUDA. The other layered cells: :func:`scatter_layered_lens`
            (torch, lens shape), :mod:`.layered_numba` (numba).
        slab_px: spacing of the slab centres in px of blur radius, > 0.
        max_slabs: largest number of slabs, >= 1.
        occlusion_gap: slabs this many steps nearer occlude (>= 1; 1 = plain "over").
        fill: add the hidden-background samples (push-pull extension of farther content).
        pad: reflect-pad the border by the largest radius (<= 64 px) before rendering.

    Returns:
        (B, 3, H, W) float32 linear values on the device of ``image``.
    """
    slab_px = check_range(slab_px, "slab_px", 1e-3, 1000.0)
    max_slabs = int(check_range(max_slabs, "max_slabs", 1, 1024))
    occlusion_gap = int(check_range(occlusion_gap, "occlusion_gap", 1, 8))
    if parts is None:
        parts = SlabParts(scatter_fast, hidden_layer)

    def one(img, d, sub):
        return _layered_one(img.to(torch.float32), d.to(torch.float32), aperture, sub, parts, float(slab_px),
                            int(max_slabs), int(occlusion_gap), bool(fill), bool(pad))

    with parts.threads():
        return per_image(image, defocus_px, one, progress)


def scatter_layered_lens(image: torch.Tensor, defocus_px: torch.Tensor, aperture: Aperture, lens,
                         progress: Callable[[int, int], None] | None = None, **options) -> torch.Tensor:
    """:func:`scatter_layered` with a lens shape (:class:`bokehme_core.aperture.LensShape`): every slab splatted
    with :func:`.lens_kernels.scatter_fast_lens` (torch, CPU or CUDA); ``options`` as :func:`scatter_layered`."""

    def splat(img, dfc, ap, sub, **kwargs):
        return scatter_fast_lens(img, dfc, ap, lens, sub, **kwargs)

    return scatter_layered(image, defocus_px, aperture, progress, parts=SlabParts(splat, hidden_layer, framed=True),
                           **options)


def _layered_one(image, defocus, aperture, progress, parts: SlabParts, slab_px, max_slabs, gap, fill, pad):
    H, W = defocus.shape
    rmax = float(defocus.abs().max())
    if rmax == 0.0:  # K = 0 or everything in focus: the image itself (no kernel leak)
        return image.clone()
    margin = 0
    if pad:
        margin = min(int(math.ceil(rmax)) + 1, _MAX_PAD)
        if margin > 0:
            mode = "reflect" if margin < min(H, W) else "replicate"
            image = F.pad(image[None], (margin,) * 4, mode=mode)[0]
            defocus = F.pad(defocus[None, None], (margin,) * 4, mode=mode)[0, 0]
    Hp, Wp = defocus.shape
    device = image.device
    d_min, d_max = float(defocus.min()), float(defocus.max())
    n_slabs = max(1, min(max_slabs, int(math.ceil((d_max - d_min) / slab_px - 1e-6)) + 1))
    step = (d_max - d_min) / (n_slabs - 1) if n_slabs > 1 else 1.0
    flat_d = defocus.flatten()
    pos = ((flat_d - d_min) / step).clamp(0, n_slabs - 1) if n_slabs > 1 else torch.zeros_like(flat_d)
    lower = pos.floor().clamp(max=max(n_slabs - 2, 0)).long()
    upper_w = pos - lower
    colour = image.reshape(3, -1)
    # progress: over the output rows (numba, one compiled pass) or the slabs; heartbeats during the fill
    ticks = Progress(progress, Hp if parts.composite is not None else n_slabs)
    logger.debug("layered: %dx%d (+%d px border), %d slabs of %.3f px, gap %d, fill %s", W, H, margin, n_slabs,
                 step, gap, fill)

    # sources: (entry, slab, coverage) over the entries "every pixel" + "every hidden sample"
    n = flat_d.numel()
    entry_colour, entry_d, entry_target = colour, flat_d, torch.arange(n, device=device)
    src_entry = [entry_target, entry_target]
    src_slab = [lower, lower + 1]
    src_cov = [1.0 - upper_w, upper_w]
    hidden = None  # (pixels, colour, farther slab, upper tent weight) of the hidden samples
    if fill and n_slabs > FILL_GAP:
        hidden_pix, hidden_colour, hidden_d = parts.hidden_search(colour.view(3, Hp, Wp), defocus, lower, n_slabs, step,
                                                     work=ticks.heartbeat)  # a report after every slab
        if hidden_pix.numel():
            h_pos = ((hidden_d - d_min) / step).clamp(0, n_slabs - 1)
            h_lower = h_pos.floor().clamp(max=n_slabs - 2).long()
            h_upper = h_pos - h_lower
            h_entry = torch.arange(n, n + hidden_pix.numel(), device=device)
            src_entry += [h_entry, h_entry]
            src_slab += [h_lower, h_lower + 1]
            src_cov += [1.0 - h_upper, h_upper]
            entry_colour = torch.cat([colour, hidden_colour], dim=1)
            entry_d = torch.cat([flat_d, hidden_d])
            entry_target = torch.cat([entry_target, hidden_pix])
            hidden = (hidden_pix, hidden_colour, h_lower, h_upper)
        logger.debug("layered: %d hidden samples (%.1f%% of the pixels)", hidden_pix.numel(),
                     100.0 * hidden_pix.numel() / n)
    if parts.composite is not None:  # one compiled pass over all slabs (same arithmetic)
        settled = parts.composite(colour, entry_d, lower, upper_w, hidden, n_slabs, Hp, Wp, aperture, rmax, gap,
                                   ticks)
        return _resolve(settled, image, margin, H, W)
    src_entry, src_slab, src_cov = torch.cat(src_entry), torch.cat(src_slab), torch.cat(src_cov)
    keep = src_cov > 0
    src_entry, src_slab, src_cov = src_entry[keep], src_slab[keep], src_cov[keep]
    order = torch.argsort(src_slab, stable=True)
    src_entry, src_slab, src_cov = src_entry[order], src_slab[order], src_cov[order]
    bounds = torch.searchsorted(src_slab, torch.arange(n_slabs + 1, device=device)).tolist()
    del order, keep, pos, upper_w, src_slab

    # near to far: total += splat_j * clamp(1 - occluder_j, 0, 1) with occluder_j = sum_{k >= j + gap} A_k, the
    # blurred coverage of the slabs at least `gap` steps nearer, summed (the tent parts of one pixel are
    # disjoint parts of it, so their coverages add; a product of (1 - A_k) would leave a pixel split between
    # two slabs partly transparent). `queue` holds the last `gap` splats (None for empty slabs).
    settled = torch.zeros(4, Hp, Wp, dtype=torch.float32, device=device)
    occluder = torch.zeros(1, Hp, Wp, dtype=torch.float32, device=device)
    queue: list = [None] * gap
    for j in range(n_slabs - 1, -1, -1):
        due = queue.pop(0)
        if due is not None:
            (y0, y1, x0, x1), splat = due
            occluder[:, y0:y1, x0:x1] += splat[3:4]
        lo, hi = bounds[j], bounds[j + 1]
        layer = None
        if hi > lo:
            entries = src_entry[lo:hi]
            layer = _render_slab(entry_target[entries], src_cov[lo:hi], entry_colour[:, entries], entry_d[entries],
                                 Hp, Wp, aperture, parts.splat, rmax, (margin, H, W) if parts.framed else None,
                                 ticks.heartbeat)
            (y0, y1, x0, x1), splat = layer
            settled[:, y0:y1, x0:x1] += splat * (1.0 - occluder[:, y0:y1, x0:x1]).clamp(0.0, 1.0)
        queue.append(layer)
        ticks.step()
    return _resolve(settled, image, margin, H, W)


def _resolve(settled, image, margin, H, W):
    """Colour = premultiplied colour / coverage (the image where nothing landed), border padding removed."""
    coverage = settled[3:4]
    out = torch.where(coverage > 1e-6, settled[:3] / coverage.clamp(min=1e-6), image)
    if margin > 0:
        out = out[:, margin:margin + H, margin:margin + W]
    return out.contiguous()


def _render_slab(target, cov, c, d, Hp, Wp, aperture, scatter, rmax, frame=None, heartbeat=None):
    """Scatter one slab's sources (pixel ``target``, coverage, linear colour (3, n), signed defocus) inside
    their bounding box plus their largest radius; returns ``((y0, y1, x0, x1), (4, h, w) splat)``.
    ``frame = (margin, H, W)`` (lens splats): the crop's place in the unpadded image, for the lens fields;
    ``heartbeat``: the slab kernel's progress callback."""
    ys = torch.div(target, Wp, rounding_mode="floor")
    xs = target - ys * Wp
    reach = int(math.ceil(float(d.abs().max()))) + 2
    y0, y1 = max(int(ys.min()) - reach, 0), min(int(ys.max()) + reach + 1, Hp)
    x0, x1 = max(int(xs.min()) - reach, 0), min(int(xs.max()) + reach + 1, Wp)
    h, w = y1 - y0, x1 - x0
    local = (ys - y0) * w + (xs - x0)
    device = c.device
    cov_img = torch.zeros(h * w, dtype=torch.float32, device=device)
    d_img = torch.zeros(h * w, dtype=torch.float32, device=device)
    c_img = torch.zeros(3, h * w, dtype=torch.float32, device=device)
    # a pixel holds one visible or one hidden source per slab (the hidden ones lie >= 2 slabs farther)
    cov_img.index_add_(0, local, cov)
    c_img.index_add_(1, local, c * cov)
    d_img[local] = d
    extra = {} if frame is None else {"frame": (y0 - frame[0], x0 - frame[0], frame[1], frame[2])}
    splat = scatter(c_img.view(1, 3, h, w), d_img.view(1, 1, h, w), aperture, heartbeat,
                    coverage=cov_img.view(1, 1, h, w), max_radius=rmax, **extra)
    return (y0, y1, x0, x1), splat[0]


# ------------------------------------------------------------------------------------------ hidden fill
def hidden_layer(colour: torch.Tensor, defocus: torch.Tensor, lower: torch.Tensor, n_slabs: int, step: float,
                 work=None):
    """Hidden samples behind the pixels whose blur can reveal what they hide.

    colour (3, H, W) linear, defocus (H, W) px, lower (H*W,) the farther slab of every pixel's tent.
    For every slab index m, the content of slabs ``<= m`` (the "plate") is extended by push-pull and read at
    the pixels of slab ``m + 3``; a pixel gets a hidden sample when farther content lies within its own blur
    radius plus the hidden sample's radius (plus one grid cell). Returns ``(pixel indices (n,), colour (3, n),
    defocus (n,))``. ``work``: optional ``work(units)`` called after each slab (progress heartbeats).
    """
    H, W = defocus.shape
    device = colour.device
    factor = max(1, math.ceil(math.sqrt(H * W / FILL_CELLS)))
    h, w = math.ceil(H / factor), math.ceil(W / factor)
    flat_d = defocus.flatten()
    radius = flat_d.abs()
    order = torch.argsort(lower.to(torch.int32), stable=True)
    bounds = torch.searchsorted(lower[order], torch.arange(n_slabs + 1, device=device)).tolist()
    # per-cell sums of (colour, defocus, 1) for every slab's pixels, accumulated into the plate slab by slab
    cells_per = float(factor * factor)
    plate = torch.zeros(5, h * w, dtype=torch.float32, device=device)
    out_pix, out_c, out_d = [], [], []
    for m in range(n_slabs - FILL_GAP):
        if work is not None:
            work(h * w)
        lo, hi = bounds[m], bounds[m + 1]
        if hi > lo:
            members = order[lo:hi]
            my, mx = torch.div(members, W, rounding_mode="floor"), members % W
            cell = torch.div(my, factor, rounding_mode="floor") * w + torch.div(mx, factor, rounding_mode="floor")
            values = torch.cat([colour.reshape(3, -1)[:, members], flat_d[members].view(1, -1),
                                torch.ones(1, members.numel(), device=device)])
            plate.index_add_(1, cell, values)
        t_lo, t_hi = bounds[m + FILL_GAP], bounds[m + FILL_GAP + 1]
        if t_hi <= t_lo or float(plate[4].sum()) <= 0:
            continue
        targets = order[t_lo:t_hi]
        grid = plate.view(5, h, w) / cells_per
        dist_grid = _distance_to(grid[4] > 0) * factor
        ty, tx = torch.div(targets, W, rounding_mode="floor"), targets % W
        fy = ((ty.to(torch.float32) + 0.5) / factor - 0.5).clamp(0, h - 1)
        fx = ((tx.to(torch.float32) + 0.5) / factor - 0.5).clamp(0, w - 1)
        dist = _nearest(dist_grid, fy, fx)
        # candidates: farther content within the pixel's radius + the largest radius of the plate (+ a cell)
        plate_reach = float(torch.maximum(grid[3] / grid[4].clamp(min=1e-12), -grid[3] / grid[4].clamp(min=1e-12))
                            .masked_fill(grid[4] <= 0, 0).max())
        cand = dist <= radius[targets] + plate_reach + factor
        if not bool(cand.any()):
            continue
        targets, fy, fx, dist = targets[cand], fy[cand], fx[cand], dist[cand]
        filled = _push_pull(grid)
        sample = _bilinear(filled, fy, fx)  # (4, n): colour, defocus
        need = dist <= radius[targets] + sample[3].abs() + factor
        if bool(need.any()):
            out_pix.append(targets[need])
            out_c.append(sample[:3, need])
            out_d.append(sample[3, need])
    if not out_pix:
        empty = torch.zeros(0, device=device)
        return empty.long(), torch.zeros(3, 0, device=device), empty
    return torch.cat(out_pix), torch.cat(out_c, dim=1), torch.cat(out_d)


def _push_pull(grid: torch.Tensor, threshold: float = 0.25) -> torch.Tensor:
    """Push-pull extension of premultiplied values ``grid`` (C + 1, h, w), last channel the coverage in [0, 1]:
    (C, h, w) normalised values, defined everywhere when the input has any coverage. Pull: 2x2 means up to a
    single cell; push: from coarse to fine, ``value = a * fine + (1 - a) * upsampled coarse`` with
    ``a = clamp(coverage / threshold, 0, 1)``, so the nearest farther content fills a hole."""
    levels = [grid]
    while levels[-1].shape[-1] > 1 or levels[-1].shape[-2] > 1:
        g = levels[-1]
        ph, pw = g.shape[-2] % 2, g.shape[-1] % 2
        if ph or pw:
            g = F.pad(g[None], (0, pw, 0, ph))[0]
        levels.append(F.avg_pool2d(g[None], 2)[0])
    top = levels[-1]
    value = top[:-1] / top[-1:].clamp(min=1e-12)
    for level in range(len(levels) - 2, -1, -1):
        g = levels[level]
        size = g.shape[-2:]
        up = F.interpolate(value[None], scale_factor=2, mode="bilinear", align_corners=False)[0]
        up = up[:, : size[0], : size[1]]
        cov = g[-1:]
        alpha = (cov / threshold).clamp(0.0, 1.0)
        value = alpha * (g[:-1] / cov.clamp(min=1e-12)) + (1 - alpha) * up
    return value


def _distance_to(mask: torch.Tensor) -> torch.Tensor:
    """Euclidean distance (cells) of every cell of (h, w) to the nearest True cell (scipy's exact EDT)."""
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(~mask.cpu().numpy())
    return torch.from_numpy(dist).to(device=mask.device, dtype=torch.float32)


def _bilinear(grid: torch.Tensor, fy: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
    """(C, n) bilinear samples of ``grid`` (C, h, w) at fractional positions (clamped inside)."""
    h, w = grid.shape[-2:]
    y0 = fy.floor().long().clamp(0, h - 1)
    x0 = fx.floor().long().clamp(0, w - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    x1 = (x0 + 1).clamp(max=w - 1)
    wy = fy - y0
    wx = fx - x0
    flat = grid.reshape(grid.shape[0], -1)
    a = flat[:, y0 * w + x0]
    b = flat[:, y0 * w + x1]
    c = flat[:, y1 * w + x0]
    d = flat[:, y1 * w + x1]
    return (a * (1 - wx) + b * wx) * (1 - wy) + (c * (1 - wx) + d * wx) * wy


def _nearest(grid: torch.Tensor, fy: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
    h, w = grid.shape
    return grid.flatten()[fy.round().long().clamp(0, h - 1) * w + fx.round().long().clamp(0, w - 1)]

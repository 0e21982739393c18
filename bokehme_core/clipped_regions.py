"""Clipped regions of a photo and how far each one exceeded the clip level (highlight recovery's estimator).

An 8-bit photo stores every light brighter than white as 1.0, so the clipped pixels themselves say nothing about
how bright the light was. Their edge does: a pixel straddling the edge of a region of radiance ``L`` (in units of
the clip level) records ``L`` times its share of the region's light, and clips when that reaches 1. The brighter
the region, the more of its anti-aliased edge is swallowed by the clipped area and the darker the first unclipped
pixels just outside it. Model: an edge that falls linearly from the region to the background over ``w`` px (the
anti-aliasing / optics of the camera or renderer), pixels at a uniformly random sub-pixel offset. The first
unclipped pixel's excess over the background, as a fraction ``e`` of ``1 - background`` (the "rim fraction"), is
then on average ``1 - L / (2 w)`` for ``L <= w`` and ``w / (2 L)`` above; inverted:
``L = 2 w (1 - e)`` for ``e >= 1/2`` and ``L = w / (2 e)`` below. A surface just above white keeps a bright,
graded rim (``e`` near ``1 - 1/(2w)``, ``L`` near 1); a light far over the clip level ends in a hard step (``e``
near 0).

The evidence is one-sided: a bright graded rim can only come from a region barely over the clip level (or from a
glow around it, which is rarer for surfaces than for lights), while a hard rim can also come from a dark
surround, a dark lamp housing or sharpening halos. So the estimate may only lower the gain below the fixed prior
(the gain chosen for lights, ``RECOVER_GAIN``), never raise it; regions with little rim evidence (one-pixel
lights, a background as bright as the region) keep about the prior.

:func:`region_gains` labels the 8-connected clipped regions (:func:`label_regions`: label hooking and pointer
jumping on the horizontal runs of clipped pixels), pairs, along each of the 8 directions leaving a region, each
boundary pixel's first unclipped neighbour with the pixel ``RIM_FAR_PX`` further out (the local background), sums
``rim - background`` and
``1 - background`` per region (the brightest channel, linear light, float64) and blends the model's ``L`` with the prior
in log space, with weight ``W / (W + PRIOR_WEIGHT)`` on the measurement (``W`` = the summed
``1 - background``). The cost is a few gathers and scatters on the clipped pixels and their neighbours: it grows
with the number of clipped pixels, not with the image size. It runs on the CPU whatever the image's device
(deterministic: no random numbers, no atomics; min reductions and float64 sums over pairs in a fixed order).

Conventions: image (B, 3, H, W) sRGB in [0, 1]; gains are linear-light multipliers in [1, prior].
"""

from __future__ import annotations

import logging
import math

import torch

from ._checks import check_image, check_range

__all__ = ["region_gains", "label_regions", "RIM_WIDTH", "RIM_FAR_PX", "PRIOR_WEIGHT"]

logger = logging.getLogger(__name__)

#: width ``w`` (px) of the edge ramp of the model above: about the 10-90 % edge width of camera images (optical
#: low-pass filter, demosaicing, lens) and of renderers' default pixel filters (1 px is a box filter). A wider
#: assumed ramp reads the same rim as a brighter region.
RIM_WIDTH = 2.0
#: distance (px, along each of the 8 directions) from the first unclipped pixel to its local background sample
RIM_FAR_PX = 2
#: rim weight (summed ``1 - background`` over a region's rim pairs) at which measurement and prior count equally
PRIOR_WEIGHT = 4.0

_OFFSETS = ((0, 1), (1, -1), (1, 0), (1, 1), (0, -1), (-1, 1), (-1, 0), (-1, -1))  # the 8 directions (dy, dx)


def _srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _runs(flat: torch.Tensor, W: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Horizontal runs of the True pixels given by their sorted flat indices ``row * W + x``: (R,) row index
    ``b * H + y``, first and last x (inclusive), row-major."""
    if flat.numel() == 0:
        return flat.clone(), flat.clone(), flat.clone()
    x = flat % W
    start = torch.ones_like(flat, dtype=torch.bool)
    start[1:] = (flat[1:] != flat[:-1] + 1) | (x[1:] == 0)
    first_index = start.nonzero().squeeze(1)
    last_index = torch.cat([first_index[1:] - 1, torch.tensor([flat.numel() - 1])])
    return flat[first_index] // W, x[first_index], x[last_index]


def _connect(n: int, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Connected components of the graph (n nodes, edges u-v): label hooking to the smaller root and pointer
    jumping until every edge joins two nodes of one root. Returns (n,) labels in [0, count), numbered in order of
    their smallest node, and count."""
    parent = torch.arange(n)
    while u.numel():
        pu, pv = parent[u], parent[v]
        if bool((pu == pv).all()):
            break
        low = torch.minimum(pu, pv)
        parent.scatter_reduce_(0, pu, low, reduce="amin")
        parent.scatter_reduce_(0, pv, low, reduce="amin")
        while True:  # pointer jumping: every node points at its root
            grand = parent[parent]
            if torch.equal(grand, parent):
                break
            parent = grand
    roots, labels = torch.unique(parent, return_inverse=True)
    return labels, int(roots.numel())


def _label_runs(candidates: torch.Tensor):
    """8-connected regions of (B, H, W) bool, labelled per horizontal run: (row, first, last, label), count."""
    B, H, W = candidates.shape
    row, first, last = _runs(candidates.reshape(-1).nonzero().squeeze(1), W)
    n = row.numel()
    if n == 0:
        return row, first, last, row.clone(), 0
    # run i (row r) touches run j (row r + 1, same image) iff first_j <= last_i + 1 and last_j >= first_i - 1; the
    # runs of row r + 1 are sorted and disjoint, so those j form one contiguous range [lo, hi)
    stride = W + 2
    key_first, key_last = row * stride + first, row * stride + last
    below = (row + 1) * stride
    lo = torch.searchsorted(key_last, below + first - 1, side="left")
    hi = torch.searchsorted(key_first, below + last + 1, side="right")
    count = (hi - lo).clamp(min=0) * ((row % H) != H - 1)
    u = torch.repeat_interleave(torch.arange(n), count)
    offset = torch.arange(u.numel()) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    v = torch.repeat_interleave(lo, count) + offset
    labels, regions = _connect(n, u, v)
    return row, first, last, labels, regions


def _run_pixels(row: torch.Tensor, first: torch.Tensor, last: torch.Tensor, W: int) -> torch.Tensor:
    """Flat indices ``row * W + x`` of every pixel of the runs, run by run (row-major)."""
    length = last - first + 1
    start = torch.repeat_interleave(row * W + first, length)
    offset = torch.arange(start.numel()) - torch.repeat_interleave(torch.cumsum(length, 0) - length, length)
    return start + offset


def label_regions(candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """8-connected regions of a boolean mask, labelled on its True pixels only (per horizontal run of them).

    Args:
        candidates: (B, H, W) bool.

    Returns:
        ``(coords, labels, count)``: (N, 3) int64 ``(b, y, x)`` of the True pixels (row-major order), (N,) int64
        region index in ``[0, count)`` (regions numbered in order of their first pixel: deterministic).
    """
    if not isinstance(candidates, torch.Tensor) or candidates.ndim != 3:
        got = getattr(candidates, "shape", type(candidates))
        raise ValueError(f"candidates must be a (B,H,W) bool tensor, got {got}")
    candidates = candidates.bool().cpu()
    B, H, W = candidates.shape
    row, first, last, run_labels, count = _label_runs(candidates)
    flat = _run_pixels(row, first, last, W)
    coords = torch.stack([flat // (H * W), (flat // W) % H, flat % W], dim=1)
    return coords, torch.repeat_interleave(run_labels, last - first + 1), count


def region_gains(image: torch.Tensor, threshold: float, prior: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimated linear-light gain of every clipped pixel, one per 8-connected clipped region.

    Args:
        image: (B, 3, H, W) sRGB in [0, 1].
        threshold: a pixel is clipped when its brightest channel exceeds this sRGB level.
        prior: gain of a region without rim evidence, and the largest gain (>= 1).

    Returns:
        ``(pixels, gain)``: (N,) int64 flat indices ``(b * H + y) * W + x`` of the clipped pixels and (N,)
        float32 gain of each (its region's estimate, in ``[1, prior]``), both on the CPU.
    """
    check_image(image)
    threshold = check_range(threshold, "threshold", 0.0, 1.0)
    prior = check_range(prior, "prior", 1.0, 50.0)
    # on the CPU: deterministic sums on any device; a non-finite pixel counts as black (never as a clipped one)
    value = image.detach().amax(dim=1).float().cpu().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    candidates = value > threshold
    B, H, W = candidates.shape
    row, first, last, run_labels, count = _label_runs(candidates)
    if count == 0:
        return row.clone(), torch.zeros(0, dtype=torch.float32)
    pixels = _run_pixels(row, first, last, W)
    labels = torch.repeat_interleave(run_labels, last - first + 1)
    flat_clipped, flat_value = candidates.reshape(-1), value.reshape(-1)
    # boundary pixels (an 8-neighbour unclipped; a superset at the frame's edges, checked exactly below) carry
    # every pair: the interior of a large clipped area costs one gather per neighbour, nothing more
    last_index = flat_clipped.numel() - 1
    inner = torch.ones_like(pixels, dtype=torch.bool)
    for dy, dx in _OFFSETS:
        inner &= flat_clipped[(pixels + (dy * W + dx)).clamp(0, last_index)]
    edge = (~inner).nonzero().squeeze(1)
    edge_pixels, edge_labels = pixels[edge], labels[edge]
    y, x = (edge_pixels // W) % H, edge_pixels % W
    excess = torch.zeros(count, dtype=torch.float64)
    weight = torch.zeros(count, dtype=torch.float64)
    # pairs (first unclipped pixel, background RIM_FAR_PX further) along the 8 directions leaving a region
    for dy, dx in _OFFSETS:
        reach = 1 + RIM_FAR_PX
        ok = ((y + reach * dy >= 0) & (y + reach * dy < H) & (x + reach * dx >= 0) & (x + reach * dx < W))
        rim = edge_pixels + (dy * W + dx)
        ok &= ~flat_clipped[rim.clamp(0, last_index)]  # leaving the region
        sel = ok.nonzero().squeeze(1)
        rim = rim[sel]
        far = rim + RIM_FAR_PX * (dy * W + dx)
        keep = ~flat_clipped[far]  # the background sample is not clipped itself
        rim, far, region = rim[keep], far[keep], edge_labels[sel[keep]]
        rim_value = _srgb_to_linear(flat_value[rim].double().clamp(0.0, 1.0))
        far_value = _srgb_to_linear(flat_value[far].double().clamp(0.0, 1.0))
        excess.index_add_(0, region, rim_value - far_value)
        weight.index_add_(0, region, 1.0 - far_value)
    fraction = (excess / weight.clamp(min=1e-6)).clamp(0.0, 1.0)
    w = RIM_WIDTH
    measured = torch.where(fraction >= 0.5, 2 * w * (1 - fraction), w / (2 * fraction.clamp(min=1e-6)))
    measured = measured.clamp(1.0, prior)  # a rim proves a region dim; a hard rim alone does not prove it bright
    trust = weight / (weight + PRIOR_WEIGHT)
    gains = torch.exp(trust * measured.log() + (1 - trust) * math.log(prior))
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%d clipped regions, gains %s", count, [round(float(g), 2) for g in gains[:20]])
    return pixels, gains.float()[labels]

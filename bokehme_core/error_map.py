"""Analytic error map of the classical scatter renderer (BokehMe paper, section 3.1, Eq. 2 and Eq. 5).

The classical scatter renderer has no depth ordering, so it is wrong near depth edges whose two sides are
blurred differently: where a blurred object in front partially occludes something that is blurred less, the
real lens shows the background through the semi-transparent foreground blur and the scatter renderer cannot;
where a sharp (or less blurred) subject stands in front of a blurred background, the scatter renderer
spreads the background over the subject's edge (a halo) that the lens would hide. BokehMe marks those pixels with an error map E in [0, 1] (1 = do not trust the classical
result) and fuses ``classical * (1 - E) + neural * E``. ARNet predicts E; this module computes the
analytic map from disparity alone. It is the training target of ARNet (paper Eq. 5, ``E*``) and a
network-free error map for the ``BokehMeAnalyticErrorMap`` node.

Definitions used here (signed blur radii in pixels, ``r = K * (disparity - focus)``, positive = nearer
than the focal plane, as everywhere in this package; only their magnitudes enter the formula). For a pixel
``p`` and another pixel ``q`` at distance ``dist(p, q)``:

* ``alpha = dist(p, q) / max(|r_p|, |r_q|)``: distance in units of the larger blur radius;
* ``beta = min(|r_p|, |r_q|) / max(|r_p|, |r_q|)`` from the **absolute** radii (paper Eq. 4: "the ratio of
  the smaller and the larger blur radius of the two pixels"). The paper's Fig. 6 fixes this reading:
  background at disparity 0, foreground at 0.2, refocused at 0 / 0.2 / 0.5 / 1 gives beta = 0 / 0 / 0.6 /
  0.8, so a sharp subject over a blurred background (the portrait case, refocus 0.2) is an error region as
  much as a blurred foreground over a sharp background: the scatter renderer spreads the background over
  the sharp subject's edge (halo). ``beta`` is in [0, 1]. Pairs with equal ``|r|`` (beta = 1: the same
  disparity, or mirror images about the focal plane; Eq. 5 would give about 0.0013) and pairs where both
  radii are 0 are set to exactly 0, so K = 0 or a constant disparity map gives an all-zero map;
* Eq. 5 (``variant="eq5"``): ``E*(p, q) = max(0, 1 - alpha^delta1) * (0.5 + 0.5 * tanh(10 * (delta2 - beta)))``
  with ``delta1 = 4``, ``delta2 = 2/3``;
* Eq. 2 (``variant="eq2"``), the hard indicator that Eq. 5 smooths: ``E(p, q) = 1`` if ``alpha < 1`` and
  ``beta < delta2``, else 0.

The paper states the formula for a two-layer scene (foreground and background), where ``q`` is the nearest
pixel on the other side of the depth edge. For an arbitrary disparity map this module takes
``E(p) = max over q of E(p, q)``: for a two-layer scene that is exactly the paper's value (E* decreases with
distance), and pixels of the same depth contribute nothing (beta = 1). The band is symmetric: it covers
both sides of an edge, up to ``max(|r_front|, |r_back|)`` pixels from it.

**The layered renderer** (``renderer="layered"``, :func:`bokehme_core.render_classical` mode ``layered``)
composites depth slabs back to front, so the scatter renderer's halo (a sharp subject over a blurred
background) does not occur: the subject hides the background. What it still cannot know is the background
hidden behind a *blurred foreground*, which it extends from the visible background (push-pull). Its map
therefore keeps only the pairs whose nearer pixel (larger signed radius) is the more blurred one. Measured on
the six bench_dev scenes (bench/README.md), fusing with ARNet's map restricted to this one scores higher
than with ARNet's map alone in every (K, focus) cell when the classical input is the layered render.

Cost and memory: the maximum runs over a disk of offsets of radius ``max |r|``. When that radius exceeds
``max_work_radius`` pixels, the map is computed on a grid downscaled by ``s = max|r| / max_work_radius``
(signed radii max-pooled, so thin foreground structures survive, and divided by ``s``) and resized back
bilinearly: the map is smooth on the scale of the blur radius, so little is lost. The grid is also coarsened
when the number of pixel pairs would exceed about 2e7 per image (large images with moderate blur). Memory is
a few (B, 1, h, w) buffers whatever K is; time is at most about 2e7 pair evaluations per image (the numba
kernel of :mod:`._error_map_kernels` is used on CPU when numba imports, the torch loop otherwise).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Callable

import torch
import torch.nn.functional as F

from ._checks import check_choice, check_disparity, check_finite, check_focus, check_range
from .defocus import MAX_K

__all__ = ["analytic_error_map", "defocus_error_map", "error_gate", "pairwise_error", "RENDERERS"]

#: ``renderer`` choices of :func:`analytic_error_map`
RENDERERS = ("scatter", "layered")

logger = logging.getLogger(__name__)

#: Slope of the tanh in Eq. 5 (the paper's constant 10).
_TANH_SLOPE = 10.0

#: Upper bound on pixel-pair evaluations per image (work pixels x half-disk offsets); beyond it the map is
#: computed on a coarser grid (about 1-2 s on one CPU core).
_MAX_PAIR_EVALUATIONS = 2.0e7


def pairwise_error(
    dist: torch.Tensor | float,
    radius_p: torch.Tensor,
    radius_q: torch.Tensor,
    *,
    variant: str = "eq5",
    delta1: float = 4.0,
    delta2: float = 2.0 / 3.0,
    front_only: bool = False,
) -> torch.Tensor:
    """Error of the scatter renderer at pixel p caused by pixel q (paper Eq. 5 / Eq. 2), symmetric in p, q.

    Args:
        dist: distance between p and q in pixels (>= 0), a number or a tensor broadcastable to the radii.
        radius_p, radius_q: signed blur radii in pixels (positive = nearer than the focal plane), same shape;
            only their magnitudes matter (beta = min(|r_p|, |r_q|) / max(|r_p|, |r_q|), paper Eq. 4).
        variant: "eq5" (smooth, the ARNet training target E*) or "eq2" (hard 0/1 indicator).
        delta1: exponent of alpha in Eq. 5 (paper: 4).
        delta2: beta threshold (paper: 2/3).
        front_only: count the pair only when its nearer pixel (the larger signed radius) is the more blurred
            one: the error of the occlusion-aware ``layered`` renderer (see :func:`analytic_error_map`).

    Returns:
        tensor of the radii's shape, values in [0, 1]; 0 where ``|r_p| == |r_q|`` (no edge) or both are 0.
    """
    abs_p, abs_q = radius_p.abs(), radius_q.abs()
    largest = torch.maximum(abs_p, abs_q)
    has_blur = largest > 0
    safe_largest = torch.where(has_blur, largest, torch.ones_like(largest))
    beta = torch.minimum(abs_p, abs_q) / safe_largest  # paper Eq. 4, absolute radii: in [0, 1]
    alpha = dist / safe_largest
    if variant == "eq2":
        err = ((alpha < 1.0) & (beta < delta2)).to(radius_p.dtype)
    else:
        falloff = (1.0 - alpha.pow(delta1)).clamp_min(0.0)
        err = falloff * (0.5 + 0.5 * torch.tanh(_TANH_SLOPE * (delta2 - beta)))
    # Same radius (same disparity, or the image's own pixel): no edge, no error; no blur at all: no error.
    keep = has_blur & (abs_p != abs_q)
    if front_only:
        nearer_p = radius_p >= radius_q
        keep = keep & torch.where(nearer_p, abs_p > abs_q, abs_q > abs_p)
    return torch.where(keep, err, torch.zeros_like(err))


def analytic_error_map(
    disparity: torch.Tensor,
    K: float,
    focus,
    *,
    variant: str = "eq5",
    delta1: float = 4.0,
    delta2: float = 2.0 / 3.0,
    max_work_radius: int = 8,
    progress: Callable[[int, int], None] | None = None,
    renderer: str = "scatter",
    backend: str = "auto",
) -> torch.Tensor:
    """Analytic error map of the classical renderer: where to trust the neural rendering instead.

    Args:
        disparity: (B, 1, H, W) float in [0, 1], 1 = near.
        K: blur radius in pixels per unit disparity, ``0 <= K <= 2000`` (blur radius = K * |disparity - focus|).
        focus: in-focus disparity in [0, 1]: a number, or one per image (sequence or tensor of shape (B,)).
        variant: "eq5" (paper Eq. 5, smooth; ARNet's training target) or "eq2" (paper Eq. 2, hard 0/1).
        delta1: exponent of the distance falloff in Eq. 5, in (0, 100] (paper: 4).
        delta2: blur-ratio threshold beta, in (0, 1] (paper: 2/3).
        max_work_radius: largest blur radius (px) handled at full resolution, in [2, 128]; larger blur is
            handled on a downscaled grid (see the module docstring). Larger = more exact, slower.
        progress: optional callback ``progress(done, total)`` (over the offsets of the search disk, or over
            blocks of rows with the numba backend).
        renderer: the classical renderer whose error is mapped: "scatter" (modes ``exact`` and ``fast``; the
            paper's map, every edge whose two sides are blurred differently) or "layered" (the occlusion-aware
            mode, which composites depth slabs back to front and so renders a sharp subject over a blurred
            background correctly: only edges whose *nearer* side is the more blurred one are marked, where a
            blurred foreground reveals background hidden in the input; see :func:`pairwise_error`'s
            ``front_only``).
        backend: "auto" (numba on CPU tensors when it imports, else torch), "torch" or "numba" (CPU only). Both
            compute the same map (float64 vs float32 arithmetic: within 1e-5).

    Returns:
        (B, 1, H, W) float tensor in [0, 1] (dtype and device of ``disparity``), 1 = classical result wrong.
        All zero when K = 0 or when the disparity is constant (equal radii everywhere). With
        ``renderer="scatter"`` non-zero around every depth edge whose two sides are blurred differently,
        whichever side is in front (a sharp subject over a blurred background included: paper Eq. 4 / Fig. 6);
        with ``"layered"`` only around edges whose nearer side is the more blurred one.
    """
    check_disparity(disparity)
    check_finite(disparity, "disparity")
    lo, hi = float(disparity.min()), float(disparity.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(
            f"disparity must be in [0, 1] (1 = near), got values in [{lo:g}, {hi:g}]; "
            f"normalise it first (bokehme_core.normalize_disparity)"
        )
    K = check_range(K, "K", 0.0, MAX_K)
    focus_t = check_focus(focus, disparity.shape[0]).to(disparity.device, torch.float32)
    delta1 = check_range(delta1, "delta1", 1e-3, 100.0)
    delta2 = check_range(delta2, "delta2", 1e-3, 1.0)
    _check_options(variant, renderer, backend, max_work_radius)
    radius = K * (disparity.to(torch.float32) - focus_t.view(-1, 1, 1, 1))
    return _error_map(radius, variant, delta1, delta2, max_work_radius, progress, renderer == "layered",
                      backend).to(disparity.dtype)


def defocus_error_map(
    defocus_px: torch.Tensor,
    *,
    renderer: str = "scatter",
    variant: str = "eq5",
    max_work_radius: int = 8,
    backend: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """:func:`analytic_error_map` from the signed defocus itself (px, positive = nearer than focus), e.g. one
    shaped by a :class:`bokehme_core.Lens` (focus range, near / far scales): what the pipeline fuses with.

    Args:
        defocus_px: (B, 1, H, W) signed blur radii in px, finite, ``|r| <= 2000``.
        renderer, variant, max_work_radius, backend, progress: as in :func:`analytic_error_map`
            (``delta1``, ``delta2``: the paper's values).

    Returns:
        (B, 1, H, W) float32 in [0, 1] on the device of ``defocus_px``.
    """
    check_disparity(defocus_px, "defocus_px")
    check_finite(defocus_px, "defocus_px")
    _check_options(variant, renderer, backend, max_work_radius)
    if float(defocus_px.abs().max()) > MAX_K:
        raise ValueError(f"defocus_px must be within +-{MAX_K:g} px, got up to {float(defocus_px.abs().max()):g}")
    return _error_map(defocus_px.to(torch.float32), variant, 4.0, 2.0 / 3.0, max_work_radius, progress,
                      renderer == "layered", backend)


def _check_options(variant, renderer, backend, max_work_radius) -> None:
    check_choice(variant, "variant", ("eq5", "eq2"))
    check_choice(renderer, "renderer", RENDERERS)
    check_choice(backend, "backend", ("auto", "torch", "numba"))
    if isinstance(max_work_radius, bool) or not isinstance(max_work_radius, int):
        raise TypeError(f"max_work_radius must be an int in [2, 128], got {max_work_radius!r}")
    check_range(max_work_radius, "max_work_radius", 2, 128)


#: How far the default pipeline trusts the neural result where the layered renderer may be wrong: the layered
#: gate is ``LAYERED_TRUST * defocus_error_map(..., renderer="layered")``. Chosen by ``bench/calibrate_fusion.py``
#: on held-out synthetic scenes (never on the benchmark scenes): the largest weight of its grid at which no
#: (K, focus) cell with the exact disparity lost more than 0.1 dB against the layered render alone, while the
#: corrupted maps (predicted-looking, shifted, eroded) gain. With the exact map the layered fill of a blurred
#: foreground's edge is already right and the low-resolution neural result loses the sharp background seen
#: through it; with a wrong map the neural result repairs more than it loses.
LAYERED_TRUST = 0.25


def error_gate(defocus_px: torch.Tensor, classical_mode: str) -> torch.Tensor | None:
    """What ARNet's predicted error map is multiplied by before fusing it with ``classical_mode``'s render:
    for ``"layered"``, the analytic map of the layered renderer (:func:`defocus_error_map`) times
    :data:`LAYERED_TRUST`; None (no change) for ``"exact"`` and ``"fast"``, whose errors ARNet was trained to
    predict (the paper's map).

    Args:
        defocus_px: (B, 1, H, W) signed blur radii in px.
        classical_mode: "exact", "fast" or "layered".

    Returns:
        (B, 1, H, W) float32 in [0, LAYERED_TRUST], or None.
    """
    check_choice(classical_mode, "classical_mode", ("exact", "fast", "layered"))
    if classical_mode != "layered":
        return None
    return defocus_error_map(defocus_px, renderer="layered") * LAYERED_TRUST


def _error_map(radius, variant, delta1, delta2, max_work_radius, progress, front_only, backend) -> torch.Tensor:
    """The map of (B, 1, H, W) float32 signed radii ``radius`` (px); float32 result in [0, 1]."""
    batch, _, height, width = radius.shape
    max_radius = float(radius.abs().max()) if radius.numel() else 0.0
    if max_radius <= 0.0:
        # No blur anywhere: the classical renderer returns the image, which is right everywhere.
        return torch.zeros_like(radius)

    # Coarser grid when the radius exceeds max_work_radius, or when the pair count would exceed the budget:
    # cost ~ (pi / 2) * (R / s)^2 * H * W / s^2.
    budget_scale = (0.5 * math.pi * max_radius**2 * height * width / _MAX_PAIR_EVALUATIONS) ** 0.25
    scale = max(1.0, max_radius / max_work_radius, budget_scale)
    if scale > 1.0:
        work_h, work_w = max(1, round(height / scale)), max(1, round(width / scale))
        # Max-pool the signed radius: the nearest object wins, so thin foreground structures survive.
        work_radius = F.adaptive_max_pool2d(radius, (work_h, work_w)) * (work_h / height)
    else:
        work_radius = radius
    search = int(math.ceil(float(work_radius.abs().max())))
    logger.debug("analytic_error_map: max radius %.2f px, scale %.3f, search radius %d", max_radius, scale, search)

    use_numba = backend == "numba" or (backend == "auto" and radius.device.type == "cpu" and _numba_available())
    if use_numba:
        if radius.device.type != "cpu":
            raise ValueError(f"backend='numba' needs a CPU tensor, got one on {radius.device}")
        error = _error_numba(work_radius, search, variant, delta1, delta2, front_only, progress)
    else:
        error = _error_torch(work_radius, search, variant, delta1, delta2, front_only, progress)

    if scale > 1.0:
        error = F.interpolate(error, size=(height, width), mode="bilinear", align_corners=False)
    return error.clamp(0.0, 1.0).to(radius.device)


def _error_torch(work_radius, search, variant, delta1, delta2, front_only, progress):
    """The map on the work grid, offset by offset over a half disk (E(p, q) is symmetric, so each offset o
    updates both p and p + o)."""
    padded = F.pad(work_radius, (search, search, search, search), value=float("nan"))
    work_h, work_w = work_radius.shape[-2:]
    offsets = [
        (dy, dx)
        for dy in range(0, search + 1)
        for dx in range(-search, search + 1)
        if (dy > 0 or dx > 0) and dy * dy + dx * dx < (search + 1) ** 2
    ]
    error_padded = torch.zeros_like(padded)
    centre = error_padded[:, :, search : search + work_h, search : search + work_w]
    for index, (dy, dx) in enumerate(offsets):
        rows = slice(search + dy, search + dy + work_h)
        cols = slice(search + dx, search + dx + work_w)
        neighbour = padded[:, :, rows, cols]
        inside = ~torch.isnan(neighbour)
        neighbour = torch.where(inside, neighbour, work_radius)  # outside the image: same radius, no error
        pair = pairwise_error(
            math.sqrt(dy * dy + dx * dx), work_radius, neighbour, variant=variant, delta1=delta1, delta2=delta2,
            front_only=front_only,
        )
        torch.maximum(centre, pair, out=centre)
        shifted = error_padded[:, :, rows, cols]
        torch.maximum(shifted, pair, out=shifted)
        if progress is not None:
            progress(index + 1, len(offsets))
    return centre


#: work-grid rows per numba call (progress is reported between calls)
_ROWS_PER_CALL = 64


def _numba_available() -> bool:
    from .scatter.numba_runtime import available

    return available()


@functools.lru_cache(maxsize=1)
def _kernel():
    """The compiled kernel (loaded from numba's on-disk cache after the first compilation), logging its first
    call once."""
    from . import _error_map_kernels
    from .scatter.numba_runtime import logged_first_calls

    return logged_first_calls({"error_map": _error_map_kernels.error_rows}, "error map")["error_map"]


def _error_numba(work_radius, search, variant, delta1, delta2, front_only, progress):
    """The map on the work grid with the compiled kernel (:mod:`._error_map_kernels`), image by image."""
    import numpy as np

    from .scatter.numba_runtime import numba_threads

    kernel = _kernel()
    batch, _, work_h, work_w = work_radius.shape
    out = np.zeros((batch, work_h, work_w), dtype=np.float32)
    blocks = [(b, y) for b in range(batch) for y in range(0, work_h, _ROWS_PER_CALL)]
    with numba_threads():
        for index, (b, y) in enumerate(blocks):
            radius = work_radius[b, 0].detach().to(torch.float32).contiguous().numpy()
            kernel(radius, y, min(y + _ROWS_PER_CALL, work_h), search, variant == "eq2", float(delta1),
                   float(delta2), _TANH_SLOPE, front_only, out[b])
            if progress is not None:
                progress(index + 1, len(blocks))
    return torch.from_numpy(out).unsqueeze(1)

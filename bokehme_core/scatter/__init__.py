"""The classical scatter renderer of BokehMe (docs/official-behaviour.md, section 4): :func:`render_classical`.

Three modes:

* ``"exact"`` reproduces the official CUDA kernel (soft disk ``0.5+0.5*tanh(4*(r-dist))``, weight
  ``1/(r^2+0.2)``, window ``[-floor(r)-1, floor(r)+1]^2`` clipped to the image, normalised splat; polygon
  apertures as the official ``scatter_ex``) to float32 precision on CPU and CUDA (:mod:`.exact`).
* ``"fast"`` splats every source row by row as anti-aliased runs with difference arrays and prefix sums, cost
  about linear in the blur radius (:mod:`.fast`); visually indistinguishable from exact (PSNR in bench/README.md).
* ``"layered"`` is occlusion-aware (:mod:`.layered`): soft depth slabs about 1 px of blur radius apart, each
  scattered with the fast kernels (energy-preserving, same apertures), composited back to front, with the
  background hidden behind blurred foreground edges filled by push-pull. No halo of a blurred background over a
  sharp subject, and a blurred foreground shows a plausible background through its edge. Not the official
  algorithm (no parity).

All return the official dilated defocus (:mod:`.dilate`), computed the same way in every mode.

Which kernel runs is decided in one place, the kernel table (:mod:`.table`: mode x lens shape x backend, each
backend module declaring its cells). Backends (keyword ``backend``): ``"torch"`` (every cell, CPU or CUDA),
``"numba"`` (the optional compiled CPU kernels, 10-50x faster on CPU; every cell but exact mode with a mask
aperture, and the dilation), ``"cupy"`` (the optional CUDA kernel: exact mode without a lens shape, circle and
polygon) and ``"auto"`` (default): on CPU numba when ``numba`` imports, on CUDA cupy when ``cupy`` imports, each
cell they lack falling back to torch. A forced backend that lacks the cell raises ValueError. The CPU backend in
use is logged once at INFO. Numba compiles its kernels on the first call on a machine (cached on disk).
"""

from __future__ import annotations

import logging
from typing import Callable, NamedTuple

import torch

from .._checks import (check_choice, check_disparity, check_finite, check_image, check_instance, check_range,
                       check_same_spatial)
from ..aperture import Aperture, LensShape
from ..defocus import MAX_K, apply_highlight
from ..lens import Lens
from . import table
from .table import MODES

__all__ = ["render_classical", "ClassicalResult", "MODES", "BACKENDS"]

logger = logging.getLogger(__name__)

#: the ``backend`` choices: "auto" and every backend of the kernel table
BACKENDS = ("auto", *table.BACKENDS)
#: largest blur radius accepted (pixels); signed_defocus with K <= MAX_K cannot exceed it
MAX_RADIUS = MAX_K


class ClassicalResult(NamedTuple):
    """Output of :func:`render_classical`.

    bokeh: (B, 3, H, W) float32, the rendered image after ``** (1/gamma)``; NOT clamped (values may leave [0, 1]
        slightly with highlight boost).
    dilated_defocus: (B, 1, H, W) float32, pixels, integer values: the official signed-max dilation of
        ``int(defocus_px)`` (used by IUNet).
    """

    bokeh: torch.Tensor
    dilated_defocus: torch.Tensor


def render_classical(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    *,
    gamma: float = 1.0,
    aperture: Aperture | None = None,
    mode: str = "exact",
    highlight: bool = False,
    K: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    backend: str = "auto",
    lens: LensShape | None = None,
) -> ClassicalResult:
    """Classical (scatter) bokeh rendering.

    Args:
        image: (B, 3, H, W) float, sRGB in [0, 1].
        defocus_px: (B or 1, 1, H, W) signed defocus in pixels (:func:`bokehme_core.signed_defocus`, positive =
            nearer than focus); the blur radius is ``|defocus_px|`` (at most 2000 px). One map for all images or
            one per image.
        gamma: highlight-emphasis exponent in [1, 5] (not the sRGB curve): renders ``image ** gamma`` and returns
            the result ``** (1/gamma)``.
        aperture: bokeh shape, :class:`bokehme_core.Aperture` (default: the official circle).
        mode: ``"exact"`` (official kernel), ``"fast"`` (row runs, about linear in the radius) or ``"layered"``
            (occlusion-aware depth slabs over the fast kernels, :mod:`bokehme_core.scatter.layered`).
        highlight: apply the official highlight boost (:func:`bokehme_core.apply_highlight`) first; needs ``K``.
        K: the blur parameter that produced ``defocus_px`` (pixels per unit disparity); only for ``highlight``.
        progress: optional ``progress(done, total)`` callback.
        backend: ``"auto"`` (default), ``"torch"``, ``"numba"`` (CPU tensors, needs the optional ``numba``
            package; not for exact mode with a mask aperture) or ``"cupy"`` (CUDA tensors, exact mode without a
            lens shape, circle / polygon, needs ``cupy``); the cells are in :mod:`bokehme_core.scatter.table`.
            A forced backend that cannot run the cell raises ValueError. The first numba call on a machine
            compiles its kernels (seconds; cached on disk for later processes).

        lens: the lens shape, :class:`bokehme_core.LensShape` (default: none): cat's eye, swirl, soap-bubble
            ring (per-source kernels in every mode and backend), colour fringing (red / blue rendered with their
            own defocus, three renders). A neutral shape (all 0) gives exactly the output without one. The rest
            of a lens character (highlight lift, focus range, near / far scales) acts before this function:
            ``render_inputs(..., **lens.pre_render)``, then ``render_classical(..., lens=lens.shape)``; this
            function renders the image it is given (no lift inside).

    Returns:
        :class:`ClassicalResult` ``(bokeh (B,3,H,W) float32, dilated_defocus (B,1,H,W) float32 px)`` on the
        device of ``image``.
    """
    check_image(image)
    check_disparity(defocus_px, "defocus_px")
    check_same_spatial(image, defocus_px, "image", "defocus_px")
    if defocus_px.shape[0] not in (1, image.shape[0]):
        raise ValueError(
            f"defocus_px batch size {defocus_px.shape[0]} must be 1 or match image batch size {image.shape[0]}"
        )
    check_finite(image, "image")
    check_finite(defocus_px, "defocus_px")
    gamma = check_range(gamma, "gamma", 1.0, 5.0)
    check_choice(mode, "mode", MODES)
    check_choice(backend, "backend", BACKENDS)
    if aperture is None:
        aperture = Aperture.circle()
    check_instance(lens, "lens", LensShape, "LensShape(cat_eye=0.5, ring=0.3, ...)",
                   " (a whole lens character: pass lens.shape here and **lens.pre_render to render_inputs)"
                   if isinstance(lens, Lens) else "")
    if not isinstance(aperture, Aperture):
        raise TypeError(f"aperture must be a bokehme_core.Aperture (Aperture.circle(), .polygon(n), .from_mask(m)), "
                        f"got {type(aperture).__name__}")
    rmax = float(defocus_px.abs().max())
    if rmax > MAX_RADIUS:
        raise ValueError(f"defocus_px must be within [-{MAX_RADIUS:g}, {MAX_RADIUS:g}] pixels, got max |defocus| "
                         f"{rmax:g}; lower K")
    if lens is not None and lens.fringe > 0:
        if rmax * (1.0 + lens.fringe) > MAX_RADIUS:
            raise ValueError(f"defocus_px times (1 + fringe) must be within {MAX_RADIUS:g} pixels, got max |defocus| "
                             f"{rmax:g} with fringe {lens.fringe:g}; lower K or fringe")
        return _render_fringe(image, defocus_px, lens, gamma=gamma, aperture=aperture, mode=mode,
                              highlight=highlight, K=K, progress=progress, backend=backend)
    if highlight:
        if K is None:
            raise ValueError("highlight=True needs K (the blur parameter that produced defocus_px) to find the "
                             "out-of-focus highlights; pass K=...")
        image = apply_highlight(image, defocus_px, K)
    elif K is not None:
        check_range(K, "K", 0.0, MAX_K)

    device = image.device
    image = image.to(torch.float32)
    defocus_px = defocus_px.to(device=device, dtype=torch.float32)
    linear = image.clamp(min=0.0) ** gamma if gamma != 1.0 else image

    last_report = [0, 0]  # the renderer's last (done, total): the dilation's heartbeats repeat it
    if progress is not None:
        user_progress = progress

        def progress(done: int, total: int) -> None:
            last_report[:] = (done, total)
            user_progress(done, total)
    cell = table.lookup(mode, lens, aperture, device, backend)  # THE kernel choice (scatter/table.py)
    logger.debug("render_classical: mode=%s aperture=%s gamma=%g size=%s max radius %.1f px kernel=%s",
                 mode, aperture.kind, gamma, tuple(image.shape), rmax, cell.where)
    rendered = cell.run(linear, defocus_px, aperture, lens, progress)  # a plain cell gets no lens
    bokeh = rendered.clamp(min=0.0) ** (1.0 / gamma) if gamma != 1.0 else rendered
    # the dilation's bands repeat the last report (so Cancel is seen there too)
    dilated = table.dilation(device, backend)(defocus_px, None if progress is None else lambda *_: progress(*last_report))
    if dilated.shape[0] != image.shape[0]:
        dilated = dilated.expand(image.shape[0], -1, -1, -1).contiguous()
    return ClassicalResult(bokeh.to(torch.float32), dilated)


def _render_fringe(image, defocus_px, lens: LensShape, **options) -> ClassicalResult:
    """Longitudinal chromatic aberration: each colour channel rendered with its own signed defocus
    (:meth:`LensShape.channel_defocus`); the dilated defocus is the green channel's. Three renders."""
    from dataclasses import replace

    plain = replace(lens, fringe=0.0)
    progress = options.pop("progress")
    channels = []
    dilated = None
    for c, defocus_c in enumerate(lens.channel_defocus(defocus_px)):
        sub = None
        if progress is not None:
            sub = lambda done, total, c=c: progress(c * total + done, 3 * total)  # noqa: E731
        result = render_classical(image, defocus_c, lens=plain, progress=sub, **options)
        channels.append(result.bokeh[:, c:c + 1])
        if c == 1:
            dilated = result.dilated_defocus
    return ClassicalResult(torch.cat(channels, dim=1), dilated)

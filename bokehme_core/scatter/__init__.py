"""The classical scatter renderer of BokehMe (SPEC section 2): :func:`render_classical`.

Two modes:

* ``"exact"`` reproduces the official CUDA kernel (soft disk ``0.5+0.5*tanh(4*(r-dist))``, weight
  ``1/(r^2+0.2)``, window ``[-floor(r)-1, floor(r)+1]^2`` clipped to the image, normalised splat; polygon
  apertures as the official ``scatter_ex``) to float32 precision on CPU and CUDA (:mod:`.exact`).
* ``"fast"`` splats every source row by row as anti-aliased runs with difference arrays and prefix sums, cost
  about linear in the blur radius (:mod:`.fast`); visually indistinguishable from exact (PSNR in bench/README.md).

Both return the official dilated defocus (:mod:`.dilate`), computed the same way in both modes.
"""

from __future__ import annotations

import logging
from typing import Callable, NamedTuple

import torch

from .._checks import check_choice, check_disparity, check_finite, check_image, check_range, check_same_spatial
from ..aperture import Aperture
from ..defocus import MAX_K, apply_highlight
from .dilate import dilate_defocus

__all__ = ["render_classical", "ClassicalResult", "MODES"]

logger = logging.getLogger(__name__)

MODES = ("exact", "fast")
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
        mode: ``"exact"`` (official kernel) or ``"fast"`` (row runs, about linear in the radius).
        highlight: apply the official highlight boost (:func:`bokehme_core.apply_highlight`) first; needs ``K``.
        K: the blur parameter that produced ``defocus_px`` (pixels per unit disparity); only for ``highlight``.
        progress: optional ``progress(done, total)`` callback.

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
    if aperture is None:
        aperture = Aperture.circle()
    if not isinstance(aperture, Aperture):
        raise TypeError(f"aperture must be a bokehme_core.Aperture (Aperture.circle(), .polygon(n), .from_mask(m)), "
                        f"got {type(aperture).__name__}")
    rmax = float(defocus_px.abs().max())
    if rmax > MAX_RADIUS:
        raise ValueError(f"defocus_px must be within [-{MAX_RADIUS:g}, {MAX_RADIUS:g}] pixels, got max |defocus| "
                         f"{rmax:g}; lower K")
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

    logger.debug("render_classical: mode=%s aperture=%s gamma=%g size=%s max radius %.1f px",
                 mode, aperture.kind, gamma, tuple(image.shape), rmax)
    if mode == "exact":
        rendered = _exact(linear, defocus_px, aperture, progress)
    else:
        from .fast import scatter_fast

        rendered = scatter_fast(linear, defocus_px, aperture, progress)
    bokeh = rendered.clamp(min=0.0) ** (1.0 / gamma) if gamma != 1.0 else rendered
    dilated = dilate_defocus(defocus_px)
    if dilated.shape[0] != image.shape[0]:
        dilated = dilated.expand(image.shape[0], -1, -1, -1).contiguous()
    return ClassicalResult(bokeh.to(torch.float32), dilated)


def _exact(image, defocus_px, aperture, progress):
    if image.is_cuda:
        from . import cupy_backend

        if cupy_backend.available():
            return cupy_backend.scatter_exact_cupy(image, defocus_px, aperture, progress)
    from .exact import scatter_exact

    return scatter_exact(image, defocus_px, aperture, progress)

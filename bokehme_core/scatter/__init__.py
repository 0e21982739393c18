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
  algorithm (no parity); backends torch or numba (cupy requests run the torch code on CUDA).

All return the official dilated defocus (:mod:`.dilate`), computed the same way in both modes.

Backends (keyword ``backend``): ``"torch"`` (the vectorised torch code above, CPU or CUDA), ``"numba"`` (the
optional compiled CPU kernels of :mod:`.numba_backend`, 10-50x faster on CPU; fast mode with any aperture, exact
mode with circle/polygon, and the dilation), ``"cupy"`` (the optional CUDA kernel of :mod:`.cupy_backend`, exact
mode on CUDA tensors) and ``"auto"`` (default): numba for CPU tensors when ``numba`` imports (exact mode with a
mask aperture stays on torch), cupy for exact mode on CUDA when ``cupy`` imports, torch otherwise. The CPU
backend in use is logged once at INFO. Numba compiles its kernels on the first call on a machine (cached on disk).
"""

from __future__ import annotations

import logging
from typing import Callable, NamedTuple

import torch

from .._checks import check_choice, check_disparity, check_finite, check_image, check_range, check_same_spatial
from ..aperture import Aperture, Lens
from ..defocus import MAX_K, apply_highlight
from .dilate import dilate_defocus

__all__ = ["render_classical", "ClassicalResult", "MODES", "BACKENDS"]

logger = logging.getLogger(__name__)

MODES = ("exact", "fast", "layered")
BACKENDS = ("auto", "torch", "numba", "cupy")
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
    lens: Lens | None = None,
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
            package; not for exact mode with a mask aperture) or ``"cupy"`` (CUDA tensors, exact mode, needs
            ``cupy``); see the module docstring. A forced backend that cannot run raises ValueError. The first
            numba call on a machine compiles its kernels (seconds; cached on disk for later processes).

        lens: lens character, :class:`bokehme_core.aperture.Lens` (default: none): cat's eye, swirl, soap-bubble
            ring (per-source kernels in every mode and backend), colour fringing (red / blue rendered with their
            own defocus, three renders), highlight lift (:func:`bokehme_core.defocus.lift_highlights`, applied
            first, before the official ``highlight`` boost). Its focus range / near / far scales act on the
            defocus map, not here: build ``defocus_px`` with ``lens.signed_defocus(disparity, K, focus)``.
            A neutral lens (all defaults) gives exactly the output without one.

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
    if lens is not None and not isinstance(lens, Lens):
        raise TypeError(f"lens must be a bokehme_core.aperture.Lens (Lens(cat_eye=0.5, ring=0.3, ...)) or None, "
                        f"got {type(lens).__name__}")
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
    if lens is not None:
        image = lens.lift_highlights(image)
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

    chosen = _choose_backend(backend, mode, aperture, device)
    last_report = [0, 0]  # the renderer's last (done, total): the dilation's heartbeats repeat it
    if progress is not None:
        user_progress = progress

        def progress(done: int, total: int) -> None:
            last_report[:] = (done, total)
            user_progress(done, total)
    shape_lens = None if lens is None or lens.shapes_neutral else lens  # None: the plain kernels, bit-identical
    lens_kw = {} if shape_lens is None else {"lens": shape_lens}
    logger.debug("render_classical: mode=%s aperture=%s gamma=%g size=%s max radius %.1f px backend=%s",
                 mode, aperture.kind, gamma, tuple(image.shape), rmax, chosen)
    if mode == "layered":
        from .layered import scatter_layered

        rendered = scatter_layered(linear, defocus_px, aperture, progress,
                                   backend="numba" if chosen == "numba" else "torch", **lens_kw)
    elif chosen == "numba":
        from . import numba_backend

        scatter = numba_backend.scatter_exact_numba if mode == "exact" else numba_backend.scatter_fast_numba
        rendered = scatter(linear, defocus_px, aperture, progress, **lens_kw)
    elif chosen == "cupy":
        from . import cupy_backend

        rendered = cupy_backend.scatter_exact_cupy(linear, defocus_px, aperture, progress, **lens_kw)
    elif mode == "exact":
        from .exact import scatter_exact

        rendered = scatter_exact(linear, defocus_px, aperture, progress, **lens_kw)
    else:
        from .fast import scatter_fast

        rendered = scatter_fast(linear, defocus_px, aperture, progress, **lens_kw)
    bokeh = rendered.clamp(min=0.0) ** (1.0 / gamma) if gamma != 1.0 else rendered
    if device.type == "cpu" and backend in ("auto", "numba") and _numba_available():
        from .numba_backend import dilate_defocus_numba

        # the dilation's bands repeat the last report (so Cancel is seen there too)
        dilated = dilate_defocus_numba(defocus_px, None if progress is None else lambda *_: progress(*last_report))
    else:
        dilated = dilate_defocus(defocus_px)
    if dilated.shape[0] != image.shape[0]:
        dilated = dilated.expand(image.shape[0], -1, -1, -1).contiguous()
    return ClassicalResult(bokeh.to(torch.float32), dilated)


def _render_fringe(image, defocus_px, lens: Lens, **options) -> ClassicalResult:
    """Longitudinal chromatic aberration: each colour channel rendered with its own signed defocus
    (:meth:`Lens.channel_defocus`); the dilated defocus is the green channel's. Three renders."""
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


_LOGGED: set = set()


def _numba_available() -> bool:
    from . import numba_backend

    return numba_backend.available()


def _cupy_available() -> bool:
    from . import cupy_backend

    return cupy_backend.available()


def _choose_backend(backend: str, mode: str, aperture: Aperture, device: torch.device) -> str:
    """The backend that renders the scatter: "torch", "numba" or "cupy" (raises if a forced one cannot run)."""
    if backend == "numba":
        if device.type != "cpu":
            raise ValueError(f"backend='numba' runs on CPU tensors, got tensors on {device}; use backend='auto'")
        if not _numba_available():
            raise ValueError("backend='numba' needs the optional numba package (pip install numba), which does "
                             "not import here; use backend='auto' or 'torch'")
        if mode == "exact" and aperture.kind == "mask":
            raise ValueError("backend='numba' has no exact kernel for mask apertures; use mode='fast', or "
                             "backend='auto' or 'torch'")
        return "numba"
    if backend == "cupy":
        if device.type != "cuda":
            raise ValueError(f"backend='cupy' runs on CUDA tensors, got tensors on {device}; use backend='auto'")
        if not _cupy_available():
            raise ValueError("backend='cupy' needs the optional cupy package with a CUDA device, which does not "
                             "import here; use backend='auto' or 'torch'")
        if mode == "fast":
            raise ValueError(f"backend='cupy' implements mode='exact' only, got mode={mode!r}; use backend='auto' "
                             f"or 'torch' for fast mode")
        return "cupy"
    if backend == "torch":
        return "torch"
    # auto
    if device.type == "cuda":
        # the CuPy kernel hands mask apertures to the torch path itself
        return "cupy" if mode == "exact" and aperture.kind != "mask" and _cupy_available() else "torch"
    if device.type == "cpu" and _numba_available():
        if mode == "exact" and aperture.kind == "mask":
            _log_once("render_classical: CPU backend torch for exact mode with a mask aperture (no numba kernel)")
            return "torch"
        _log_once("render_classical: CPU backend numba (compiled kernels; the first call on a machine compiles)")
        return "numba"
    if device.type == "cpu":
        _log_once("render_classical: CPU backend torch; 'pip install numba' makes the classical renderer 10x+ "
                  "faster on CPU", level=logging.WARNING)
    return "torch"


def _log_once(message: str, level: int = logging.INFO) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        logger.log(level, message)

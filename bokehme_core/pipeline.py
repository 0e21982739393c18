"""The full BokehMe pipeline, stage by stage: :func:`render_bokehme`.

Peng et al., "BokehMe: When Neural Rendering Meets Classical Rendering", CVPR 2022 (official code:
https://github.com/JuewenPeng/BokehMe), following the official demo (docs/official-behaviour.md, section 8):

1. signed defocus, highlight recovery (clipped lights lifted, default on) and the optional official highlight
   boost (:func:`bokehme_core.defocus.render_inputs`);
2. classical rendering (:func:`bokehme_core.render_classical`), which also gives the dilated defocus;
3. the neural renderer (:func:`bokehme_core.neural.stages.render_neural`: ARNet at an adaptive low
   resolution, then IUNet's iterative upsampling);
4. the error map: ARNet's, or the analytic one (:func:`bokehme_core.analytic_error_map`); with the layered
   classical renderer (the default) restricted to where that renderer fails
   (:func:`bokehme_core.error_map.defocus_error_map`, ``renderer="layered"``);
5. fusion ``classical * (1 - E) + neural * E`` (:func:`bokehme_core.fuse`); outputs clamped to [0, 1].

This module only orders the stages; each is defined once in its own module. It reads no files itself:
``arnet=None`` / ``iunet=None`` ask :func:`bokehme_core.weights.load_bundled_models` for the bundled weights.
Conventions: image (B, 3, H, W) sRGB in [0, 1]; disparity (B, 1, H, W) in [0, 1], 1 = near; K in px per unit
disparity; focus in [0, 1]; signed defocus in px, positive = nearer than focus.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch

from ._checks import check_choice, check_disparity, check_finite, check_focus, check_image, check_range
from ._checks import check_instance, check_same_spatial
from .defocus import MAX_K, render_inputs
from .lens import Lens
from .fusion import fuse
from .neural.arnet import ARNet
from .neural.iunet import IUNet
from .scatter import MODES as CLASSICAL_MODES  # exact, fast, layered
from .neural.stages import (  # noqa: F401  (re-exported: the public names of this module before 0.2)
    DEFAULT_TILE_SIZE,
    DEFOCUS_SCALE,
    GAMMA_MAX,
    GAMMA_MIN,
    BokehMeIntermediates,
    NeuralResult,
    adaptive_scale,
    arnet_stage,
    blend_mask,
    check_model,
    gaussian_blur,
    iunet_stage,
    lowres_size,
    num_iunet_passes,
    render_neural,
)

logger = logging.getLogger(__name__)

__all__ = ["BokehMeResult", "render_bokehme", "CLASSICAL_MODES", "ERROR_MAP_CHOICES"]

ERROR_MAP_CHOICES = ("predicted", "analytic")
#: progress units given to the classical renderer per image (each network pass is one unit)
_CLASSICAL_UNITS = 4


@dataclass
class BokehMeResult:
    """Output of :func:`render_bokehme`.

    Attributes:
        bokeh: (B, 3, H, W) fused result in [0, 1].
        classical: (B, 3, H, W) classical rendering in [0, 1].
        neural: (B, 3, H, W) neural rendering in [0, 1] (with ``sparse``: exact where the fusion uses it, the
            upsampled coarser bokeh elsewhere, the input image where the fusion weight is 0).
        error_map: (B, 1, H, W) the error map used for the fusion, in [0, 1] (1 = neural).
        intermediates: :class:`BokehMeIntermediates` when ``return_intermediates=True``.
    """

    bokeh: torch.Tensor
    classical: torch.Tensor
    neural: torch.Tensor
    error_map: torch.Tensor
    intermediates: BokehMeIntermediates | None = None



# --- the full pipeline ------------------------------------------------------------------------------------

def render_bokehme(
    image: torch.Tensor,
    disparity: torch.Tensor,
    *,
    K: float,
    focus,
    gamma: float = 4.0,
    arnet: ARNet | None = None,
    iunet: IUNet | None = None,
    highlight: bool = False,
    aperture=None,
    classical_mode: str = "layered",
    error_map: str = "predicted",
    return_intermediates: bool = False,
    tile_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    sparse: bool = True,
    lens=None,
    recover_highlights: bool = True,
) -> BokehMeResult:
    """Render bokeh with the full BokehMe pipeline (classical + neural + fusion).

    Args:
        image: (B, 3, H, W) sRGB in [0, 1], H, W >= 2.
        disparity: (B or 1, 1, H, W) in [0, 1], 1 = near.
        K: blur radius in px per unit disparity, in [0, 2000]; the blur radius is ``K * |disparity - focus|``.
        focus: in-focus disparity in [0, 1]: a number or one per image ((B,) tensor or sequence).
        gamma: highlight-emphasis exponent in [1, 5] (not the sRGB curve); official default 4.
        arnet, iunet: networks (on the device of ``image``); None loads the bundled weights
            (:func:`bokehme_core.weights.load_bundled_models`).
        highlight: apply the official highlight boost (:func:`bokehme_core.apply_highlight`) first.
        recover_highlights: lift clipped lights before rendering (:func:`bokehme_core.recover_highlights`;
            an image without clipped pixels is unchanged; a ``lens`` with its own highlight lift replaces it).
            Default on: measured better than no recovery and than the official boost on path-traced scenes.
        aperture: a :class:`bokehme_core.Aperture` for the classical renderer (None = circle).
        lens: lens character, :class:`bokehme_core.Lens` (None = none): its focus range, near / far scales and
            highlight lift shape the inputs of both renderers (``render_inputs(..., **lens.pre_render)``); its
            shape (cat's eye, swirl, ring, fringe: ``lens.shape``) acts in the classical renderer (the neural one
            renders plain bokeh, used where the error map says so). A neutral lens gives exactly the output
            without one.
        classical_mode: "layered" (default: occlusion-aware, measured best inside the hybrid on path-traced
            scenes, bench/README.md), "exact" (the official kernel)
            or "fast" (see :func:`bokehme_core.render_classical`).
        error_map: "predicted" (ARNet's error map, official) or "analytic"
            (:func:`bokehme_core.analytic_error_map`, no network). With the ``layered`` classical renderer the
            fusion uses the map of that renderer: ARNet's map times the analytic map with
            ``renderer="layered"`` (the layered renderer already hides a blurred background behind a sharp
            subject, so only the background revealed by a blurred foreground is left to the neural result);
            "analytic" then uses the analytic layered map alone.
        return_intermediates: fill :attr:`BokehMeResult.intermediates`.
        tile_size: tile edge in px of the network passes (exact: tiles overlap by the receptive field);
            None = :data:`DEFAULT_TILE_SIZE`. Smaller = less memory.
        progress: ``progress(done, total)``, may raise to cancel.
        sparse: run the networks only where their results reach the output. ARNet (with the layered gate, or
            ``error_map="analytic"``): only on the cells of its working resolution that pixels with a fusion
            weight > 0 depend on (:func:`~bokehme_core.neural.stages.arnet_needed`: the error map's upsampling,
            every IUNet pass, ARNet's receptive field); elsewhere its bokeh is the resized input image and its
            error 0, which the fusion multiplies by exactly 0. IUNet: where the error map exceeds
            :data:`~bokehme_core.neural.stages.SPARSE_ERROR_THRESHOLD` (through the blend masks and the receptive
            field). The fused ``bokeh`` equals the dense computation within 1e-4 and ``error_map`` within 1e-6;
            ``neural`` is exact where it is used (elsewhere the upsampled coarser bokeh). False = the official
            dense computation.

    Returns:
        :class:`BokehMeResult` on the device of ``image``, float32.
    """
    from . import render_classical

    check_image(image)
    check_disparity(disparity)
    check_same_spatial(image, disparity, "image", "disparity")
    if disparity.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"disparity batch size {disparity.shape[0]} must be 1 or match image ({image.shape[0]})")
    if image.shape[-2] < 2 or image.shape[-1] < 2:
        raise ValueError(f"image must be at least 2x2 px, got {tuple(image.shape)}")
    check_finite(image, "image")
    check_finite(disparity, "disparity")
    K = check_range(K, "K", 0.0, MAX_K)
    check_instance(lens, "lens", Lens, "Lens(cat_eye=0.5, ring=0.3, ...), e.g. from the BokehMe Lens node")
    gamma = check_range(gamma, "gamma", GAMMA_MIN, GAMMA_MAX)
    check_choice(classical_mode, "classical_mode", CLASSICAL_MODES)
    check_choice(error_map, "error_map", ERROR_MAP_CHOICES)
    if tile_size is not None and (not isinstance(tile_size, int) or tile_size < 16):
        raise ValueError(f"tile_size must be None or an int >= 16 px, got {tile_size!r}")
    batch = image.shape[0]
    focus_t = check_focus(focus, batch)
    device = image.device
    if arnet is None or iunet is None:
        from .weights import load_bundled_models

        bundled_arnet, bundled_iunet = load_bundled_models(device)
        arnet = arnet if arnet is not None else bundled_arnet
        iunet = iunet if iunet is not None else bundled_iunet
    check_model(arnet, ARNet, "arnet", device)
    check_model(iunet, IUNet, "iunet", device)

    image = image.to(torch.float32)
    disparity = disparity.to(torch.float32).expand(batch, -1, -1, -1)
    image, defocus_px = render_inputs(image, disparity, K, focus_t, highlight=highlight, recover=recover_highlights,
                                      **({} if lens is None else lens.pre_render))

    scales = [adaptive_scale(defocus_px[b]) for b in range(batch)]
    total = batch * _CLASSICAL_UNITS + sum(1 + num_iunet_passes(s) for s in scales)
    done = [0]

    def classical_progress(d: int, t: int) -> None:
        if progress is not None and t > 0:
            progress(int(batch * _CLASSICAL_UNITS * min(d, t) / t), total)

    def step() -> None:
        done[0] += 1
        if progress is not None:
            progress(batch * _CLASSICAL_UNITS + done[0], total)

    with torch.inference_mode():
        classical = render_classical(
            image, defocus_px, gamma=gamma, aperture=aperture, mode=classical_mode, highlight=False, K=K,
            progress=classical_progress, lens=None if lens is None else lens.shape,
        )
        bokeh_classical = classical.bokeh.to(torch.float32)
        dilated_px = classical.dilated_defocus.to(torch.float32)
        if progress is not None:
            progress(batch * _CLASSICAL_UNITS, total)
        from .error_map import defocus_error_map, error_gate

        defocus_b = defocus_px.expand(batch, -1, -1, -1)
        analytic = gate = None
        if error_map == "analytic":
            renderer = "layered" if classical_mode == "layered" else "scatter"
            analytic = defocus_error_map(defocus_b, renderer=renderer)
        else:
            gate = error_gate(defocus_b, classical_mode)
        neural = render_neural(
            image, defocus_px, dilated_px, gamma=gamma, arnet=arnet, iunet=iunet, tile_size=tile_size,
            return_intermediates=return_intermediates, progress=step, sparse=sparse, fusion_error=analytic,
            error_gate=gate,
        )
        if analytic is not None:
            error = analytic
        elif gate is not None:
            error = neural.error_map * gate
        else:
            error = neural.error_map
        fused = fuse(bokeh_classical, neural.bokeh, error)
    return BokehMeResult(
        bokeh=fused.clamp(0, 1),
        classical=bokeh_classical.clamp(0, 1),
        neural=neural.bokeh.clamp(0, 1),
        error_map=error,
        intermediates=neural.intermediates,
    )

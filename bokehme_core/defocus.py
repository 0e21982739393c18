"""Signed defocus and the official highlight boost.

Signed defocus in pixels: ``K * (disparity - focus)``, positive = nearer than the focus plane; the blur
radius in pixels is its absolute value (docs/official-behaviour.md, section 2).
"""

from __future__ import annotations

import torch

from ._checks import check_disparity, check_focus, check_image, check_range, check_same_spatial

__all__ = ["signed_defocus", "apply_highlight", "render_inputs", "MAX_K", "lift_highlights", "recover_highlights",
           "RECOVER_GAIN", "RECOVER_THRESHOLD", "RECOVER_SOFTNESS", "RECOVER_BLUR_PX", "PRE_RENDER_DEFAULTS",
           "PRE_RENDER_RANGES"]

#: Largest K accepted anywhere: a blur radius of 2000 px is already far beyond any real lens at 4K.
MAX_K = 2000.0

#: THE defaults of the pre-render options (the lens character that acts before the renderer): the keyword
#: arguments of :func:`render_inputs`, of :func:`signed_defocus` / :func:`lift_highlights` and the fields of
#: :class:`bokehme_core.Lens` (and the BokehMe Lens node's widgets). Each default is the no-effect value, except
#: the lift threshold, which only matters with a gain above 1 (0.98 with gain 3 matched path-traced lights best).
PRE_RENDER_DEFAULTS = {
    "highlight_threshold": 0.98,
    "highlight_gain": 1.0,
    "focus_range": 0.0,
    "near_scale": 1.0,
    "far_scale": 1.0,
}
#: pre-render option -> (lowest, highest) accepted value
PRE_RENDER_RANGES = {
    "highlight_threshold": (0.0, 1.0),
    "highlight_gain": (1.0, 50.0),
    "focus_range": (0.0, 1.0),
    "near_scale": (0.0, 10.0),
    "far_scale": (0.0, 10.0),
}


def signed_defocus(
    disparity: torch.Tensor,
    K: float,
    focus,
    *,
    focus_range: float = 0.0,
    near_scale: float = 1.0,
    far_scale: float = 1.0,
) -> torch.Tensor:
    """Signed defocus in pixels, ``K * (disparity - focus)``.

    With a focus range (lens character, :class:`bokehme_core.Lens`) the band
    ``|disparity - focus| <= focus_range / 2`` stays fully sharp (defocus 0) and the blur grows from the band's
    edges at the usual rate, scaled separately in front of and behind it:
    ``K * near_scale * (e - focus_range/2)`` for ``e = disparity - focus > focus_range/2`` (nearer),
    ``K * far_scale * (e + focus_range/2)`` for ``e < -focus_range/2`` (farther). The defaults give exactly
    ``K * (disparity - focus)``.

    Args:
        disparity: (B, 1, H, W) in [0, 1], 1 = near.
        K: blur radius in pixels per unit disparity, ``0 <= K <= 2000``.
        focus: in-focus disparity in [0, 1]: a number, or one per image (sequence or tensor of shape (B,)).
        focus_range: width of the sharp band in disparity units, in [0, 1] (0 = a focus plane).
        near_scale: blur growth in front of the band relative to K, in [0, 10].
        far_scale: blur growth behind the band relative to K, in [0, 10].

    Returns:
        (B, 1, H, W) float tensor, pixels, positive = nearer than focus.
    """
    check_disparity(disparity)
    K = check_range(K, "K", 0.0, MAX_K)
    focus_range = check_range(focus_range, "focus_range", 0.0, 1.0)
    near_scale = check_range(near_scale, "near_scale", 0.0, 10.0)
    far_scale = check_range(far_scale, "far_scale", 0.0, 10.0)
    f = check_focus(focus, disparity.shape[0]).to(disparity.device, disparity.dtype)
    offset = disparity - f.view(-1, 1, 1, 1)
    if focus_range == 0.0 and near_scale == 1.0 and far_scale == 1.0:
        return K * offset
    half = focus_range / 2.0
    near = torch.clamp(offset - half, min=0.0) * (K * near_scale)
    far = torch.clamp(offset + half, max=0.0) * (K * far_scale)
    return near + far


def apply_highlight(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    K: float,
    *,
    threshold: float = 220.0 / 255.0,
    strength: float = 0.4,
) -> torch.Tensor:
    """The official optional highlight boost (docs/official-behaviour.md, section 3).

    Brightens bright pixels that are clearly out of focus, so that they become brighter bokeh balls:
    ``image * (1 + strength * m1 * m2)`` with ``m1 = clip(tanh(200 * ((disparity - focus)^2 - 0.01)), 0, 1)``
    (here ``disparity - focus = defocus_px / K``) and ``m2 = clip(tanh(10 * (image - threshold)), 0, 1)``
    per channel. Masks are computed from the un-boosted image.

    Args:
        image: (B, 3, H, W) in [0, 1].
        defocus_px: (B or 1, 1, H, W) signed defocus in pixels (:func:`signed_defocus`).
        K: the K that produced ``defocus_px``; K = 0 means nothing is out of focus (image returned as is).
        threshold: brightness above which a pixel counts as a highlight, in [0, 1].
        strength: boost factor, in [0, 10] (official: 0.4).

    Returns:
        (B, 3, H, W); values may exceed 1 (they are meant to be rendered, then clamped).
    """
    check_image(image)
    check_disparity(defocus_px, "defocus_px")
    check_same_spatial(image, defocus_px, "image", "defocus_px")
    K = check_range(K, "K", 0.0, MAX_K)
    threshold = check_range(threshold, "threshold", 0.0, 1.0)
    strength = check_range(strength, "strength", 0.0, 10.0)
    if K == 0.0:
        return image
    m1 = torch.tanh(200.0 * ((defocus_px / K) ** 2 - 0.01)).clamp(0, 1)
    m2 = torch.tanh(10.0 * (image - threshold)).clamp(0, 1)
    return image * (1.0 + strength * m1 * m2)


def lift_highlights(
    image: torch.Tensor,
    threshold: float = PRE_RENDER_DEFAULTS["highlight_threshold"],
    gain: float = PRE_RENDER_DEFAULTS["highlight_gain"],
    *,
    softness: float = 0.05,
) -> torch.Tensor:
    """Lift clipped lights in linear light, so that they render as bright bokeh balls (lens character).

    An 8-bit photo clips every light at 1.0, while real lights are 2-10x brighter; blurred, they come out dim.
    Per pixel, with ``v`` = the largest of the three sRGB channels,
    ``m = smoothstep(threshold - softness, threshold + softness, v)`` (0 below, 1 above the threshold), every
    channel is decoded to linear light (sRGB curve), multiplied by ``1 + (gain - 1) * m`` and encoded back
    (the same curve, extended above 1). Colour ratios in linear light are kept. ``gain = 1`` returns ``image``
    itself. The official boost (:func:`apply_highlight`) stays available as the ``highlight`` preset of the
    renderers.

    Args:
        image: (B, 3, H, W) sRGB in [0, 1].
        threshold: sRGB level at which lifting starts, in [0, 1] (default 0.98: nearly clipped lights).
        gain: linear-light gain of the pixels above the threshold, in [1, 50] (default 1: off; 3 is lens-like).
        softness: half width of the smooth transition around the threshold, in [0, 0.5].

    Returns:
        (B, 3, H, W) sRGB-encoded; values above 1 are lights brighter than white (render, then clamp).
    """
    check_image(image)
    threshold = check_range(threshold, "highlight_threshold", 0.0, 1.0)
    gain = check_range(gain, "highlight_gain", 1.0, 50.0)
    softness = check_range(softness, "softness", 0.0, 0.5)
    if gain == 1.0:
        return image
    value = image.amax(dim=1, keepdim=True)
    if softness > 0:
        t = ((value - (threshold - softness)) / (2 * softness)).clamp(0, 1)
        mask = t * t * (3 - 2 * t)
    else:
        mask = (value >= threshold).to(image.dtype)
    linear = _srgb_to_linear(image.clamp(min=0.0))
    return _linear_to_srgb(linear * (1.0 + (gain - 1.0) * mask))


#: Highlight recovery of the default pipeline (:func:`recover_highlights`): clipped pixels (brightest channel
#: >= 0.9965, i.e. 255 in 8 bits; 254 and below are untouched) that are out of focus are lifted in linear light,
#: by at most RECOVER_GAIN = 2.5: the fixed gain of ``gain=RECOVER_GAIN`` and the gain of a light whose rim shows
#: no sign of being dimmer (``gain="auto"``, bench/README.md, section 1.9). 2.5 was chosen on the six bench_dev
#: scenes (bench/README.md, section 1.2: better than the official boost in every (K, focus) cell with the
#: layered renderer).
RECOVER_GAIN = 2.5
RECOVER_THRESHOLD = 0.998
RECOVER_SOFTNESS = 0.0015
#: blur radii (px) between which the recovery fades in: sharp pixels stay as photographed
RECOVER_BLUR_PX = (0.5, 1.5)


def recover_highlights(image: torch.Tensor, defocus_px: torch.Tensor, gain: float | str = "auto") -> torch.Tensor:
    """Highlight recovery of the default pipeline: clipped, out-of-focus lights lifted in linear light.

    An 8-bit photo (or a generated image clamped to [0, 1]) stores every light brighter than white as 1.0; a
    real lens spreads those lights into bright bokeh balls, so rendered from the clipped values they come out
    dim. Per pixel, ``m = smoothstep(RECOVER_THRESHOLD -+ RECOVER_SOFTNESS)`` of its brightest channel (1 at
    the clip level, 0 from 0.9965 down: 254/255 is untouched) times ``smoothstep(0.5 px, 1.5 px)`` of its
    blur radius ``|defocus_px|`` (a sharp light stays as photographed, so K = 0 gives the image back); every
    channel is multiplied by ``1 + (g - 1) * m`` in linear light (sRGB curve; colour ratios kept).
    Pixels with ``m = 0`` keep their exact values; an image without clipped pixels is returned as is.

    The gain ``g``: with ``gain="auto"`` (default) one per 8-connected clipped region, in ``[1, RECOVER_GAIN]``,
    estimated from how far the region exceeded the clip level as its anti-aliased rim shows it
    (:func:`bokehme_core.clipped_regions.region_gains`: a light ending in a hard step, or a region without rim
    evidence, gets ``RECOVER_GAIN``; a large surface with a bright graded rim about 1); with a number, that gain
    everywhere (``gain=RECOVER_GAIN`` is the fixed recovery of earlier versions).

    Args:
        image: (B, 3, H, W) sRGB in [0, 1].
        defocus_px: (B or 1, 1, H, W) signed blur radius in px (:func:`signed_defocus`).
        gain: ``"auto"`` or a linear-light gain in [1, 50].

    Returns:
        (B, 3, H, W); lifted lights above 1 (render, then clamp).
    """
    check_image(image)
    check_disparity(defocus_px, "defocus_px")
    check_same_spatial(image, defocus_px, "image", "defocus_px")
    if isinstance(gain, str):
        if gain != "auto":
            raise ValueError(f"gain must be 'auto' or a number in [1, 50], got {gain!r}")
    else:
        gain = check_range(gain, "gain", 1.0, 50.0)
    value = image.amax(dim=1, keepdim=True)
    low = RECOVER_THRESHOLD - RECOVER_SOFTNESS
    if not bool((value > low).any()):
        return image
    t = ((value - low) / (2 * RECOVER_SOFTNESS)).clamp(0, 1)
    lo_px, hi_px = RECOVER_BLUR_PX
    u = ((defocus_px.abs() - lo_px) / (hi_px - lo_px)).clamp(0, 1)
    mask = (t * t * (3 - 2 * t)) * (u * u * (3 - 2 * u))
    if not bool((mask > 0).any()):
        return image
    if gain == "auto":
        return _recover_per_region(image, mask, low)
    # only the lifted pixels go through the sRGB curve (a few percent of a photo at most)
    mask = mask.expand_as(image)
    hit = mask > 0
    recovered = image.clone()
    recovered[hit] = _linear_to_srgb(_srgb_to_linear(image[hit].clamp(min=0.0)) * (1.0 + (gain - 1.0) * mask[hit]))
    return recovered


def _recover_per_region(image: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """:func:`recover_highlights` with one gain per clipped region, touching the clipped pixels only.
    image (B, 3, H, W), mask (B, 1, H, W) recovery weight in [0, 1] -> (B, 3, H, W) contiguous."""
    from .clipped_regions import region_gains

    B, _, H, W = image.shape
    pixels, region_gain = region_gains(image, threshold, RECOVER_GAIN)  # flat (b * H + y) * W + x, CPU
    pixels, region_gain = pixels.to(image.device), region_gain.to(image.device, image.dtype)
    weight = mask.expand(B, 1, H, W).reshape(-1)[pixels]
    factor = 1.0 + (region_gain - 1.0) * weight
    lifted = (weight > 0) & (factor != 1.0)
    pixels, factor = pixels[lifted], factor[lifted]
    recovered = image.clone(memory_format=torch.contiguous_format)
    if pixels.numel() == 0:
        return recovered
    plane = H * W
    channels = torch.arange(3, device=image.device).view(3, 1) * plane
    index = ((pixels // plane) * 3 * plane + pixels % plane).view(1, -1) + channels  # (3, N) into (B, 3, H, W)
    flat = recovered.view(-1)
    flat[index] = _linear_to_srgb(_srgb_to_linear(flat[index].clamp(min=0.0)) * factor)
    return recovered


def _srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def render_inputs(
    image: torch.Tensor,
    disparity: torch.Tensor,
    K: float,
    focus,
    *,
    highlight: bool = False,
    recover: bool = False,
    focus_range: float = PRE_RENDER_DEFAULTS["focus_range"],
    near_scale: float = PRE_RENDER_DEFAULTS["near_scale"],
    far_scale: float = PRE_RENDER_DEFAULTS["far_scale"],
    highlight_gain: float = PRE_RENDER_DEFAULTS["highlight_gain"],
    highlight_threshold: float = PRE_RENDER_DEFAULTS["highlight_threshold"],
) -> tuple[torch.Tensor, torch.Tensor]:
    """What every renderer starts from: the signed defocus and the image after the optional highlight steps.

    The one place where the pipeline, the node pack and the CLI turn (image, disparity, K, focus, highlight
    options, the pre-render part of a lens character) into the inputs of the classical and neural renderers,
    which render what they are given. A :class:`bokehme_core.Lens` passes its pre-render part as
    ``render_inputs(..., **lens.pre_render)`` (and its shape to the renderer: ``lens=lens.shape``). Every
    pre-render option at its default (:data:`PRE_RENDER_DEFAULTS`) gives exactly the output without them.

    Args:
        image: (B, 3, H, W) sRGB in [0, 1].
        disparity: (B or 1, 1, H, W) in [0, 1], 1 = near.
        K: blur radius in px per unit disparity, in [0, 2000].
        focus: in-focus disparity in [0, 1]: a number or one per image ((B,) tensor or sequence).
        highlight: apply the official highlight boost (:func:`apply_highlight`), last.
        recover: highlight recovery (:func:`recover_highlights`: clipped out-of-focus lights lifted), the default of
            :func:`bokehme_core.render_bokehme` and the nodes. A highlight lift (``highlight_gain > 1``) replaces
            it. Applied before the official boost when both are on.
        focus_range, near_scale, far_scale: the sharp band around the focus and the blur growth in front of /
            behind it (:func:`signed_defocus`).
        highlight_gain, highlight_threshold: the highlight lift (:func:`lift_highlights`; gain 1 = off), applied
            first.

    Returns:
        ``(image, defocus_px)``: (B, 3, H, W) (values may exceed 1 with ``highlight`` or a highlight lift) and
        the signed defocus (B or 1, 1, H, W) in px, positive = nearer than focus.
    """
    defocus_px = signed_defocus(disparity, K, focus, focus_range=focus_range, near_scale=near_scale,
                                far_scale=far_scale)
    image = lift_highlights(image, highlight_threshold, highlight_gain)
    if recover and highlight_gain == 1.0:
        image = recover_highlights(image, defocus_px)
    if highlight:
        image = apply_highlight(image, defocus_px, K)
    return image, defocus_px

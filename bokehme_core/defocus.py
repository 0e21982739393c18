"""Signed defocus and the official highlight boost.

Signed defocus in pixels: ``K * (disparity - focus)``, positive = nearer than the focus plane; the blur
radius in pixels is its absolute value (SPEC section 1).
"""

from __future__ import annotations

import torch

from ._checks import check_disparity, check_focus, check_image, check_range, check_same_spatial

__all__ = ["signed_defocus", "apply_highlight"]

#: Largest K accepted anywhere: a blur radius of 2000 px is already far beyond any real lens at 4K.
MAX_K = 2000.0


def signed_defocus(disparity: torch.Tensor, K: float, focus) -> torch.Tensor:
    """Signed defocus in pixels, ``K * (disparity - focus)``.

    Args:
        disparity: (B, 1, H, W) in [0, 1], 1 = near.
        K: blur radius in pixels per unit disparity, ``0 <= K <= 2000``.
        focus: in-focus disparity in [0, 1]: a number, or one per image (sequence or tensor of shape (B,)).

    Returns:
        (B, 1, H, W) float tensor, pixels, positive = nearer than focus.
    """
    check_disparity(disparity)
    K = check_range(K, "K", 0.0, MAX_K)
    f = check_focus(focus, disparity.shape[0]).to(disparity.device, disparity.dtype)
    return K * (disparity - f.view(-1, 1, 1, 1))


def apply_highlight(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    K: float,
    *,
    threshold: float = 220.0 / 255.0,
    strength: float = 0.4,
) -> torch.Tensor:
    """The official optional highlight boost (SPEC section 1).

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

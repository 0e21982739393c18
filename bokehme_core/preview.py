"""Pictures of the render parameters: signed defocus in a diverging colour map, in-focus masks, aperture shapes."""

from __future__ import annotations

import math

import torch

from ._checks import check_choice, check_disparity, check_range

__all__ = ["defocus_preview", "in_focus_mask", "aperture_shape"]

# diverging colour map, blue (far) - white (in focus) - red (near), close to matplotlib's "coolwarm" ends
_FAR = (0.230, 0.299, 0.754)
_MID = (0.865, 0.865, 0.865)
_NEAR = (0.706, 0.016, 0.150)


def defocus_preview(defocus_px: torch.Tensor, max_radius: float | None = None) -> torch.Tensor:
    """Signed defocus as a picture: far = blue, in focus = light gray, near = red.

    Args:
        defocus_px: (B, 1, H, W) signed defocus in pixels (positive = nearer than focus).
        max_radius: radius (px) mapped to full colour; default: the largest ``|defocus|`` in the batch.

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    check_disparity(defocus_px, "defocus_px")
    if max_radius is None:
        max_radius = float(defocus_px.abs().max())
    max_radius = max(check_range(max_radius, "max_radius", 0.0), 1e-6)
    t = (defocus_px / max_radius).clamp(-1, 1)
    mid = torch.tensor(_MID, device=t.device).view(1, 3, 1, 1)
    near = torch.tensor(_NEAR, device=t.device).view(1, 3, 1, 1)
    far = torch.tensor(_FAR, device=t.device).view(1, 3, 1, 1)
    return torch.where(t >= 0, mid + (near - mid) * t, mid + (far - mid) * (-t)).clamp(0, 1)


def in_focus_mask(defocus_px: torch.Tensor) -> torch.Tensor:
    """Soft mask of what stays sharp: 1 where the blur radius is <= 0.5 px, 0 where it is >= 1.5 px.

    Args:
        defocus_px: (B, 1, H, W) signed defocus in pixels.
    Returns:
        (B, 1, H, W) in [0, 1].
    """
    check_disparity(defocus_px, "defocus_px")
    return (1.5 - defocus_px.abs()).clamp(0, 1)


def aperture_shape(shape: str, size: int = 129, *, blades: int = 6, rotation: float = math.pi / 2,
                   points: int = 5, inner_ratio: float = 0.45) -> torch.Tensor:
    """Rasterise an aperture shape as a grayscale mask for :meth:`bokehme_core.Aperture.from_mask`.

    The shape fills the square (its bounding circle touches the border), anti-aliased with 4x4 supersampling.
    Image y points down; ``rotation`` (radians) turns the shape counter-clockwise on screen, with the official
    polygon convention: ``pi/2`` puts a vertex straight up.

    Args:
        shape: ``"circle"``, ``"polygon"`` (``blades`` sides), ``"star"`` (``points`` tips, inner radius
            ``inner_ratio``) or ``"heart"``.
        size: side length in pixels, in [9, 2048].
    Returns:
        (size, size) float32 in [0, 1].
    """
    check_choice(shape, "shape", ("circle", "polygon", "star", "heart"))
    size = int(check_range(size, "size", 9, 2048))
    ss = 4
    coords = (torch.arange(size * ss, dtype=torch.float64) + 0.5) / (size * ss) * 2 - 1  # [-1, 1]
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    up = -y  # screen y points down
    radius = torch.sqrt(x**2 + up**2)
    angle = torch.atan2(up, x) - rotation
    if shape == "circle":
        inside = radius <= 1.0
    elif shape == "polygon":
        blades = int(check_range(blades, "blades", 3, 64))
        sector = 2 * math.pi / blades
        phi = torch.remainder(angle, sector) - sector / 2  # angle from the middle of the current edge
        inside = radius * torch.cos(phi) <= math.cos(sector / 2)
    elif shape == "star":
        points = int(check_range(points, "points", 3, 32))
        inner = check_range(inner_ratio, "inner_ratio", 0.05, 0.95)
        sector = 2 * math.pi / points
        phi = torch.remainder(angle, sector)
        # tip at phi = 0, inner vertex at sector/2: the edge between them, by linear interpolation in polar
        # form of a straight segment between (1, 0) and (inner, sector/2)
        half = sector / 2
        p = torch.where(phi > half, sector - phi, phi)
        tip = torch.tensor([1.0, 0.0], dtype=torch.float64)
        valley = torch.tensor([inner * math.cos(half), inner * math.sin(half)], dtype=torch.float64)
        normal = torch.tensor([valley[1] - tip[1], tip[0] - valley[0]], dtype=torch.float64)
        offset = float(normal @ tip)
        px, py = radius * torch.cos(p), radius * torch.sin(p)
        inside = (px * normal[0] + py * normal[1]) * math.copysign(1.0, offset) <= abs(offset)
    else:  # heart: the classic implicit curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, scaled to fill the square
        ca, sa = math.cos(rotation - math.pi / 2), math.sin(rotation - math.pi / 2)
        hx = (x * ca + up * sa) * 1.25
        hy = (-x * sa + up * ca) * 1.25 + 0.15
        inside = (hx**2 + hy**2 - 1) ** 3 - hx**2 * hy**3 <= 0
    mask = inside.to(torch.float32).view(size, ss, size, ss).mean(dim=(1, 3))
    return mask

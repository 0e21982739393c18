"""Aperture shapes for the classical scatter renderer.

An :class:`Aperture` is an immutable, hashable value object (so ComfyUI can cache on it) describing the shape of
one out-of-focus point ("bokeh ball") as a function of the blur radius ``r`` in pixels:

* ``Aperture.circle()`` - the official BokehMe kernel (SPEC section 2): soft disk ``0.5 + 0.5*tanh(4*(r - dist))``.
* ``Aperture.polygon(blades, rotation)`` - the official ``scatter_ex`` polygon: edge radius
  ``r_e = r*sin(a2)/sin(phi + a2)`` with ``a1 = 2*pi/blades``, ``a2 = pi/2 - pi/blades``,
  ``phi = fmod(|atan2(dy, dx) + rotation|, a1)``; ``rotation`` is the official ``init_angle`` in radians
  (default pi/2: a vertex points up; image y points down). Soft edge ``0.5 + 0.5*tanh(4*(r_e - dist))``.
* ``Aperture.from_mask(mask)`` - any grayscale shape (heart, star, a photographed bokeh ball). The mask is
  placed with its array centre on the source pixel and scaled so that its *bounding circle* (the smallest
  circle about the array centre containing every non-zero mask pixel, pixel extent included: radius =
  max distance of a non-zero pixel centre + 0.5 mask pixels) has radius ``r``. Each target pixel takes the
  mask's average over its footprint (area sampling, so small radii are anti-aliased; at least one mask pixel
  wide, so large radii are smooth).
  Its energy is normalised to that of the circle: the mask is multiplied by ``pi / area`` where ``area`` is the
  mask's area in units of the bounding-circle radius squared, so a mask renders as bright as a circle of the
  same radius. Below r = 1 px the mask kernel blends into the circle kernel (fully circle at r <= 1, fully mask
  at r >= 2): a sub-pixel blur has no visible shape, and this keeps in-focus pixels exact even for masks that
  are zero at their centre (rings). Masks larger than 256 px are area-downsampled to 256 px first.

Every shape takes an ``anamorphic`` factor = width / height of the bokeh ball. The shape is squeezed so that it
still fits in the blur circle: for ``anamorphic < 1`` (e.g. 0.5 = tall ovals, as from a 2x anamorphic lens) the
height stays ``2r`` and the width becomes ``2r*anamorphic``; for ``anamorphic > 1`` the width stays ``2r`` and the
height becomes ``2r/anamorphic``. In the renderer's formulas this replaces ``(dx, dy)`` by
``(dx/ax, dy/ay)`` with ``(ax, ay) = (anamorphic, 1)`` or ``(1, 1/anamorphic)`` and the square window
``floor(r)+1`` by ``(floor(r*ax)+1, floor(r*ay)+1)``. ``anamorphic = 1`` is exactly the official kernel.
Accepted range: [0.1, 10].

Conventions: offsets ``(dx, dy)`` go from the source pixel to the target pixel, in pixels, x right, y down;
radii are the blur radius ``r = |signed defocus|`` in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import check_range

__all__ = ["Aperture", "MIN_ANAMORPHIC", "MAX_ANAMORPHIC", "MAX_BLADES", "MAX_MASK_SIZE"]

MIN_ANAMORPHIC = 0.1
MAX_ANAMORPHIC = 10.0
MAX_BLADES = 64
#: masks bigger than this (in pixels, either side) are area-downsampled to it
MAX_MASK_SIZE = 256


@dataclass(frozen=True)
class Aperture:
    """Shape of a bokeh ball (see the module docstring for the exact definitions).

    Build it with :meth:`circle`, :meth:`polygon` or :meth:`from_mask`, not with the constructor.
    Instances are immutable, comparable and hashable.
    """

    kind: str = "circle"
    blades: int = 0
    rotation: float = math.pi / 2
    anamorphic: float = 1.0
    mask_shape: tuple = ()
    mask_bytes: bytes = field(default=b"", repr=False)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def circle(cls, anamorphic: float = 1.0) -> "Aperture":
        """The official soft disk (anamorphic = width/height of the bokeh ball, in [0.1, 10])."""
        return cls("circle", 0, math.pi / 2, _check_anamorphic(anamorphic))

    @classmethod
    def polygon(cls, blades: int, rotation: float = math.pi / 2, anamorphic: float = 1.0) -> "Aperture":
        """A regular polygon with ``blades`` sides (3..64), ``rotation`` in radians (official ``init_angle``)."""
        if isinstance(blades, bool) or not isinstance(blades, (int, np.integer)):
            raise TypeError(f"blades must be an integer number of aperture blades (>= 3), got {blades!r}")
        blades = int(blades)
        if blades < 3 or blades > MAX_BLADES:
            raise ValueError(f"blades must be in [3, {MAX_BLADES}] (a polygon needs at least 3 sides), got {blades}")
        rotation = check_range(rotation, "rotation", -1000.0, 1000.0)
        return cls("polygon", blades, rotation, _check_anamorphic(anamorphic))

    @classmethod
    def from_mask(cls, mask, anamorphic: float = 1.0) -> "Aperture":
        """An arbitrary grayscale shape.

        Args:
            mask: (h, w) or (1, h, w) torch tensor or numpy array, values in [0, 1], not all zero.
            anamorphic: width / height of the bokeh ball, in [0.1, 10].
        """
        if isinstance(mask, torch.Tensor):
            arr = mask.detach().to("cpu", torch.float32).numpy()
        elif isinstance(mask, np.ndarray):
            if not (np.issubdtype(mask.dtype, np.floating) or np.issubdtype(mask.dtype, np.integer)
                    or mask.dtype == np.bool_):
                raise TypeError(f"mask must be a numeric array, got dtype {mask.dtype}")
            arr = mask.astype(np.float32)
        else:
            raise TypeError(f"mask must be a torch.Tensor or numpy array of shape (h,w) or (1,h,w), "
                            f"got {type(mask).__name__}")
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"mask must be (h,w) or (1,h,w) with h,w >= 1, got shape {tuple(mask.shape)}")
        if not np.isfinite(arr).all():
            raise ValueError(f"mask holds {int((~np.isfinite(arr)).sum())} NaN/inf values; pass a mask in [0, 1]")
        if arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
            raise ValueError(f"mask values must be in [0, 1], got range [{arr.min():g}, {arr.max():g}]")
        arr = np.clip(arr, 0.0, 1.0)
        if arr.max() <= 0.0:
            raise ValueError("mask is all zero: the aperture shape needs some non-zero (open) pixels")
        if max(arr.shape) > MAX_MASK_SIZE:
            scale = MAX_MASK_SIZE / max(arr.shape)
            size = (max(1, round(arr.shape[0] * scale)), max(1, round(arr.shape[1] * scale)))
            arr = F.interpolate(torch.from_numpy(arr)[None, None], size=size, mode="area")[0, 0].numpy()
            if arr.max() <= 0.0:
                raise ValueError("mask is too sparse: it vanished when downsampled to "
                                 f"{MAX_MASK_SIZE} px; draw thicker shapes")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        return cls("mask", 0, 0.0, _check_anamorphic(anamorphic), tuple(arr.shape), arr.tobytes())

    # ------------------------------------------------------------------ geometry
    @property
    def axis_scale(self) -> tuple[float, float]:
        """``(ax, ay)``: the shape's half width and half height in units of the blur radius."""
        a = self.anamorphic
        return (a, 1.0) if a <= 1.0 else (1.0, 1.0 / a)

    @property
    def inner_fraction(self) -> float:
        """Fraction of the radius inside which the (scaled) shape is fully open: cos(pi/n) for polygons."""
        if self.kind == "circle":
            return 1.0
        if self.kind == "polygon":
            return math.cos(math.pi / self.blades)
        return 0.0

    def mask_array(self) -> np.ndarray:
        """The stored mask, (h, w) float32 in [0, 1] (only for ``kind == 'mask'``)."""
        if self.kind != "mask":
            raise ValueError(f"aperture of kind {self.kind!r} has no mask")
        return np.frombuffer(self.mask_bytes, dtype=np.float32).reshape(self.mask_shape)

    def window(self, radius) -> tuple:
        """Half sizes ``(wx, wy)`` of the scatter window for blur radius ``radius`` (official: floor(r)+1)."""
        ax, ay = self.axis_scale
        if isinstance(radius, torch.Tensor):
            return torch.floor(radius * ax) + 1, torch.floor(radius * ay) + 1
        return math.floor(radius * ax) + 1, math.floor(radius * ay) + 1

    def profile(self, dx: torch.Tensor, dy: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """Soft shape value at offset (dx, dy) for blur radius ``radius`` (all broadcastable float tensors).

        This is the kernel *before* the official ``1/(r^2+0.2)`` weight and before the window clipping:
        circle ``0.5+0.5*tanh(4*(r-dist))``, polygon with ``r_e`` instead of ``r``, mask: see module docstring.
        Values are in [0, 1] for circle and polygon; a mask is scaled by its energy factor.
        """
        ax, ay = self.axis_scale
        sx = dx / ax if ax != 1.0 else dx
        sy = dy / ay if ay != 1.0 else dy
        dist = torch.sqrt(sx * sx + sy * sy)
        if self.kind == "circle":
            return 0.5 + 0.5 * torch.tanh(4.0 * (radius - dist))
        if self.kind == "polygon":
            a1 = 2.0 * math.pi / self.blades
            a2 = math.pi / 2.0 - math.pi / self.blades
            phi = torch.fmod(torch.abs(torch.atan2(sy, sx) + self.rotation), a1)
            edge = radius * math.sin(a2) / torch.sin(phi + a2)
            return 0.5 + 0.5 * torch.tanh(4.0 * (edge - dist))
        # mask
        circle = 0.5 + 0.5 * torch.tanh(4.0 * (radius - dist))
        table, bound_px, energy = self._mask_sampler(dist.device)
        rows, cols = table.shape[-2:]
        h, w = rows - 1, cols - 1
        rad = torch.clamp(radius, min=1.0)
        px = (w - 1) / 2.0 + sx / rad * bound_px
        py = (h - 1) / 2.0 + sy / rad * bound_px
        # footprint of one target pixel in mask pixels (at least one mask pixel: smooth when magnified)
        half_x = torch.clamp(0.5 / ax * bound_px / rad, min=0.5)
        half_y = torch.clamp(0.5 / ay * bound_px / rad, min=0.5)
        px, py, half_x, half_y = torch.broadcast_tensors(px, py, half_x, half_y)
        shape = px.shape
        px, py, half_x, half_y = (t.reshape(-1).to(torch.float64) for t in (px, py, half_x, half_y))

        def integral(x, y):  # integral of the mask over (-inf, x] x (-inf, y], pixel i covering [i-.5, i+.5]
            gx = torch.clamp(x + 0.5, 0, w) / w * 2 - 1
            gy = torch.clamp(y + 0.5, 0, h) / h * 2 - 1
            grid = torch.stack([gx, gy], dim=-1).view(1, 1, -1, 2)
            return F.grid_sample(table, grid, mode="bilinear", padding_mode="border", align_corners=True).view(-1)

        x0, x1, y0, y1 = px - half_x, px + half_x, py - half_y, py + half_y
        box = integral(x1, y1) - integral(x0, y1) - integral(x1, y0) + integral(x0, y0)
        sampled = (box / (4 * half_x * half_y)).clamp(min=0).to(dist.dtype).reshape(shape) * energy
        blend = torch.clamp(radius - 1.0, 0.0, 1.0)
        return blend * sampled + (1.0 - blend) * circle

    def _mask_sampler(self, device) -> tuple[torch.Tensor, float, float]:
        """(1,1,h+1,w+1) float64 summed-area table of the mask, bounding radius in mask pixels, energy pi/area.

        The profile of a mask is the mask's average over the footprint of each target pixel (area sampling
        through the summed-area table, which is exact for the piecewise-constant mask), so small radii are
        anti-aliased instead of point-sampled.
        """
        key = (self, str(device))
        hit = _MASK_CACHE.get(key)
        if hit is not None:
            return hit
        arr = self.mask_array().astype(np.float64)
        h, w = arr.shape
        ys, xs = np.nonzero(arr > 0)
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        bound = float(np.sqrt(((ys - cy) ** 2 + (xs - cx) ** 2).max())) + 0.5
        area = float(arr.sum()) / bound**2
        table = np.zeros((h + 1, w + 1))
        table[1:, 1:] = arr.cumsum(0).cumsum(1)
        value = (torch.from_numpy(table)[None, None].to(device), bound, math.pi / area)
        if len(_MASK_CACHE) > 32:
            _MASK_CACHE.clear()
        _MASK_CACHE[key] = value
        return value

    def kernel(self, radius: float, normalize: bool = True, device=None) -> torch.Tensor:
        """Rasterise the scatter kernel of one source pixel with blur radius ``radius`` (pixels, >= 0).

        Returns a (2*wy+1, 2*wx+1) float32 tensor, the official window ``(wx, wy) = (floor(r*ax)+1, floor(r*ay)+1)``
        (square ``2*floor(r)+3`` for anamorphic = 1), holding ``profile / (r^2 + 0.2)``; with ``normalize`` it
        is divided by its sum (a point spread function summing to 1). For previews and tests.
        """
        radius = check_range(radius, "radius", 0.0, 4096.0)
        wx, wy = self.window(radius)
        dy = torch.arange(-wy, wy + 1, dtype=torch.float32, device=device).view(-1, 1)
        dx = torch.arange(-wx, wx + 1, dtype=torch.float32, device=device).view(1, -1)
        r = torch.tensor(radius, dtype=torch.float32, device=device)
        k = self.profile(dx, dy, r) / (radius * radius + 0.2)
        if normalize:
            k = k / k.sum()
        return k


_MASK_CACHE: dict = {}


def _check_anamorphic(anamorphic: float) -> float:
    value = check_range(anamorphic, "anamorphic", None, None)
    if not (MIN_ANAMORPHIC <= value <= MAX_ANAMORPHIC):
        raise ValueError(
            f"anamorphic (bokeh width/height) must be in [{MIN_ANAMORPHIC:g}, {MAX_ANAMORPHIC:g}] "
            f"(0.5 = tall ovals of a 2x anamorphic lens, 1 = round), got {value:g}"
        )
    return value

"""Aperture shapes for the classical scatter renderer.

An :class:`Aperture` is an immutable, hashable value object (so ComfyUI can cache on it) describing the shape of
one out-of-focus point ("bokeh ball") as a function of the blur radius ``r`` in pixels:

* ``Aperture.circle()`` - official kernel (docs/official-behaviour.md, section 4.1): soft disk ``0.5 + 0.5*tanh(4*(r - dist))``.
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

Lens shape (:class:`LensShape`) changes the shape per source pixel, by its position in the frame; every effect at
0 is exactly the plain aperture above. In the aperture's *scaled* coordinates ``p = (dx/ax, dy/ay)`` (where the
unsqueezed shape has radius ``r``) the profile of a source becomes::

    outer(p; R) = min(A(p + R*s; R), C(p - R*s; R))          A = the aperture's profile, C = the circle's
    profile(p)  = outer(p; r) - ring_w * min(outer(p; RING_INNER*r), outer(p; r))
    weight      = profile * norm / (r^2 + 0.2)

* **cat's eye** (optical vignetting): the aperture ``A`` is moved by ``-R*s`` and clipped by a circle ``C`` moved
  by ``+R*s``; their intersection is a lemon centred on the source whose narrow axis is ``s``. ``s`` points
  along the frame radius (from the frame centre to the source, in scaled coordinates), with
  ``|s| = c/2``, ``c = min(MAX_CLIP, (CAT_EYE_GAIN*cat_eye + SWIRL_GAIN*swirl) * rho)``, ``rho`` = distance
  from the frame centre / half-diagonal (0 at the centre, 1 in the corners). ``c`` is the distance between
  the two circles in units of ``r``: at ``cat_eye = 0.8`` in a corner (``c = 1.12``) the lemon's second-moment
  axis ratio is about 1.8.
* **swirl**: ``s`` is turned by ``swirl * SWIRL_ANGLE`` (counter-clockwise on screen) away from the radius and
  lengthened by ``SWIRL_GAIN*swirl*rho``, so the lemons stretch along the tangent and lean, a vortex around the
  centre (Petzval swirl).
* **ring** (soap bubble): an inner copy of the shape at ``RING_INNER`` of the radius is subtracted with weight
  ``ring_w = ring``: a bright rim of width ``(1 - RING_INNER)*r`` around a centre dimmed to ``1 - ring``.
* both fade in with the radius, ``* clamp(r - 1, 0, 1)`` (a sub-pixel blur has no visible shape, as for masks):
  in-focus pixels keep the plain kernel.
* **energy**: ``norm = M_plain(r) / (M_outer(r, s) - ring_w * M_inner(r, s))``, the sums of the rasterised
  kernels over the official window, tabulated per aperture for radii up to ``MASS_TABLE_RADIUS`` (step 1/2 px,
  9 clip distances x 16 directions, interpolated); above it the ratios of the largest tabulated radius are
  used. Every source keeps the total weight of the plain kernel (to the interpolation error, < 1%).
  :func:`clip_area_ratio` is the continuous limit (lemon area over shape area).
* **fringe** (longitudinal chromatic aberration) renders the red channel with the signed defocus
  ``d + fringe*|d|`` and the blue one with ``d - fringe*|d|``: red and blue radii differ from green by the
  fraction ``fringe`` (red larger in front of the focus, blue larger behind: purple / green fringes).

These four make :class:`LensShape`, the only lens argument of :func:`bokehme_core.render_classical`. The rest of a
lens's character acts before the renderer (highlight lift, focus range, near / far scales: the pre-render options
of :func:`bokehme_core.render_inputs`); :class:`bokehme_core.Lens` carries both parts for the Lens node and
:func:`bokehme_core.render_bokehme`.
"""

from __future__ import annotations

import math
import functools
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import check_range

__all__ = ["Aperture", "LensShape", "LensFields", "clip_area_ratio", "MIN_ANAMORPHIC", "MAX_ANAMORPHIC", "MAX_BLADES",
           "MAX_MASK_SIZE", "CAT_EYE_GAIN", "SWIRL_GAIN", "SWIRL_ANGLE", "MAX_CLIP", "RING_INNER", "LENS_SHAPE_RANGES"]

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

        The circle / polygon profile (anamorphic included) exists in four production copies, one per kind of
        code; change them together (tests/core/test_table.py ``test_aperture_profile_copies_agree`` renders a
        point light with every exact kernel available and compares it with :meth:`kernel`, built from this one):

        1. this method (torch: the exact and fast torch kernels, the fast row-run tables of every backend);
        2. ``exact_rows`` in :mod:`bokehme_core.scatter._numba_kernels` (numba exact, the rim cells; distances
           and the polygon's ``edge / r`` tabulated per offset by
           :func:`bokehme_core.scatter.numba_backend.scatter_exact_numba`);
        3. ``lemon_value`` in :mod:`bokehme_core.scatter._lens_numba_kernels` (numba exact with a lens shape);
        4. ``_SOURCE`` (CUDA C) in :mod:`bokehme_core.scatter.cupy_backend` (CuPy exact).
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


# ------------------------------------------------------------------------------------------ lens character
#: distance between the two clipping circles, in units of the blur radius, per unit of ``cat_eye * rho``
CAT_EYE_GAIN = 1.4
#: extra clipping distance per unit of ``swirl * rho``
SWIRL_GAIN = 0.8
#: how far swirl turns the lemons away from the frame radius at ``swirl = 1`` (radians)
SWIRL_ANGLE = math.pi / 4
#: largest clipping distance (units of r): the lemon keeps ~10% of the shape's area
MAX_CLIP = 1.6
#: radius of the dimmed inner shape of the soap-bubble ring, as a fraction of the blur radius
RING_INNER = 0.8
#: lens-shape option -> (lowest, highest) accepted value, also the ranges quoted in error messages and node
#: tooltips (with the pre-render options: :data:`bokehme_core.lens.LENS_RANGES`)
LENS_SHAPE_RANGES = {
    "cat_eye": (0.0, 1.0),
    "swirl": (0.0, 1.0),
    "ring": (0.0, 1.0),
    "fringe": (0.0, 0.25),
}


class LensFields(NamedTuple):
    """Per-source lens state for a (H, W) radius map, float32 (H, W) tensors (see the module docstring).

    shift_x, shift_y: the clip half-distance ``s * fade(r)`` in scaled unit-radius coordinates (multiply by
        ``r * ax`` / ``r * ay`` for image pixels: the aperture moves by minus that, the clip circle by plus).
    ring: ``ring * fade(r)``.
    norm: the energy factor ``1 / (area_ratio * (1 - ring_w * RING_INNER^2))``.
    """

    shift_x: torch.Tensor
    shift_y: torch.Tensor
    ring: torch.Tensor
    norm: torch.Tensor


@dataclass(frozen=True)
class LensShape:
    """The lens shape for the classical renderer (every field at 0 = the plain aperture, exactly): the ``lens``
    argument of :func:`bokehme_core.render_classical` (``Lens(...).shape`` of a whole lens character).

    Immutable, comparable and hashable (ComfyUI caches on it). Out-of-range values raise ValueError naming the
    option and its range (:data:`LENS_SHAPE_RANGES`). See the module docstring for the exact formulas.

    Fields:
        cat_eye: 0..1, optical vignetting: bokeh turns into lemons squeezed toward the frame centre, growing with
            the distance from the centre (none at the centre).
        swirl: 0..1, the lemons lean (up to 45 degrees) and stretch along the tangent (Petzval swirl).
        ring: 0..1, soap-bubble bokeh: bright rim, centre dimmed to ``1 - ring``; energy kept.
        fringe: 0..0.25, longitudinal chromatic aberration: red / blue blur radii differ from green by this
            fraction (0.03..0.1 is lens-like).
    """

    cat_eye: float = 0.0
    swirl: float = 0.0
    ring: float = 0.0
    fringe: float = 0.0

    def __post_init__(self):
        for name, (lo, hi) in LENS_SHAPE_RANGES.items():
            object.__setattr__(self, name, check_range(getattr(self, name), name, lo, hi))

    # ------------------------------------------------------------------ what is switched on
    @property
    def shapes_neutral(self) -> bool:
        """True when the bokeh shape is the plain aperture's (no cat's eye, swirl or ring)."""
        return self.cat_eye == 0.0 and self.swirl == 0.0 and self.ring == 0.0

    @property
    def is_neutral(self) -> bool:
        """True when every option is 0 (the renderer gives the plain aperture's output exactly)."""
        return self.shapes_neutral and self.fringe == 0.0

    def channel_defocus(self, defocus_px: torch.Tensor) -> tuple:
        """Signed defocus per colour channel ``(red, green, blue)``: ``d + fringe*|d|``, ``d``, ``d - fringe*|d|``."""
        if self.fringe == 0.0:
            return defocus_px, defocus_px, defocus_px
        spread = self.fringe * defocus_px.abs()
        return defocus_px + spread, defocus_px, defocus_px - spread

    # ------------------------------------------------------------------ geometry
    def clip_vectors(self, aperture: Aperture, height: int, width: int, device=None, frame=None) -> tuple:
        """Clip half-distance ``s`` per pixel (before the radius fade): ``(s_x, s_y)``, float32 (H, W) tensors.

        ``s`` is in the aperture's scaled unit-radius coordinates (see the module docstring). ``frame`` =
        ``(top, left, frame_height, frame_width)`` places a tile in a larger frame (default: the image is the
        frame), so tiles of one frame get the same field (no seams).
        """
        top, left, fh, fw = frame if frame is not None else (0, 0, height, width)
        cy, cx = (fh - 1) / 2.0, (fw - 1) / 2.0
        half_diag = max(math.hypot(cx, cy), 1e-6)
        ys = (torch.arange(height, dtype=torch.float64, device=device) + top - cy).view(-1, 1) / half_diag
        xs = (torch.arange(width, dtype=torch.float64, device=device) + left - cx).view(1, -1) / half_diag
        gain = CAT_EYE_GAIN * self.cat_eye + SWIRL_GAIN * self.swirl
        rho = torch.sqrt(xs * xs + ys * ys)
        clip = torch.clamp(gain * rho, max=MAX_CLIP)  # distance between the circles, units of r
        angle = self.swirl * SWIRL_ANGLE  # counter-clockwise on screen (y points down)
        cos_a, sin_a = math.cos(angle), math.sin(angle)
        ux = cos_a * xs + sin_a * ys
        uy = -sin_a * xs + cos_a * ys
        ax, ay = aperture.axis_scale
        ux, uy = ux / ax, uy / ay  # direction in scaled coordinates: the image-space offset stays along u
        length = torch.sqrt(ux * ux + uy * uy).clamp(min=1e-12)
        half = 0.5 * clip / length
        return (ux * half).to(torch.float32), (uy * half).to(torch.float32)

    def fields(self, aperture: Aperture, radius: torch.Tensor, frame=None) -> LensFields:
        """Per-source lens state (:class:`LensFields`) for a (H, W) blur-radius map in pixels."""
        H, W = radius.shape[-2:]
        radius = radius.reshape(H, W).to(torch.float32)
        fade = torch.clamp(radius - 1.0, 0.0, 1.0)
        if self.cat_eye == 0.0 and self.swirl == 0.0:
            shift_x = shift_y = torch.zeros_like(radius)
        else:
            s_x, s_y = self.clip_vectors(aperture, H, W, radius.device, frame)
            shift_x, shift_y = s_x * fade, s_y * fade
        ring = self.ring * fade
        outer, inner = _mass_ratios(aperture, radius, shift_x, shift_y)
        norm = 1.0 / (outer - ring * inner)
        return LensFields(shift_x.contiguous(), shift_y.contiguous(), ring.contiguous(), norm.contiguous())

    def profile(self, aperture: Aperture, dx, dy, radius, shift_x, shift_y, ring) -> torch.Tensor:
        """Lens profile at offset (dx, dy) px of sources with ``radius`` and lens state (all broadcastable).

        ``outer(r) - ring * min(outer(RING_INNER*r), outer(r))`` (module docstring), before ``norm / (r^2+0.2)``.
        """
        outer = _clipped(aperture, dx, dy, radius, shift_x, shift_y)
        if not isinstance(ring, torch.Tensor) and ring == 0.0:
            return outer
        inner = _clipped(aperture, dx, dy, radius * RING_INNER, shift_x, shift_y)
        return outer - ring * torch.minimum(inner, outer)

    def kernel(self, aperture: Aperture, radius: float, x: float, y: float, height: int, width: int,
               normalize: bool = True, device=None) -> torch.Tensor:
        """Rasterised weights of one source at pixel (x, y) of a (height, width) frame, blur radius ``radius``.

        The plain aperture's window :meth:`Aperture.kernel` (a lemon stays inside it), holding
        ``profile * norm / (r^2 + 0.2)``; normalised to sum 1 with ``normalize``. For previews and tests.
        """
        radius = check_range(radius, "radius", 0.0, 4096.0)
        wx, wy = aperture.window(radius)
        fields = self.fields(aperture, torch.full((height, width), radius))
        iy, ix = int(round(y)), int(round(x))
        sx, sy, ring, norm = (float(t[iy, ix]) for t in fields)
        ddy = torch.arange(-wy, wy + 1, dtype=torch.float32, device=device).view(-1, 1)
        ddx = torch.arange(-wx, wx + 1, dtype=torch.float32, device=device).view(1, -1)
        r = torch.tensor(radius, dtype=torch.float32, device=device)
        k = self.profile(aperture, ddx, ddy, r, sx, sy, ring) * (norm / (radius * radius + 0.2))
        if normalize:
            k = k / k.sum()
        return k


def _clipped(aperture: Aperture, dx, dy, radius, shift_x, shift_y) -> torch.Tensor:
    """``min(A(p + R*s), C(p - R*s))`` at image offsets (dx, dy) for radius R (the lemon; A itself when s = 0)."""
    ax, ay = aperture.axis_scale
    ox = shift_x * radius * ax
    oy = shift_y * radius * ay
    shape = aperture.profile(dx + ox, dy + oy, radius)
    clip = _circle_like(aperture).profile(dx - ox, dy - oy, radius)
    return torch.minimum(shape, clip)


def _circle_like(aperture: Aperture) -> Aperture:
    return Aperture.circle(aperture.anamorphic)


#: clip distances c (units of r) and directions (radians, scaled coordinates) of the area tables
_AREA_CLIPS = 17
_AREA_ANGLES = 32


def clip_area_ratio(aperture: Aperture, shift_x: torch.Tensor, shift_y: torch.Tensor) -> torch.Tensor:
    """Area of the lemon over the area of the plain shape, for clip half-distances ``(shift_x, shift_y)``.

    Bilinear in the table of :func:`_area_table` (clip distance ``c = 2|s|`` in [0, MAX_CLIP], direction);
    1 at ``s = 0``. For circles the table is the closed form of two intersecting discs.
    """
    table = _area_table(aperture).to(shift_x.device)
    clip = torch.clamp(2.0 * torch.sqrt(shift_x * shift_x + shift_y * shift_y), 0.0, MAX_CLIP)
    ci = clip / MAX_CLIP * (_AREA_CLIPS - 1)
    c0 = torch.clamp(torch.floor(ci), 0, _AREA_CLIPS - 2)
    cf = ci - c0
    ti = torch.remainder(torch.atan2(shift_y, shift_x), 2 * math.pi) / (2 * math.pi) * _AREA_ANGLES
    t0 = torch.floor(ti)
    tf = ti - t0
    t0 = torch.remainder(t0, _AREA_ANGLES).long()
    t1 = torch.remainder(t0 + 1, _AREA_ANGLES)
    c0 = c0.long()
    c1 = c0 + 1
    value = ((table[c0, t0] * (1 - tf) + table[c0, t1] * tf) * (1 - cf)
             + (table[c1, t0] * (1 - tf) + table[c1, t1] * tf) * cf)
    return value.to(torch.float32)


@functools.lru_cache(maxsize=32)
def _area_table(aperture: Aperture) -> torch.Tensor:
    """(_AREA_CLIPS, _AREA_ANGLES) float64: area of ``min(A(p+s), C(p-s))`` / area of ``A`` (scaled coordinates).

    Circles: closed form. Polygons and masks: the soft profiles of the round (anamorphic 1) shape at radius 24
    summed on a 0.5-pixel grid.
    """
    clips = torch.linspace(0.0, MAX_CLIP, _AREA_CLIPS, dtype=torch.float64)
    if aperture.kind == "circle":
        half = clips / 2
        area = 2 * torch.acos(half) - half * 2 * torch.sqrt(1 - half * half)
        return (area / math.pi).view(-1, 1).expand(-1, _AREA_ANGLES).contiguous()
    round_shape = replace(aperture, anamorphic=1.0)
    radius = 16.0
    step = 0.5
    n = int(math.ceil((radius + 3) / step))
    axis = torch.arange(-n, n + 1, dtype=torch.float32) * step
    gy, gx = axis.view(1, -1, 1), axis.view(1, 1, -1)
    r = torch.tensor(radius)
    base = float(round_shape.profile(gx, gy, r).double().sum())
    angles = torch.arange(_AREA_ANGLES, dtype=torch.float64) * (2 * math.pi / _AREA_ANGLES)
    half = (clips[1:] / 2).view(-1, 1)
    sx = (half * torch.cos(angles).view(1, -1)).reshape(-1, 1, 1).to(torch.float32)
    sy = (half * torch.sin(angles).view(1, -1)).reshape(-1, 1, 1).to(torch.float32)
    value = _clipped(round_shape, gx, gy, r, sx, sy).double().sum(dim=(1, 2)) / base
    return torch.cat([torch.ones(1, _AREA_ANGLES, dtype=torch.float64), value.view(-1, _AREA_ANGLES)])


#: largest radius (px) of the per-aperture mass tables; larger radii use the ratios at this radius
MASS_TABLE_RADIUS = 8.0
_MASS_STEPS_PER_PX = 2
_MASS_CLIPS = 9
_MASS_ANGLES = 16


def _mass_ratios(aperture: Aperture, radius: torch.Tensor, shift_x: torch.Tensor, shift_y: torch.Tensor):
    """``(M_outer / M_plain, M_inner / M_plain)`` per source (module docstring), float32 like ``radius``.

    Trilinear in (radius, clip distance, direction) through one ``grid_sample`` over the table (direction
    periodic: the table carries a copy of its first direction at the end).
    """
    table = _mass_volume(aperture, radius.device)  # (1, 2, radii, clips, angles + 1)
    n_r = table.shape[2]
    shape = radius.shape
    ri = torch.clamp(radius.reshape(-1) * _MASS_STEPS_PER_PX, 0, n_r - 1) / (n_r - 1)
    sx, sy = shift_x.reshape(-1), shift_y.reshape(-1)
    ci = torch.clamp(2.0 * torch.sqrt(sx * sx + sy * sy), 0.0, MAX_CLIP) / MAX_CLIP
    ti = torch.remainder(torch.atan2(sy, sx), 2 * math.pi) / (2 * math.pi)
    grid = (torch.stack([ti, ci, ri], dim=-1) * 2 - 1).view(1, 1, 1, -1, 3).to(torch.float32)
    value = F.grid_sample(table, grid, mode="bilinear", padding_mode="border", align_corners=True).view(2, -1)
    return value[0].view(shape), value[1].view(shape)


@functools.lru_cache(maxsize=64)
def _mass_volume(aperture: Aperture, device) -> torch.Tensor:
    table = _mass_table(aperture).to(torch.float32)
    table = torch.cat([table, table[..., :1]], dim=-1)
    return table.unsqueeze(0).to(device).contiguous()


@functools.lru_cache(maxsize=32)
def _mass_table(aperture: Aperture) -> torch.Tensor:
    """(2, radii, _MASS_CLIPS, _MASS_ANGLES) float64: sums of the rasterised outer lemon / inner ring part of the
    lens kernel over the official window, relative to the plain kernel's sum, for radii 0, 1/2, .. 8 px."""
    radii = [i / _MASS_STEPS_PER_PX for i in range(int(MASS_TABLE_RADIUS * _MASS_STEPS_PER_PX) + 1)]
    clips = torch.linspace(0.0, MAX_CLIP, _MASS_CLIPS, dtype=torch.float64)
    angles = torch.arange(_MASS_ANGLES, dtype=torch.float64) * (2 * math.pi / _MASS_ANGLES)
    half = (clips / 2).view(-1, 1)
    sx = (half * torch.cos(angles).view(1, -1)).reshape(-1, 1, 1).to(torch.float32)
    sy = (half * torch.sin(angles).view(1, -1)).reshape(-1, 1, 1).to(torch.float32)
    out = torch.empty(2, len(radii), _MASS_CLIPS * _MASS_ANGLES, dtype=torch.float64)
    for i, radius in enumerate(radii):
        wx, wy = aperture.window(radius)
        gy = torch.arange(-wy, wy + 1, dtype=torch.float32).view(1, -1, 1)
        gx = torch.arange(-wx, wx + 1, dtype=torch.float32).view(1, 1, -1)
        r = torch.tensor(radius, dtype=torch.float32)
        plain = float(aperture.profile(gx, gy, r).double().sum())
        outer = _clipped(aperture, gx, gy, r, sx, sy)
        inner = torch.minimum(_clipped(aperture, gx, gy, r * RING_INNER, sx, sy), outer)
        out[0, i] = outer.double().sum(dim=(1, 2)) / plain
        out[1, i] = inner.double().sum(dim=(1, 2)) / plain
    return out.view(2, len(radii), _MASS_CLIPS, _MASS_ANGLES)

"""Procedural layered scenes for training data, tests and the bundled demo.

A scene is a background plane (textured, possibly slanted, with small bright highlights that become bokeh
balls) and several objects in front of it, each on its own layer: smooth blobs and polygons, ragged
silhouettes, bars, branching twigs down to sub-pixel width and hair-like strands. Each layer has its own
(constant or slanted) disparity; the nearer layers come later in the list. Alpha is anti-aliased by
supersampling, so the all-in-focus image mixes colours at edges while the disparity map is sampled at pixel
centres (like a photo with an estimated depth map, and like ``bench_dev``).

Everything is deterministic for a ``numpy.random.Generator`` seed. Tensors follow the package conventions:
image (1, 3, H, W) in [0, 1]; disparity (1, 1, H, W) in [0, 1], 1 = near.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .lens import Layer, composite_in_focus
from .textures import random_texture

__all__ = [
    "SynthScene",
    "make_scene",
    "visible_disparity",
    "augment_disparity",
    "RenderParams",
    "sample_render_params",
]


#: range of the gains of lights brighter than white (``make_scene(hdr_lights=...)``): bench_dev's lights are
#: 2-10x the clip level, its scenes 12-13 have lights from 1.1x to 20x
HDR_LIGHT_GAIN = (1.1, 20.0)


@dataclass
class SynthScene:
    """A layered scene plus its all-in-focus image and disparity map.

    Attributes:
        layers: back to front (layer 0 = opaque background).
        image: (1, 3, H, W) all-in-focus image in [0, 1].
        disparity: (1, 1, H, W) in [0, 1], disparity of the front-most layer covering each pixel centre
            (alpha >= 0.5); normalised so the scene spans [0, 1].
    """

    layers: list
    image: torch.Tensor
    disparity: torch.Tensor


# --------------------------------------------------------------------------------------------------------
# shapes: coverage masks at supersampled resolution (numpy bool/float (h*ss, w*ss))
# --------------------------------------------------------------------------------------------------------
def _radial_shape(h: int, w: int, rng: np.random.Generator, ragged: bool) -> np.ndarray:
    """Star-shaped blob / polygon / ragged silhouette around a random centre."""
    cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    radius = rng.uniform(0.08, 0.35) * min(h, w)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = (y - cy), (x - cx)
    aspect = rng.uniform(0.5, 1.6)
    dy = dy * aspect
    rho = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx)
    kind = rng.random()
    if kind < 0.3:  # regular polygon
        n = int(rng.integers(3, 9))
        a1, a2 = 2 * np.pi / n, np.pi / 2 - np.pi / n
        phi = np.mod(np.abs(theta + rng.uniform(0, np.pi)), a1)
        edge = radius * np.sin(a2) / np.sin(phi + a2)
    else:  # smooth blob
        edge = np.full_like(rho, radius)
        for k in range(1, 5):
            edge += radius * rng.uniform(0, 0.25 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    if ragged:
        for k in range(6, 40, 3):
            edge += radius * rng.uniform(0, 0.6 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return rho <= edge


def _capsules(h: int, w: int, segments: list, mask: np.ndarray | None = None) -> np.ndarray:
    """Union of capsules ((y0, x0, y1, x1, width), ...) rasterised at pixel centres."""
    out = np.zeros((h, w), bool) if mask is None else mask
    for y0, x0, y1, x1, width in segments:
        half = max(width, 0.1) / 2
        top = int(max(0, math.floor(min(y0, y1) - half - 1)))
        bottom = int(min(h, math.ceil(max(y0, y1) + half + 2)))
        left = int(max(0, math.floor(min(x0, x1) - half - 1)))
        right = int(min(w, math.ceil(max(x0, x1) + half + 2)))
        if top >= bottom or left >= right:
            continue
        y, x = np.mgrid[top:bottom, left:right].astype(np.float32)
        vy, vx = y1 - y0, x1 - x0
        length2 = vy * vy + vx * vx
        t = np.clip(((y - y0) * vy + (x - x0) * vx) / max(length2, 1e-9), 0, 1)
        dist2 = (y - (y0 + t * vy)) ** 2 + (x - (x0 + t * vx)) ** 2
        out[top:bottom, left:right] |= dist2 <= half * half
    return out


def _branch_segments(h: int, w: int, rng: np.random.Generator, ss: int) -> list:
    """A twig: a random walk that forks, getting thinner (down to ~0.3 px at output resolution)."""
    segments = []
    start_edge = rng.integers(4)
    y = rng.uniform(0, h) if start_edge < 2 else (0.0 if start_edge == 2 else h - 1.0)
    x = (0.0 if start_edge == 0 else w - 1.0) if start_edge < 2 else rng.uniform(0, w)
    angle = math.atan2(h / 2 - y, w / 2 - x) + rng.uniform(-0.6, 0.6)
    stack = [(y, x, angle, rng.uniform(2.0, 6.0) * ss, 0)]
    step = 0.04 * min(h, w)
    while stack and len(segments) < 400:
        y, x, angle, width, depth = stack.pop()
        for _ in range(int(rng.integers(4, 12))):
            angle += rng.normal(0, 0.25)
            ny, nx = y + step * math.sin(angle), x + step * math.cos(angle)
            segments.append((y, x, ny, nx, width))
            y, x = ny, nx
            width = max(0.3 * ss, width * 0.93)
            if depth < 4 and rng.random() < 0.22:
                stack.append((y, x, angle + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1), width * 0.6, depth + 1))
            if not (-step < y < h + step and -step < x < w + step):
                break
    return segments


def _strand_segments(h: int, w: int, rng: np.random.Generator, ss: int) -> list:
    """Hair-like strands: a tuft of thin smooth curves from a common root."""
    segments = []
    root_y, root_x = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    base_angle = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.15, 0.45) * min(h, w)
    for _ in range(int(rng.integers(15, 60))):
        angle = base_angle + rng.normal(0, 0.5)
        curl = rng.normal(0, 1.5) / length
        width = rng.uniform(0.25, 1.2) * ss
        y, x = root_y + rng.normal(0, 0.03 * h), root_x + rng.normal(0, 0.03 * w)
        n = 16
        seg_len = length * rng.uniform(0.5, 1.0) / n
        for _ in range(n):
            angle += curl * seg_len
            ny, nx = y + seg_len * math.sin(angle), x + seg_len * math.cos(angle)
            segments.append((y, x, ny, nx, width))
            y, x = ny, nx
    return segments


def _bar(h: int, w: int, rng: np.random.Generator, ss: int) -> list:
    y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
    angle = rng.uniform(0, np.pi)
    length = 2 * max(h, w)
    dy, dx = length * math.sin(angle), length * math.cos(angle)
    return [(y0 - dy, x0 - dx, y0 + dy, x0 + dx, rng.uniform(0.02, 0.12) * min(h, w))]


def _object_mask(h: int, w: int, rng: np.random.Generator, ss: int) -> np.ndarray:
    hs, ws = h * ss, w * ss
    kind = rng.random()
    if kind < 0.35:
        mask = _radial_shape(hs, ws, rng, ragged=False)
    elif kind < 0.55:
        mask = _radial_shape(hs, ws, rng, ragged=True)
    elif kind < 0.72:
        mask = _capsules(hs, ws, _branch_segments(hs, ws, rng, ss))
    elif kind < 0.87:
        # a head with hair: a blob and a tuft of strands around its centre
        mask = _radial_shape(hs, ws, rng, ragged=False)
        mask = _capsules(hs, ws, _strand_segments(hs, ws, rng, ss), mask)
    else:
        mask = _capsules(hs, ws, _bar(hs, ws, rng, ss))
    return mask


def _add_highlights(
    color: np.ndarray,
    alpha: np.ndarray,
    rng: np.random.Generator,
    count: int,
    light_rng: np.random.Generator | None = None,
    hdr_lights: float = 0.0,
) -> None:
    """Paint small bright anti-aliased disks (in place) where the layer is opaque; with probability
    ``hdr_lights`` (drawn from ``light_rng``, so that ``rng``'s draws do not change) a disk is a light brighter
    than white: its colour times a gain log-uniform in :data:`HDR_LIGHT_GAIN` (the image clips it to 1)."""
    h, w = color.shape[:2]
    for _ in range(count):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if alpha[int(cy), int(cx)] < 0.99:
            continue
        radius = rng.uniform(0.6, 2.5)
        top, bottom = int(max(0, cy - radius - 2)), int(min(h, cy + radius + 3))
        left, right = int(max(0, cx - radius - 2)), int(min(w, cx + radius + 3))
        y, x = np.mgrid[top:bottom, left:right].astype(np.float32) + 0.5
        cover = np.clip(radius - np.sqrt((y - cy) ** 2 + (x - cx) ** 2) + 0.5, 0, 1)[..., None]
        tint = 1.0 - rng.uniform(0, 0.25, 3).astype(np.float32)
        if light_rng is not None and hdr_lights > 0 and light_rng.random() < hdr_lights:
            tint = tint * np.float32(math.exp(light_rng.uniform(*np.log(HDR_LIGHT_GAIN))))
        patch = color[top:bottom, left:right]
        color[top:bottom, left:right] = patch * (1 - cover) + tint * cover


def _plane(h: int, w: int, rng: np.random.Generator, base: float, slope: float) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    gy, gx = rng.uniform(-slope, slope), rng.uniform(-slope, slope)
    return (base + gy * (y / h - 0.5) + gx * (x / w - 0.5)).astype(np.float32)


def visible_disparity(layers) -> torch.Tensor:
    """Disparity of the front-most layer with alpha >= 0.5 at each pixel centre. (B, 1, H, W)."""
    out = layers[0].disparity.clone()
    for layer in layers[1:]:
        out = torch.where(layer.alpha >= 0.5, layer.disparity, out)
    return out


def make_scene(
    height: int,
    width: int,
    seed: int,
    *,
    objects: tuple[int, int] = (2, 6),
    highlights: tuple[int, int] = (4, 30),
    supersample: int = 3,
    hdr_lights: float = 0.0,
) -> SynthScene:
    """A random layered scene.

    Args:
        height, width: output size in pixels (>= 8).
        seed: random seed; the same seed gives the same scene.
        objects: inclusive range of the number of foreground objects.
        highlights: inclusive range of the number of small bright highlights on the background.
        supersample: alpha anti-aliasing factor (coverage measured on a supersample x supersample grid).
        hdr_lights: probability in [0, 1] that a highlight is a light brighter than white (gain log-uniform in
            :data:`HDR_LIGHT_GAIN`; the layers keep the true value, the all-in-focus ``image`` is clipped to 1 as
            a photo is). Drawn from a stream of its own: everything else in the scene is the same for any value.

    Returns:
        :class:`SynthScene` with layers of shape (1, C, H, W); disparity normalised to span [0, 1].
    """
    if height < 8 or width < 8:
        raise ValueError(f"scene size must be at least 8x8, got {height}x{width}")
    if not 0.0 <= hdr_lights <= 1.0:
        raise ValueError(f"hdr_lights must be a probability in [0, 1], got {hdr_lights}")
    rng = np.random.default_rng(seed)
    light_rng = np.random.default_rng([seed, 31337])
    n_objects = int(rng.integers(objects[0], objects[1] + 1))
    # Depths: background far, objects at increasing disparity (nearer later).
    bg_base = rng.uniform(0.0, 0.25)
    depths = np.sort(rng.uniform(bg_base + 0.12, 1.0, n_objects))

    layers_np = []
    bg_color = random_texture(height, width, rng)
    bg_alpha = np.ones((height, width), np.float32)
    _add_highlights(bg_color, bg_alpha, rng, int(rng.integers(highlights[0], highlights[1] + 1)), light_rng,
                    hdr_lights)
    bg_disp = _plane(height, width, rng, bg_base, slope=rng.choice([0.0, 0.1, 0.25]))
    layers_np.append((bg_color, bg_alpha, bg_disp))
    for depth in depths:
        mask = _object_mask(height, width, rng, supersample).astype(np.float32)
        alpha = mask.reshape(height, supersample, width, supersample).mean(axis=(1, 3)).astype(np.float32)
        color = random_texture(height, width, rng)
        if rng.random() < 0.3:
            _add_highlights(color, (alpha > 0.999).astype(np.float32), rng, int(rng.integers(1, 8)), light_rng,
                            hdr_lights)
        disp = _plane(height, width, rng, float(depth), slope=rng.choice([0.0, 0.0, 0.08]))
        layers_np.append((color, alpha, disp))

    layers = [
        Layer(
            color=torch.from_numpy(c).permute(2, 0, 1)[None].contiguous(),
            alpha=torch.from_numpy(a)[None, None].contiguous(),
            disparity=torch.from_numpy(d)[None, None].contiguous(),
        )
        for c, a, d in layers_np
    ]
    visible = visible_disparity(layers)
    lo, hi = float(visible.min()), float(visible.max())
    span = max(hi - lo, 1e-3)
    for layer in layers:
        layer.disparity = ((layer.disparity - lo) / span).clamp(0.0, 1.0)
    image = composite_in_focus(layers).clamp(0.0, 1.0)
    return SynthScene(layers=layers, image=image, disparity=visible_disparity(layers))


# --------------------------------------------------------------------------------------------------------
# disparity augmentation (robustness to predicted depth) and render parameters
# --------------------------------------------------------------------------------------------------------
def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-(taps**2) / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return F.conv2d(x, kernel.view(1, 1, -1, 1))


def augment_disparity(
    disparity: torch.Tensor, rng: np.random.Generator, probability: float = 0.8, predicted_share: float = 0.25
) -> torch.Tensor:
    """Degrade a clean disparity map the way a predicted (monocular) depth map is degraded.

    With ``probability`` the map is degraded (otherwise returned as is): with probability 0.85 by one of two
    recipes:

    * (``predicted_share``, default 1 in 4) the fixed "predicted map" of bench/eval_quality.py: near side dilated
      by 1-3 px (max filter), Gaussian blur sigma 1.5-2.5 px;
    * otherwise one to three of, in random order: Gaussian blur (sigma 0.5-3 px), dilation or erosion
      (max / min filter 3-7 px: the near side grows or shrinks; the paper's three), edge misalignment (a
      global shift of up to 3 px, or a smooth random warp of 1-3 px amplitude that moves every edge
      differently), a low-frequency disparity error (a smooth multiplicative ramp of up to +-5 %).

    and, independently, with probability 0.5 the result is quantised to 8 bits (``round(d * 255) / 255``), as a depth
    map saved as an 8-bit PNG is.

    Args:
        disparity: (B, 1, H, W) in [0, 1].
        rng: numpy random generator (the draws depend only on it: deterministic).
        probability: chance of any degradation, in [0, 1].
        predicted_share: share of the degraded maps made with the "predicted map" recipe, in [0, 1].

    Returns:
        (B, 1, H, W) in [0, 1].
    """
    out = disparity
    if rng.random() >= probability:
        return out
    if rng.random() < 0.85:
        if rng.random() < predicted_share:
            out = _max_filter(out, 2 * int(rng.integers(1, 4)) + 1)
            out = _gaussian_blur(out, float(rng.uniform(1.5, 2.5)))
        else:
            for op in rng.permutation(5)[: int(rng.integers(1, 4))]:
                if op == 0:
                    out = _gaussian_blur(out, float(rng.uniform(0.5, 3.0)))
                elif op in (1, 2):
                    k = int(rng.choice([3, 5, 7]))
                    out = _max_filter(out, k) if op == 1 else -_max_filter(-out, k)
                elif op == 3:
                    if rng.random() < 0.5:
                        dy, dx = (int(v) for v in rng.integers(-3, 4, size=2))
                        out = torch.roll(out, shifts=(dy, dx), dims=(-2, -1))
                    else:
                        out = _random_warp(out, rng, float(rng.uniform(1.0, 3.0)))
                else:
                    h, w = out.shape[-2:]
                    gy, gx = (float(v) for v in rng.uniform(-0.05, 0.05, size=2))
                    ramp = (1.0 + gy * torch.linspace(-1, 1, h).view(-1, 1) + gx * torch.linspace(-1, 1, w).view(1, -1))
                    out = out * ramp.to(out)
    out = out.clamp(0.0, 1.0)
    if rng.random() < 0.5:
        out = torch.round(out * 255.0) / 255.0
    return out


def _max_filter(x: torch.Tensor, k: int) -> torch.Tensor:
    """k x k max filter with replicate padding (k odd)."""
    return F.max_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, 1)


def _random_warp(x: torch.Tensor, rng: np.random.Generator, amplitude: float) -> torch.Tensor:
    """Resample ``x`` (B, 1, H, W) through a smooth random displacement field of about ``amplitude`` px
    (a 4x4 grid of random offsets, bicubically upsampled; nearest-neighbour sampling keeps edges hard)."""
    b, _, h, w = x.shape
    coarse = torch.from_numpy(rng.normal(0.0, amplitude, size=(1, 2, 4, 4)).astype(np.float32))
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)[0]  # (2, h, w) px
    ys = torch.arange(h, dtype=torch.float32).view(-1, 1) + field[0]
    xs = torch.arange(w, dtype=torch.float32).view(1, -1) + field[1]
    grid = torch.stack([xs / max(w - 1, 1) * 2 - 1, ys / max(h - 1, 1) * 2 - 1], dim=-1)[None].expand(b, -1, -1, -1)
    return F.grid_sample(x, grid.to(x), mode="nearest", padding_mode="border", align_corners=True)


@dataclass(frozen=True)
class RenderParams:
    """Lens controls of one training render: K (px per unit disparity), focus in [0, 1], gamma in [1, 5]."""

    K: float
    focus: float
    gamma: float


def sample_render_params(rng: np.random.Generator, K_range: tuple[float, float] = (4.0, 12.0)) -> RenderParams:
    """Draw lens controls as in the paper (docs/official-behaviour.md, section 9), gamma 2.2 (bench_dev / sRGB) favoured.

    K uniform in ``K_range``; focus uniform in [0.05, 1]; gamma: 2.2 with probability 0.4, otherwise
    uniform in [1, 5].
    """
    K = float(rng.uniform(*K_range))
    focus = float(rng.uniform(0.05, 1.0))
    gamma = 2.2 if rng.random() < 0.4 else float(rng.uniform(1.0, 5.0))
    return RenderParams(K=K, focus=focus, gamma=gamma)

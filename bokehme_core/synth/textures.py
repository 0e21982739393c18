"""Procedural textures for synthetic scenes: fractal noise, stripes, gradients, checkers, photo crops.

All functions take a ``numpy.random.Generator`` (so scenes are deterministic for a seed) and return float32
numpy arrays: (H, W) in [0, 1] for scalar textures, (H, W, 3) in [0, 1] for colour textures.
Photo crops come from scikit-image's bundled public-domain images (``skimage.data``); scikit-image is a
development/training dependency only and is imported lazily here, never by the runtime library.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "PHOTO_NAMES",
    "fractal_noise",
    "stripes",
    "gradient",
    "checker",
    "photo_crop",
    "colorize",
    "random_texture",
]

#: skimage.data images shipped inside the scikit-image wheel (no download needed).
PHOTO_NAMES = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "grass", "gravel", "text", "coins",
    "moon", "hubble_deep_field", "immunohistochemistry", "page", "retina", "clock", "colorwheel",
)  # fmt: skip


def _resize(array: np.ndarray, height: int, width: int, mode: str = "bicubic") -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if t.ndim == 2:
        t = t[None, None]
    else:
        t = t.permute(2, 0, 1)[None]
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(t, size=(height, width), mode=mode, **kwargs)[0]
    out = out[0] if array.ndim == 2 else out.permute(1, 2, 0)
    return out.numpy()


def fractal_noise(height: int, width: int, rng: np.random.Generator, octaves: int = 6, persistence: float = 0.55):
    """Sum of bicubically upsampled random grids (value noise), normalised to [0, 1]. (H, W) float32."""
    out = np.zeros((height, width), np.float32)
    amplitude = 1.0
    base = int(rng.integers(2, 5))
    for octave in range(octaves):
        cells = base * 2**octave
        if cells > max(height, width):
            break
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        out += amplitude * _resize(grid, height, width)
        amplitude *= persistence
    lo, hi = float(out.min()), float(out.max())
    return ((out - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def stripes(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Oriented sine or square stripes, optionally warped by noise. (H, W) float32 in [0, 1]."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(3.0, 30.0)
    phase = x * np.cos(angle) + y * np.sin(angle)
    if rng.random() < 0.5:
        phase = phase + rng.uniform(2, 15) * fractal_noise(height, width, rng, octaves=3)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * phase / period)
    if rng.random() < 0.5:
        wave = (wave > 0.5).astype(np.float32)
    return wave.astype(np.float32)


def gradient(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Linear or radial gradient. (H, W) float32 in [0, 1]."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        g = x * np.cos(angle) + y * np.sin(angle)
    else:
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        g = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    g = (g - g.min()) / max(float(g.max() - g.min()), 1e-6)
    return g.astype(np.float32)


def checker(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Checkerboard of random cell size. (H, W) float32 in {0, 1}."""
    cell = int(rng.integers(4, 24))
    y, x = np.mgrid[0:height, 0:width]
    return (((y // cell) + (x // cell)) % 2).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data  # development/training dependency, imported lazily

    image = np.asarray(getattr(skimage.data, name)())
    image = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image[..., :3]


def photo_crop(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of a bundled skimage photo, randomly scaled and flipped. (H, W, 3) float32 in [0, 1]."""
    image = _photo(PHOTO_NAMES[int(rng.integers(len(PHOTO_NAMES)))])
    scale = rng.uniform(0.5, 2.0)
    crop_h = min(image.shape[0], max(8, int(round(height / scale))))
    crop_w = min(image.shape[1], max(8, int(round(width / scale))))
    top = int(rng.integers(0, image.shape[0] - crop_h + 1))
    left = int(rng.integers(0, image.shape[1] - crop_w + 1))
    crop = image[top : top + crop_h, left : left + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.clip(_resize(crop, height, width), 0.0, 1.0)


def colorize(scalar: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map a scalar texture to colour between two random colours. (H, W, 3) float32 in [0, 1]."""
    c0, c1 = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    return (c0 * (1 - scalar[..., None]) + c1 * scalar[..., None]).astype(np.float32)


def random_texture(height: int, width: int, rng: np.random.Generator, photo_probability: float = 0.45) -> np.ndarray:
    """A random colour texture: a photo crop, or a colourised procedural texture, sometimes mixed with noise.

    Returns:
        (H, W, 3) float32 in [0, 1].
    """
    if rng.random() < photo_probability:
        tex = photo_crop(height, width, rng)
    else:
        kind = int(rng.integers(4))
        scalar = (fractal_noise, stripes, gradient, checker)[kind](height, width, rng)
        tex = colorize(scalar, rng)
    if rng.random() < 0.4:
        detail = fractal_noise(height, width, rng, octaves=7) - 0.5
        tex = tex + rng.uniform(0.05, 0.25) * detail[..., None]
    return np.clip(tex, 0.0, 1.0).astype(np.float32)

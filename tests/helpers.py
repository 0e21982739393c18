"""Helpers shared by several test modules (imported as ``from helpers import ...``; tests/ is on sys.path)."""

from __future__ import annotations

import math
import os
import pathlib

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"  # small inputs and goldens the project made itself

# The one place that knows where the external test data lives: the official BokehMe fixtures and weights and the
# path-traced scenes, in ``../shared`` beside the checkout (or wherever BOKEHME_SHARED points). Tests that read it
# carry the ``needs_shared`` marker (tests/conftest.py skips them, with SHARED_REASON, when it is absent).
SHARED = pathlib.Path(os.environ.get("BOKEHME_SHARED") or ROOT.parent / "shared")
OFFICIAL = SHARED / "bokehme_official"
HAVE_SHARED = (OFFICIAL / "refs").is_dir() and (OFFICIAL / "checkpoints").is_dir()
SHARED_REASON = (f"needs the official BokehMe fixtures and weights in {OFFICIAL} "
                 "(a ../shared folder beside the checkout, or BOKEHME_SHARED)")


def random_arnet_state(seed: int = 0) -> dict:
    """A seeded, freshly initialised ARNet state dict in the official key layout (for loader and file-form tests
    that need the layout, not the official values)."""
    from bokehme_core.neural.arnet import ARNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return {k: v.clone() for k, v in ARNet().state_dict().items()}


def random_official_depth_weights(family: str, variant: str, seed: int = 0) -> dict:
    """Seeded random depth weights in the official key layout (shapes from our module, renamed by the inverse
    converter; tests/core/test_depth.py proves that layout is the official one). Fan-in scaled so activations
    stay O(1), with a positive final bias so that the output is not all zero after the final ReLUs."""
    import math

    from bokehme_core.depth import build_model, to_official_state_dict

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in to_official_state_dict(build_model(family, variant, device="meta")).items():
        if key.endswith(".gamma") or (value.ndim == 1 and "norm" in key and key.endswith("weight")):
            v = 1.0 + 0.2 * torch.randn(value.shape, generator=gen)
        elif value.ndim == 1 or key.endswith(("pos_embed", "cls_token", "mask_token")):
            v = 0.05 * torch.randn(value.shape, generator=gen)
        else:
            transposed = value.ndim == 4 and value.shape[-1] in (2, 4) and (
                "resize_layers" in key or "postprocess" in key
            )
            fan_in = value.shape[0] if transposed else value[0].numel()  # transposed convs: (in, out, k, k)
            v = torch.randn(value.shape, generator=gen) / math.sqrt(fan_in)
        state[key] = v.to(torch.float32)
    for key in ("depth_head.scratch.output_conv2.2.bias", "scratch.output_conv.4.bias"):
        if key in state:
            state[key] = torch.full_like(state[key], 0.5)
    return state


def scatter_scene(h: int, w: int, seed: int = 0, kmax: float = 6.0, lights: tuple = (5, 7)):
    """A test scene for the classical renderer: ``(image (1,3,h,w) in [0, 1], defocus_px (1,1,h,w))``, a
    squared-noise image with white highlights every ``lights = (rows, cols)`` pixels and a signed defocus
    ``kmax * 2 * (disparity - 0.5)`` of a noisy ramp (so |defocus| <= kmax)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, h, w, generator=g) ** 2
    image[:, :, :: lights[0], :: lights[1]] = 1.0
    yy = torch.linspace(0, 1, h).view(1, 1, h, 1)
    xx = torch.linspace(0, 1, w).view(1, 1, 1, w)
    disparity = (0.6 * yy + 0.4 * xx + 0.1 * torch.rand(1, 1, h, w, generator=g)).clamp(0, 1)
    return image, kmax * 2 * (disparity - 0.5)


# --- photos with clipped regions (highlight recovery) ------------------------------------------------------------
def encode_8bit(linear: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, 3) linear radiance -> (1, 3, H, W) 8-bit sRGB photo (clipped at 1)."""
    if linear.ndim == 2:
        linear = np.repeat(linear[..., None], 3, axis=2)
    x = np.clip(linear, 0.0, 1.0)
    srgb = np.where(x <= 0.0031308, x * 12.92, 1.055 * np.maximum(x, 0.0031308) ** (1 / 2.4) - 0.055)
    srgb = np.round(srgb * 255) / 255
    return torch.from_numpy(srgb.astype(np.float32)).permute(2, 0, 1)[None].contiguous()


def coverage(h: int, w: int, inside, ss: int = 8) -> np.ndarray:
    """Pixel coverage of a shape (``inside(y, x)`` on pixel-unit coordinates), ss x ss supersampled (box filter)."""
    y, x = np.mgrid[0:h * ss, 0:w * ss].astype(np.float64)
    return inside((y + 0.5) / ss, (x + 0.5) / ss).reshape(h, ss, w, ss).mean(axis=(1, 3))


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian (reflect padding): a camera's optics + demosaicing, or a glow."""
    r = int(math.ceil(3 * sigma))
    taps = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma * sigma))
    taps /= taps.sum()
    x = np.pad(x, r, mode="reflect")
    x = np.apply_along_axis(lambda v: np.convolve(v, taps, mode="valid"), 0, x)
    return np.apply_along_axis(lambda v: np.convolve(v, taps, mode="valid"), 1, x)


def clipped_photo(light_gain: float = 8.0, panel_gain: float = 1.1, glow: float = 0.0) -> tuple:
    """A 96x128 photo: grey background 0.2 (linear), a light disc of radius 3 px at (24, 24) and a 40x60 panel;
    both brighter than white (``light_gain`` / ``panel_gain`` x the clip level), optics blur sigma 0.6 px;
    ``glow``: a wide halo around the light (lens glare), that fraction of its flux, sigma 5 px."""
    h, w = 96, 128
    disc = coverage(h, w, lambda y, x: (y - 24.3) ** 2 + (x - 24.6) ** 2 <= 3.0**2)
    panel = coverage(h, w, lambda y, x: (y >= 40.4) & (y < 80.4) & (x >= 50.3) & (x < 110.3))
    radiance = 0.2 * (1 - disc) * (1 - panel) + light_gain * disc + panel_gain * panel
    radiance = gaussian_blur(radiance, 0.6)
    if glow > 0:
        radiance = radiance + glow * light_gain * gaussian_blur(disc, 5.0)
    return encode_8bit(radiance), (24, 24), (60, 80)

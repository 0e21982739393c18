"""Disparity maps: loading at full precision, normalisation, depth -> disparity, NaN/inf repair, debanding.

Convention: disparity is a float tensor (B, 1, H, W) in [0, 1], 1 = near. Maps produced by other tools come in
many forms (8-bit hint images, 16-bit PNG, float TIFF/EXR/NPY, metric depth in metres, relative inverse depth);
the functions here turn them into that convention with explicit, documented steps: nothing is inverted,
resized or repaired silently.
"""

from __future__ import annotations

import logging
import math
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import check_choice, check_disparity, check_finite, check_range, check_same_spatial

__all__ = ["load_disparity", "prepare_disparity", "match_size", "normalize_disparity", "depth_to_disparity", "repair_nonfinite", "deband", "refine_disparity"]

logger = logging.getLogger(__name__)

#: Largest difference between colour channels (in [0,1] units) for which a 3-channel map counts as gray.
_GRAY_TOLERANCE = 2.0 / 255.0


def _to_gray(array: np.ndarray, path: pathlib.Path) -> np.ndarray:
    """(H,W), (H,W,1) or (H,W,3|4) gray-as-colour -> (H,W). A colour-mapped visualisation is refused."""
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[2] == 1:
        return array[..., 0]
    if array.ndim == 3 and array.shape[0] == 1:
        return array[0]
    if array.ndim == 3 and array.shape[2] in (3, 4):
        rgb = array[..., :3].astype(np.float64)
        spread = (rgb.max(axis=2) - rgb.min(axis=2)).max()
        scale = 255.0 if array.dtype == np.uint8 else (65535.0 if array.dtype == np.uint16 else 1.0)
        if spread / scale > _GRAY_TOLERANCE:
            raise ValueError(
                f"disparity file {path.name} has colour channels that differ (up to {spread / scale:.3f}): a "
                f"colour-mapped depth visualisation cannot be turned back into numbers; save the map as grayscale"
            )
        return rgb.mean(axis=2).astype(np.float32) if scale == 1.0 else array[..., 0]
    raise ValueError(f"disparity file {path.name} must hold one channel (H,W), got array shape {array.shape}")


def _read_exr(path: pathlib.Path) -> np.ndarray:
    try:
        import OpenEXR  # optional: pip install OpenEXR
    except ImportError:
        raise ImportError(
            f"reading {path.name} needs the optional OpenEXR package: pip install OpenEXR "
            f"(or save the map as 16-bit PNG, float TIFF or .npy)"
        ) from None
    try:
        with OpenEXR.File(str(path)) as exr:
            channels = {name: np.array(ch.pixels, dtype=np.float32) for name, ch in exr.channels().items()}
    except Exception as e:  # OpenEXR raises plain RuntimeError/OSError subclasses for broken files
        raise ValueError(f"cannot read EXR file {path}: {e}") from None
    for name in ("Y", "Z", "R", "V", "depth", "disparity"):
        if name in channels:
            return channels[name]
    if len(channels) == 1:
        return next(iter(channels.values()))
    if "RGB" in channels or "RGBA" in channels:
        return channels.get("RGB", channels.get("RGBA"))
    raise ValueError(f"EXR file {path.name} has channels {sorted(channels)}; expected one of Y, Z, R, depth")


def load_disparity(path) -> torch.Tensor:
    """Read a one-channel map at full precision, without normalising or inverting it.

    Supported: 8-bit PNG/JPEG (value / 255), 16-bit PNG (value / 65535: all 16 bits, not the official demo's
    8-bit read), 32-bit integer images (value / 65535), float TIFF (as stored), EXR (as stored; needs the
    optional ``OpenEXR`` package) and NumPy ``.npy`` (as stored; shapes (H,W), (1,H,W) or (H,W,1)). Gray maps
    saved as RGB are accepted; colour-mapped visualisations are refused.

    Returns:
        (1, 1, H, W) float32 tensor. Values of float files may lie outside [0, 1], be metric depth or hold
        NaN/inf: follow with :func:`repair_nonfinite`, :func:`depth_to_disparity`, :func:`normalize_disparity`.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"disparity file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path.name} is not a plain numeric .npy array: {e}") from None
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{path.name} must hold numbers, got dtype {array.dtype}")
        array = _to_gray(array.astype(np.float32), path)
    elif suffix == ".exr":
        array = _to_gray(_read_exr(path), path)
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im.load()
                mode = im.mode
                array = np.array(im)
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"cannot read disparity image {path}: {e}") from None
        if mode == "F":
            array = array.astype(np.float32)
        elif mode in ("I;16", "I;16B", "I;16L", "I"):
            array = array.astype(np.float32) / 65535.0
        elif array.dtype == np.uint16:
            array = _to_gray(array, path).astype(np.float32) / 65535.0
        elif mode in ("L", "P", "RGB", "RGBA", "LA"):
            if mode == "P":
                raise ValueError(f"{path.name} is a palette image; save the disparity as grayscale")
            if mode == "LA":
                array = array[..., 0]
            array = _to_gray(array, path).astype(np.float32) / 255.0
        else:
            raise ValueError(f"{path.name}: unsupported image mode {mode!r} for a disparity map")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"{path.name} must hold a non-empty 2-D map, got shape {array.shape}")
    return torch.from_numpy(array)[None, None]


def normalize_disparity(
    disparity: torch.Tensor,
    *,
    eps: float = 1e-6,
    low_pct: float = 0.0,
    high_pct: float = 100.0,
    batch_stable: bool = False,
    invert: bool = False,
) -> torch.Tensor:
    """Min-max (or percentile) normalise to [0, 1].

    Args:
        disparity: (B, 1, H, W), finite (repair NaN/inf first with :func:`repair_nonfinite`).
        eps: added to the range so that a flat map gives 0 everywhere instead of dividing by zero.
        low_pct, high_pct: percentiles mapped to 0 and 1 (0 and 100 = min and max); values beyond are
            clamped. Percentiles ignore outliers such as a few sky pixels.
        batch_stable: one range for the whole batch (video: no flicker) instead of one per image.
        invert: return ``1 - result`` (for maps where larger means farther).

    Returns:
        (B, 1, H, W) float32 in [0, 1].
    """
    check_disparity(disparity)
    low_pct = check_range(low_pct, "low_pct", 0.0, 100.0)
    high_pct = check_range(high_pct, "high_pct", 0.0, 100.0)
    if low_pct >= high_pct:
        raise ValueError(f"low_pct must be below high_pct, got {low_pct:g} >= {high_pct:g}")
    eps = check_range(eps, "eps", 0.0, 1.0)
    if not torch.isfinite(disparity).all():
        raise ValueError("disparity holds NaN/inf values; call repair_nonfinite first (or use the node's repair option)")
    d = disparity.to(torch.float32)
    flat = d.reshape(1, -1) if batch_stable else d.reshape(d.shape[0], -1)
    if low_pct == 0.0 and high_pct == 100.0:
        lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    else:
        sample = flat
        if sample.shape[1] > 4_000_000:  # torch.quantile has an input size limit; a strided sample is plenty
            sample = sample[:, :: math.ceil(sample.shape[1] / 4_000_000)]
        q = torch.tensor([low_pct / 100.0, high_pct / 100.0], dtype=torch.float32, device=d.device)
        lo, hi = torch.quantile(sample, q, dim=1)
    if batch_stable:
        lo, hi = lo.expand(d.shape[0]), hi.expand(d.shape[0])
    if ((hi - lo) <= eps).any():
        logger.warning("disparity is (nearly) constant: the normalised map is flat, everything is at one depth")
    span = hi - lo
    denominator = torch.where(span > 0, span + eps, torch.ones_like(span))  # a flat map becomes 0, never NaN
    out = ((d - lo.view(-1, 1, 1, 1)) / denominator.view(-1, 1, 1, 1)).clamp(0.0, 1.0)
    return 1.0 - out if invert else out


def depth_to_disparity(depth: torch.Tensor, mode: str = "metric", *, eps: float = 1e-6) -> torch.Tensor:
    """Turn a depth-like map into disparity (larger = nearer), before normalisation.

    Modes:
        ``"metric"``: metric (or any ratio-scaled) depth, larger = farther: ``1 / max(depth, eps)``. This is
            the physically right conversion: blur is linear in inverse depth. Depth <= 0 is invalid and becomes
            NaN (repair it with :func:`repair_nonfinite`).
        ``"inverted"``: a depth map already scaled to a range where larger = farther but not metric (e.g. an
            8-bit depth visualisation): ``max - depth`` per image, i.e. linear inversion.
        ``"disparity"``: already disparity-like (larger = nearer: Depth Anything, MiDaS, DPT raw outputs):
            returned unchanged.

    Args:
        depth: (B, 1, H, W).
    Returns:
        (B, 1, H, W) float32, not normalised: follow with :func:`normalize_disparity`.
    """
    check_disparity(depth, "depth")
    check_choice(mode, "mode", ("metric", "inverted", "disparity"))
    d = depth.to(torch.float32)
    if mode == "disparity":
        return d
    if mode == "inverted":
        finite = torch.where(torch.isfinite(d), d, torch.full_like(d, -math.inf))
        top = finite.reshape(d.shape[0], -1).amax(dim=1).view(-1, 1, 1, 1)
        return top - d
    bad = ~(d > 0)
    if bad.any():
        logger.warning("depth has %d pixels <= 0 or NaN: marked invalid (NaN) for repair", int(bad.sum()))
    return torch.where(bad, torch.full_like(d, math.nan), 1.0 / d.clamp_min(eps))


def repair_nonfinite(disparity: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Fill NaN/inf pixels from their valid surroundings (documented repair, logged as a warning).

    Holes are filled by push-pull interpolation: the valid pixels are averaged down an image pyramid until
    every hole is covered, then the coarse values are pulled back up into the holes only. A small hole gets
    the mean of its border, a large one a smooth blend of what surrounds it. Valid pixels never change.
    An image with no valid pixel at all is filled with 0 (the far plane).

    Args:
        disparity: (B, 1, H, W).
    Returns:
        (repaired (B, 1, H, W) float32, number of repaired pixels).
    """
    check_disparity(disparity)
    d = disparity.to(torch.float32)
    valid = torch.isfinite(d)
    n_bad = int((~valid).sum())
    if n_bad == 0:
        return d, 0
    logger.warning("disparity: repairing %d NaN/inf pixels from their surroundings", n_bad)
    out = torch.empty_like(d)
    for i in range(d.shape[0]):
        out[i : i + 1] = _push_pull(d[i : i + 1], valid[i : i + 1])
    return out, n_bad


def _push_pull(d: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    w = valid.to(d.dtype)
    if w.sum() == 0:
        return torch.zeros_like(d)
    v = torch.where(valid, d, torch.zeros_like(d))
    if bool(valid.all()):
        return v
    h, wd = d.shape[-2:]
    if h == 1 and wd == 1:
        return v
    # push: valid-weighted average pooling
    v2 = F.avg_pool2d(v * w, 2, ceil_mode=True)
    w2 = F.avg_pool2d(w, 2, ceil_mode=True)
    coarse_valid = w2 > 0
    coarse = torch.where(coarse_valid, v2 / w2.clamp_min(1e-12), torch.zeros_like(v2))
    filled = _push_pull(coarse, coarse_valid)
    # pull: upsample and use only where the fine level had no data
    up = F.interpolate(filled, scale_factor=2, mode="bilinear", align_corners=False)[..., :h, :wd]
    return torch.where(valid, v, up)


def deband(disparity: torch.Tensor, *, levels: int = 255, sigma: float = 2.0) -> torch.Tensor:
    """Smooth the staircase of a quantised (e.g. 8-bit) map without blurring real depth edges.

    A Gaussian blur of width ``sigma`` px is applied only where the 3x3 neighbourhood varies by at most one
    quantisation step (``1 / levels`` of the map's range), and it may move a value by one step at most;
    across larger jumps (real depth edges) the map is kept as is.

    Args:
        disparity: (B, 1, H, W), finite.
        levels: number of quantisation steps of the source (255 for 8-bit maps).
        sigma: blur width in pixels, in (0, 50].
    Returns:
        (B, 1, H, W) float32.
    """
    check_disparity(disparity)
    check_range(levels, "levels", 1, 1 << 24)
    sigma = check_range(sigma, "sigma", 1e-3, 50.0)
    d = disparity.to(torch.float32)
    flat = d.reshape(d.shape[0], -1)
    step = ((flat.amax(dim=1) - flat.amin(dim=1)) / levels).view(-1, 1, 1, 1)
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=d.device)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    blurred = F.pad(d, (radius, radius, 0, 0), mode="replicate")
    blurred = F.conv2d(blurred, g.view(1, 1, 1, -1))
    blurred = F.pad(blurred, (0, 0, radius, radius), mode="replicate")
    blurred = F.conv2d(blurred, g.view(1, 1, -1, 1))
    local_max = F.max_pool2d(d, 3, 1, 1)
    local_min = -F.max_pool2d(-d, 3, 1, 1)
    smooth_region = (local_max - local_min) <= step * 1.5
    # debanding moves a value by at most one step; this also keeps a real edge from leaking into its
    # smooth neighbourhood through the blur
    debanded = d + torch.minimum(torch.maximum(blurred - d, -step), step)
    return torch.where(smooth_region, debanded, d)


#: tolerance of the [0, 1] check of a map that is not normalised
_RANGE_TOLERANCE = 1e-6


def match_size(
    value: torch.Tensor,
    size: tuple,
    *,
    resize: bool = False,
    what: str = "disparity",
    advice: str = "resize it to the image first, or pass resize=True (bilinear)",
) -> torch.Tensor:
    """A (B, C, h, w) map brought to ``size`` = (H, W): returned as is when it already has that size, resized
    bilinearly (align_corners=False) when ``resize``, else ValueError naming both sizes and ``advice`` (how the
    caller's user allows resizing). The one resize of maps to the image size (disparity, error maps)."""
    if tuple(value.shape[-2:]) == tuple(size):
        return value
    if not resize:
        raise ValueError(
            f"{what} is {value.shape[-1]}x{value.shape[-2]} px but the image is {size[1]}x{size[0]} px (WxH): {advice}"
        )
    return F.interpolate(value, size=tuple(size), mode="bilinear", align_corners=False)


def prepare_disparity(
    raw: torch.Tensor,
    *,
    mode: str = "disparity",
    normalize: bool = True,
    low_pct: float = 0.0,
    high_pct: float = 100.0,
    batch_stable: bool = False,
    invert: bool = False,
    repair: bool = True,
    deband_8bit: bool = False,
    size: tuple | None = None,
    resize: bool = False,
    what: str = "disparity",
    option_names: dict | None = None,
) -> torch.Tensor:
    """The one path from any raw depth / disparity map to BokehMe disparity: (B,1,H,W) in [0, 1], 1 = near.

    Used by the disparity nodes, the CLI and the depth models (:meth:`bokehme_core.depth.DepthModel.estimate`).
    Steps, in order, each an explicit option:

    1. ``size``: when the map is not ``size`` = (H, W): resized bilinearly if ``resize``, else ValueError;
    2. ``repair``: NaN/inf filled from their surroundings (:func:`repair_nonfinite`, logged); without it
       non-finite values raise ValueError;
    3. ``deband_8bit``: the staircase of 8-bit maps smoothed (:func:`deband`);
    4. ``mode``: ``"disparity"`` (larger = nearer, unchanged), ``"inverted"`` (depth, larger = farther,
       inverted linearly) or ``"metric"`` (metric depth, ``1 / depth``; depth <= 0 is repaired or raises);
    5. ``normalize``: min-max (or ``low_pct`` / ``high_pct`` percentile) range to [0, 1], per image or, with
       ``batch_stable``, one range for the whole batch (video without flicker); ``invert`` flips near and far.
       Without ``normalize`` the map must already lie in [0, 1] (ValueError otherwise; ``invert`` = ``1 - d``).

    Args:
        raw: (B, 1, H, W) float map.
        what: the argument's name in error messages.
        option_names: how the caller exposes the options ``"repair"``, ``"normalize"`` and ``"resize"``, for
            error messages (e.g. ``{"resize": "--resize-disparity"}``); default: the keyword arguments.

    Returns:
        (B, 1, H, W) float32 in [0, 1], 1 = near.
    """
    check_disparity(raw, what)
    names = {"repair": "repair=True", "normalize": "normalize=True",
             "resize": "resize it to the image first, or pass resize=True (bilinear)", **(option_names or {})}
    check_choice(mode, "mode", ("metric", "inverted", "disparity"))
    d = raw.to(torch.float32)
    if size is not None:
        d = match_size(d, size, resize=resize, what=what, advice=names["resize"])
    if repair:
        d, _ = repair_nonfinite(d)
    elif not torch.isfinite(d).all():
        raise ValueError(f"{what} holds NaN/inf values: fill them from their surroundings ({names['repair']}) or fix the map")
    if deband_8bit:
        d = deband(d, levels=255)
    d = depth_to_disparity(d, mode)
    if mode == "metric":
        if repair:
            d, _ = repair_nonfinite(d)  # depth <= 0 became NaN
        elif not torch.isfinite(d).all():
            raise ValueError(f"{what} holds depth <= 0, which has no disparity: fill it from its surroundings ({names['repair']})")
    if normalize:
        return normalize_disparity(d, low_pct=low_pct, high_pct=high_pct, batch_stable=batch_stable, invert=invert)
    if invert:
        d = 1.0 - d
    lo, hi = float(d.min()), float(d.max())
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise ValueError(f"{what} spans [{lo:.4g}, {hi:.4g}] but BokehMe needs disparity in [0, 1]: normalise it "
                         f"({names['normalize']})")
    return d.clamp(0.0, 1.0)


# --- refinement of predicted maps ----------------------------------------------------------------------------

#: smallest colour difference (Euclidean, sRGB in [0, 1]; about 13/255) between the two sides of a depth edge
#: for colour to decide which side a pixel belongs to
_MIN_CONTRAST = 0.05


def refine_disparity(
    disparity: torch.Tensor,
    image: torch.Tensor,
    *,
    radius: int = 4,
    min_step: float = 0.02,
    confidence: float = 3.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Snap the depth edges of a predicted disparity map onto the edges of its image.

    Depth networks give edges that are soft (blurred over a few pixels), dilated toward one side or shifted from
    the object's outline; the bokeh then shows a halo of the wrong sharpness around the subject. Around every
    depth edge (a window of ``2 * radius + 1`` pixels where the map spans at least ``min_step``), each pixel is
    given to the near or the far side by its colour: the mean colour of the window's near pixels and of its far
    pixels (split at the window's mid value) are compared with the pixel's own. Where the two sides differ
    visibly in colour, a pixel whose colour is ``confidence`` times closer to one side's colour than to the
    other's (a pixel that mixes both, as anti-aliased edge pixels do, is left alone), and whose value lies on the
    wrong side of the mid value or more than a quarter of the step from that side's mean, takes that side's mean
    disparity. Everything else keeps its exact value: away from depth edges, where the colours do not decide,
    and on a map whose edges already follow the image (an exact map comes back unchanged, up to pixels whose
    colour contradicts their depth).

    Args:
        disparity: (B, 1, H, W) in [0, 1], 1 = near, finite (:func:`repair_nonfinite` first).
        image: (B or 1, 3, H, W) sRGB in [0, 1], the photo the map belongs to (the guide).
        radius: half window in pixels (>= 1): how far an edge can move; 4 covers the usual 1-3 px errors.
        min_step: smallest disparity difference across a window that counts as a depth edge.
        confidence: how much closer (ratio of colour distances) a pixel must be to one side to be moved (>= 1).
        mask: optional (B or 1, 1, H, W) subject / alpha mask in [0, 1] (e.g. from a segmentation node): where
            given, its outline decides the side instead of colour (inside = near), so the masked subject's
            edges come out exact.

    Returns:
        (B, 1, H, W) float32 refined disparity in [0, 1].
    """
    check_disparity(disparity)
    check_finite(disparity, "disparity")
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B,3,H,W) sRGB in [0,1], got shape {tuple(image.shape)}")
    check_same_spatial(disparity, image, "disparity", "image")
    check_finite(image, "image")
    radius = int(check_range(radius, "radius", 1, 64))
    check_range(min_step, "min_step", 0.0, 1.0)
    check_range(confidence, "confidence", 1.0, 100.0)
    batch = max(disparity.shape[0], image.shape[0])
    disp = disparity.to(torch.float32).expand(batch, -1, -1, -1)
    guide = image.to(disp.device, torch.float32).expand(batch, -1, -1, -1)
    if mask is not None:
        if mask.ndim != 4 or mask.shape[1] != 1:
            raise ValueError(f"mask must be (B,1,H,W) in [0,1], got shape {tuple(mask.shape)}")
        check_same_spatial(disparity, mask, "disparity", "mask")
        check_finite(mask, "mask")
        if float(mask.max()) <= 0.5 or float(mask.min()) >= 0.5:
            raise ValueError("mask is empty or covers the whole image: give a subject mask with an outline "
                             "(white = subject), or leave it unconnected")
        # the mask's outline outweighs colour where it passes; elsewhere colour still decides
        guide = torch.cat([guide, 4.0 * mask.to(disp.device, torch.float32).expand(batch, -1, -1, -1)], dim=1)
    k = 2 * radius + 1
    local_max = F.max_pool2d(disp, k, stride=1, padding=radius)
    local_min = -F.max_pool2d(-disp, k, stride=1, padding=radius)
    mid = 0.5 * (local_max + local_min)
    edge = (local_max - local_min) >= min_step
    if not bool(edge.any()):
        return disp.clone()
    # Which side every pixel of a window is on: split at the mid value of a window twice as wide, so that a
    # pixel up to ``radius`` away from an edge pixel sees the same two levels as that edge pixel's window.
    wide = 4 * radius + 1
    wide_mid = 0.5 * (F.max_pool2d(disp, wide, stride=1, padding=2 * radius)
                      - F.max_pool2d(-disp, wide, stride=1, padding=2 * radius))
    near = (disp > wide_mid).to(torch.float32)

    def window_mean(values: torch.Tensor, weight: torch.Tensor):
        total = F.avg_pool2d(values * weight, k, stride=1, padding=radius, count_include_pad=False)
        count = F.avg_pool2d(weight, k, stride=1, padding=radius, count_include_pad=False)
        return total / count.clamp_min(1e-6), count > 0

    near_colour, has_near = window_mean(guide, near)
    far_colour, has_far = window_mean(guide, 1.0 - near)
    near_disp, _ = window_mean(disp, near)
    far_disp, _ = window_mean(disp, 1.0 - near)
    to_near = (guide - near_colour).square().sum(1, keepdim=True).sqrt()
    to_far = (guide - far_colour).square().sum(1, keepdim=True).sqrt()
    eps = 1e-4
    contrast = (near_colour - far_colour).square().sum(1, keepdim=True).sqrt() >= _MIN_CONTRAST
    says_near = (to_near * confidence + eps < to_far) & has_near & contrast
    says_far = (to_far * confidence + eps < to_near) & has_far & contrast
    quarter = 0.25 * (local_max - local_min)
    move_near = edge & says_near & ((disp <= mid) | ((disp - near_disp).abs() > quarter))
    move_far = edge & says_far & ((disp > mid) | ((disp - far_disp).abs() > quarter))
    refined = torch.where(move_near, near_disp, disp)
    refined = torch.where(move_far, far_disp, refined)
    return refined.clamp(0.0, 1.0)

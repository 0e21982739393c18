"""The full BokehMe pipeline: classical scatter + neural renderer (ARNet, IUNet) + error map + fusion.

Peng et al., "BokehMe: When Neural Rendering Meets Classical Rendering", CVPR 2022 (official code:
https://github.com/JuewenPeng/BokehMe). The neural part follows the official demo exactly
(SPEC-bokehme-official.md, section 4):

1. classical rendering of ``image ** gamma`` with the signed defocus, then ``** (1 / gamma)``; it also gives
   the dilated defocus;
2. adaptive resizing: ``s = max(max|defocus| / 10, 1)``; ARNet runs at ``floor(H / s) x floor(W / s)``;
3. ARNet gives a low-resolution bokeh (clamped to [0, 1e5]) and the error map (upsampled to full size);
4. IUNet doubles the resolution ``int(log2 s)`` times, then runs once more at full resolution; each result
   is blended with the upsampled previous bokeh through a blurred mask of ``|dilated defocus| < 10 px``;
5. fusion ``classical * (1 - E) + neural * E``; outputs clamped to [0, 1].

Defocus inside the networks is measured in units of 10 px (the official ``defocus_scale``); the public API
speaks pixels. Conventions: image (B, 3, H, W) sRGB in [0, 1]; disparity (B, 1, H, W) in [0, 1], 1 = near;
K in px per unit disparity; focus in [0, 1]; signed defocus in px, positive = nearer than focus.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ._checks import check_choice, check_disparity, check_finite, check_focus, check_image, check_range
from ._checks import check_same_spatial
from .defocus import MAX_K, apply_highlight, signed_defocus
from .fusion import fuse
from .models.arnet import ARNet
from .models.blocks import resize_bilinear
from .models.iunet import IUNet

logger = logging.getLogger(__name__)

__all__ = [
    "BokehMeResult",
    "BokehMeIntermediates",
    "NeuralResult",
    "render_bokehme",
    "render_neural",
    "arnet_stage",
    "iunet_stage",
    "adaptive_scale",
    "lowres_size",
    "num_iunet_passes",
    "blend_mask",
    "gaussian_blur",
    "load_bundled_models",
    "DEFOCUS_SCALE",
    "DEFAULT_TILE_SIZE",
]

#: pixels per unit of the networks' defocus input (the official ``defocus_scale``, R_hat in the paper)
DEFOCUS_SCALE = 10.0
#: gamma range the networks were trained for; ``gamma_norm = (gamma - 1) / 4``
GAMMA_MIN, GAMMA_MAX = 1.0, 5.0
#: default tile edge (full-resolution px) of the network passes; bounds their memory at any image size
DEFAULT_TILE_SIZE = 1024
#: the blend-mask blur radius is this fraction of (h + w) (official)
MASK_BLUR_FRACTION = 0.005
#: clamp of the network outputs (official)
_CLAMP_MAX = 1e5

ERROR_MAP_CHOICES = ("predicted", "analytic")
CLASSICAL_MODES = ("exact", "fast")
#: progress units given to the classical renderer per image (each network pass is one unit)
_CLASSICAL_UNITS = 4


# --- small pieces -----------------------------------------------------------------------------------------

def gaussian_blur(x: torch.Tensor, radius: float) -> torch.Tensor:
    """The official blend-mask blur.

    ``r = round(radius)`` (Python's round: halves go to the even integer), ``sigma = 0.3 * (r - 1) + 0.8``,
    kernel ``exp(-(i^2 + j^2) / (2 sigma^2))`` over ``[-r, r]^2`` normalised to sum 1, replicate padding.
    The kernel is separable, so it is applied as two 1-D passes (same result up to float rounding).

    Args:
        x: (B, C, H, W).
        radius: >= 0; ``round(radius) == 0`` returns ``x`` unchanged.

    Returns:
        (B, C, H, W).
    """
    r = int(round(float(radius)))
    if r <= 0:
        return x
    sigma = 0.3 * (r - 1) + 0.8
    offsets = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-(offsets**2) / 2 / sigma**2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    channels = x.shape[1]
    y = F.pad(x, (r, r, r, r), mode="replicate")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(y, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def blend_mask(dilated_defocus_units: torch.Tensor) -> torch.Tensor:
    """IUNet blend mask: ``gaussian_blur(|dilated defocus| < 1, 0.005 * (h + w))``.

    Args:
        dilated_defocus_units: (B, 1, h, w) dilated signed defocus in units of 10 px at this resolution.

    Returns:
        (B, 1, h, w) in [0, 1]; 1 where the IUNet refinement is used, 0 where the upsampled coarse bokeh is.
    """
    near_focus = ((dilated_defocus_units < 1) & (dilated_defocus_units > -1)).to(dilated_defocus_units.dtype)
    h, w = dilated_defocus_units.shape[-2:]
    return gaussian_blur(near_focus, MASK_BLUR_FRACTION * (h + w))


def adaptive_scale(defocus_px: torch.Tensor) -> float:
    """``s = max(max|defocus_px| / 10, 1)``: ARNet runs at 1/s of the full resolution so that its defocus
    input stays within [-1, 1] (10 px). One scale for the whole tensor given."""
    return max(float((defocus_px / DEFOCUS_SCALE).abs().max().item()), 1.0)


def lowres_size(height: int, width: int, scale: float) -> tuple:
    """ARNet resolution for a (height, width) image and adaptive scale ``s``: (floor(H/s), floor(W/s)),
    computed the way ``F.interpolate(scale_factor=1/s)`` does."""
    return (int(math.floor(height * (1.0 / scale))), int(math.floor(width * (1.0 / scale))))


def num_iunet_passes(scale: float) -> int:
    """Number of IUNet passes for adaptive scale ``s``: ``int(log2 s)`` doublings plus the full-size pass."""
    return int(math.log2(scale)) + 1


def _gamma_norm(gamma: float) -> float:
    return (gamma - GAMMA_MIN) / (GAMMA_MAX - GAMMA_MIN)


def _check_model(model, cls, name: str, device: torch.device) -> None:
    if not isinstance(model, cls):
        raise TypeError(f"{name} must be a bokehme_core.{cls.__name__}, got {type(model).__name__}")
    param = next(model.parameters(), None)
    if param is not None and param.device != device:
        raise ValueError(
            f"{name} is on {param.device} but the image is on {device}: move it first ({name}.to(image.device))"
        )


# --- stages -----------------------------------------------------------------------------------------------

def arnet_stage(
    arnet: ARNet,
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    gamma: float,
    tile_size: int | None = None,
) -> tuple:
    """Adaptive resizing + ARNet (SPEC 4, steps 2-3).

    Args:
        arnet: the network, on the device of ``image``.
        image: (B, 3, H, W) in [0, 1] (after the highlight boost, if any).
        defocus_px: (B, 1, H, W) signed defocus in px. One adaptive scale is used for the whole batch (from
            its largest |defocus|); :func:`render_bokehme` calls this per image.
        gamma: in [1, 5].
        tile_size: tile edge in px for the network body (exact); None = :data:`DEFAULT_TILE_SIZE`.

    Returns:
        ``(bokeh_lowres, error_map, scale)``: bokeh (B, 3, floor(H/s), floor(W/s)) clamped to [0, 1e5],
        error map (B, 1, H, W) in (0, 1) (bilinear, align_corners=True), the adaptive scale ``s``.
    """
    scale = adaptive_scale(defocus_px)
    height, width = image.shape[-2:]
    h, w = lowres_size(height, width, scale)
    if h < 2 or w < 2:
        raise ValueError(
            f"image {height}x{width} px is too small for a blur radius of {scale * DEFOCUS_SCALE:.1f} px: ARNet "
            f"would run at {h}x{w} px (needs >= 2x2); use a smaller K or a larger image"
        )
    defocus_units = defocus_px / DEFOCUS_SCALE
    if scale == 1.0:
        image_lr, defocus_lr = image, defocus_units
    else:
        image_lr = F.interpolate(image, scale_factor=1.0 / scale, mode="bilinear", align_corners=True)
        defocus_lr = F.interpolate(defocus_units, scale_factor=1.0 / scale, mode="bilinear", align_corners=True)
        defocus_lr = defocus_lr * (1.0 / scale)
    bokeh_lowres, error_lowres = arnet(image_lr, defocus_lr, _gamma_norm(gamma), tile_size or DEFAULT_TILE_SIZE)
    error_map = resize_bilinear(error_lowres, (height, width))
    return bokeh_lowres.clamp(0, _CLAMP_MAX), error_map, scale


def iunet_stage(
    iunet: IUNet,
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    dilated_defocus_px: torch.Tensor,
    bokeh_lowres: torch.Tensor,
    scale: float,
    gamma: float,
    tile_size: int | None = None,
    progress: Callable[[], None] | None = None,
    record: dict | None = None,
) -> torch.Tensor:
    """Iterative upsampling with IUNet (SPEC 4, steps 4-5).

    Args:
        iunet: the network, on the device of ``image``.
        image: (B, 3, H, W) in [0, 1] (after the highlight boost, if any).
        defocus_px: (B, 1, H, W) signed defocus in px.
        dilated_defocus_px: (B, 1, H, W) the classical renderer's dilated signed defocus in px.
        bokeh_lowres: (B, 3, h, w) ARNet bokeh from :func:`arnet_stage`.
        scale: the adaptive scale from :func:`arnet_stage`.
        gamma: in [1, 5].
        tile_size: tile edge in px for the network body (exact); None = :data:`DEFAULT_TILE_SIZE`.
        progress: called once after each IUNet pass.
        record: if a dict, receives lists ``"bokeh"`` and ``"masks"`` with the result and blend mask of every
            pass (the last ones at full resolution).

    Returns:
        (B, 3, H, W) neural bokeh, each pass clamped to [0, 1e5] before blending (not clamped to 1).
    """
    height, width = image.shape[-2:]
    gamma_norm = _gamma_norm(gamma)
    tile_size = tile_size or DEFAULT_TILE_SIZE
    defocus_units = defocus_px / DEFOCUS_SCALE
    dilated_units = dilated_defocus_px / DEFOCUS_SCALE
    bokeh = bokeh_lowres
    n_doublings = num_iunet_passes(scale) - 1
    for i in range(n_doublings + 1):
        if i < n_doublings:
            ratio = 2 ** (i + 1) / scale
            size = (int(ratio * height), int(ratio * width))
            image_i = resize_bilinear(image, size)
            defocus_i = ratio * resize_bilinear(defocus_units, size)
            dilated_i = ratio * resize_bilinear(dilated_units, size)
        else:  # the final pass, at full resolution
            size = (height, width)
            image_i, defocus_i, dilated_i = image, defocus_units, dilated_units
        refined = iunet(image_i, defocus_i.clamp(-1, 1), bokeh, gamma_norm, tile_size).clamp(0, _CLAMP_MAX)
        mask = blend_mask(dilated_i)
        bokeh = mask * refined + (1 - mask) * resize_bilinear(bokeh, size)
        if record is not None:
            record.setdefault("bokeh", []).append(bokeh)
            record.setdefault("masks", []).append(mask)
        if progress is not None:
            progress()
    return bokeh


# --- results ----------------------------------------------------------------------------------------------

@dataclass
class BokehMeIntermediates:
    """Per-image intermediate results of :func:`render_bokehme` (lists indexed by image; sizes can differ
    between images because each has its own adaptive scale).

    Attributes:
        adapt_scale: adaptive scale ``s`` per image (>= 1).
        arnet_bokeh: ARNet bokeh per image, (1, 3, floor(H/s), floor(W/s)), clamped to [0, 1e5].
        iteration_bokeh: per image, the bokeh after each IUNet pass ((1, 3, h_i, w_i); the last is full size).
        iteration_masks: per image, the blend mask of each IUNet pass ((1, 1, h_i, w_i) in [0, 1]).
        dilated_defocus: (B, 1, H, W) dilated signed defocus in px from the classical renderer.
        defocus: (B, 1, H, W) signed defocus in px.
    """

    adapt_scale: list = field(default_factory=list)
    arnet_bokeh: list = field(default_factory=list)
    iteration_bokeh: list = field(default_factory=list)
    iteration_masks: list = field(default_factory=list)
    dilated_defocus: torch.Tensor | None = None
    defocus: torch.Tensor | None = None


@dataclass
class NeuralResult:
    """Output of :func:`render_neural`.

    Attributes:
        bokeh: (B, 3, H, W) neural bokeh, not clamped to 1 (values in [0, 1e5]).
        error_map: (B, 1, H, W) predicted error map in (0, 1), full resolution.
        intermediates: filled when asked for.
    """

    bokeh: torch.Tensor
    error_map: torch.Tensor
    intermediates: BokehMeIntermediates | None = None


@dataclass
class BokehMeResult:
    """Output of :func:`render_bokehme`.

    Attributes:
        bokeh: (B, 3, H, W) fused result in [0, 1].
        classical: (B, 3, H, W) classical rendering in [0, 1].
        neural: (B, 3, H, W) neural rendering in [0, 1].
        error_map: (B, 1, H, W) the error map used for the fusion, in [0, 1] (1 = neural).
        intermediates: :class:`BokehMeIntermediates` when ``return_intermediates=True``.
    """

    bokeh: torch.Tensor
    classical: torch.Tensor
    neural: torch.Tensor
    error_map: torch.Tensor
    intermediates: BokehMeIntermediates | None = None


# --- neural renderer --------------------------------------------------------------------------------------

def render_neural(
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    dilated_defocus_px: torch.Tensor,
    *,
    gamma: float,
    arnet: ARNet,
    iunet: IUNet,
    tile_size: int | None = None,
    return_intermediates: bool = False,
    progress: Callable[[], None] | None = None,
) -> NeuralResult:
    """ARNet + iterative IUNet, image by image (each with its own adaptive scale).

    Args:
        image: (B, 3, H, W) in [0, 1] (after the highlight boost, if any).
        defocus_px: (B, 1, H, W) signed defocus in px.
        dilated_defocus_px: (B, 1, H, W) dilated signed defocus in px (classical renderer).
        gamma: in [1, 5].
        arnet, iunet: networks on the device of ``image``.
        tile_size: tile edge in px for the network passes (exact); None = :data:`DEFAULT_TILE_SIZE`.
        return_intermediates: fill :attr:`NeuralResult.intermediates`.
        progress: called once after ARNet and after each IUNet pass.

    Returns:
        :class:`NeuralResult`.
    """
    check_image(image)
    check_disparity(defocus_px, "defocus_px")
    check_disparity(dilated_defocus_px, "dilated_defocus_px")
    check_same_spatial(image, defocus_px, "image", "defocus_px", batch="equal")
    check_same_spatial(image, dilated_defocus_px, "image", "dilated_defocus_px", batch="equal")
    gamma = check_range(gamma, "gamma", GAMMA_MIN, GAMMA_MAX)
    _check_model(arnet, ARNet, "arnet", image.device)
    _check_model(iunet, IUNet, "iunet", image.device)
    inter = BokehMeIntermediates(dilated_defocus=dilated_defocus_px, defocus=defocus_px) if return_intermediates else None
    bokeh_all, error_all = [], []
    with torch.inference_mode():
        for b in range(image.shape[0]):
            img, dfc, dil = image[b : b + 1], defocus_px[b : b + 1], dilated_defocus_px[b : b + 1]
            bokeh_lowres, error_map, scale = arnet_stage(arnet, img, dfc, gamma, tile_size)
            if progress is not None:
                progress()
            record = {} if inter is not None else None
            bokeh = iunet_stage(iunet, img, dfc, dil, bokeh_lowres, scale, gamma, tile_size, progress, record)
            bokeh_all.append(bokeh)
            error_all.append(error_map)
            if inter is not None:
                inter.adapt_scale.append(scale)
                inter.arnet_bokeh.append(bokeh_lowres)
                inter.iteration_bokeh.append(record["bokeh"])
                inter.iteration_masks.append(record["masks"])
    return NeuralResult(torch.cat(bokeh_all), torch.cat(error_all), inter)


# --- bundled weights --------------------------------------------------------------------------------------

_BUNDLED_CACHE: dict = {}


def _verify_manifest(folder: pathlib.Path) -> None:
    """Check the files against ``manifest.json`` (``{"arnet": {"file", "sha256"}, "iunet": {...}}``) when it
    exists: a damaged install raises instead of rendering with broken weights."""
    import hashlib

    manifest = folder / "manifest.json"
    if not manifest.is_file():
        logger.warning("no manifest.json next to the bundled weights in %s: sha256 not checked", folder)
        return
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {manifest}: {exc}; reinstall the node pack") from exc
    for name in ("arnet", "iunet"):
        entry = entries.get(name) if isinstance(entries, dict) else None
        if not isinstance(entry, dict) or "sha256" not in entry:
            continue
        path = folder / entry.get("file", f"{name}.safetensors")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            raise ValueError(
                f"bundled weights {path} are damaged: sha256 {digest}, manifest.json says {entry['sha256']}; "
                f"reinstall the node pack (or download the official weights: python -m bokehme_core download-weights)"
            )
    logger.info("bundled BokehMe weights: %s", entries.get("name", folder) if isinstance(entries, dict) else folder)


def load_bundled_models(device="cpu") -> tuple:
    """Our own trained ARNet and IUNet from ``bokehme_core.paths.bundled_weights_dir()`` (``arnet.safetensors``,
    ``iunet.safetensors``, ``manifest.json``; sha256 checked against the manifest). Cached per file
    modification time and device.

    Raises:
        FileNotFoundError: the files are missing; the message says how to get weights.
        ValueError: a file does not match the sha256 in ``manifest.json``.
    """
    from .models.checkpoints import load_arnet, load_iunet
    from .paths import bundled_weights_dir

    folder = pathlib.Path(bundled_weights_dir())
    paths = [folder / "arnet.safetensors", folder / "iunet.safetensors"]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"bundled BokehMe weights missing in {folder}: {', '.join(missing)}. Get the official weights with "
            f"`python -m bokehme_core download-weights`, then pass arnet=load_arnet(path) and "
            f"iunet=load_iunet(path) (or reinstall the node pack, which ships weights/)"
        )
    stamped = paths + [folder / "manifest.json"]
    key = (str(folder), tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in stamped), str(torch.device(device)))
    if key not in _BUNDLED_CACHE:
        _verify_manifest(folder)
        _BUNDLED_CACHE.clear()
        _BUNDLED_CACHE[key] = (load_arnet(paths[0], device), load_iunet(paths[1], device))
    return _BUNDLED_CACHE[key]


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
    classical_mode: str = "exact",
    error_map: str = "predicted",
    return_intermediates: bool = False,
    tile_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BokehMeResult:
    """Render bokeh with the full BokehMe pipeline (classical + neural + fusion).

    Args:
        image: (B, 3, H, W) sRGB in [0, 1], H, W >= 2.
        disparity: (B or 1, 1, H, W) in [0, 1], 1 = near.
        K: blur radius in px per unit disparity, in [0, 2000]; the blur radius is ``K * |disparity - focus|``.
        focus: in-focus disparity in [0, 1]: a number or one per image ((B,) tensor or sequence).
        gamma: highlight-emphasis exponent in [1, 5] (not the sRGB curve); official default 4.
        arnet, iunet: networks (on the device of ``image``); None loads the bundled weights
            (:func:`load_bundled_models`).
        highlight: apply the official highlight boost (:func:`bokehme_core.apply_highlight`) first.
        aperture: a :class:`bokehme_core.Aperture` for the classical renderer (None = circle).
        classical_mode: "exact" (official kernel) or "fast" (see :func:`bokehme_core.render_classical`).
        error_map: "predicted" (ARNet's error map, official) or "analytic"
            (:func:`bokehme_core.analytic_error_map`, no network).
        return_intermediates: fill :attr:`BokehMeResult.intermediates`.
        tile_size: tile edge in px of the network passes (exact: tiles overlap by the receptive field);
            None = :data:`DEFAULT_TILE_SIZE`. Smaller = less memory.
        progress: ``progress(done, total)``, may raise to cancel.

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
    gamma = check_range(gamma, "gamma", GAMMA_MIN, GAMMA_MAX)
    check_choice(classical_mode, "classical_mode", CLASSICAL_MODES)
    check_choice(error_map, "error_map", ERROR_MAP_CHOICES)
    if tile_size is not None and (not isinstance(tile_size, int) or tile_size < 16):
        raise ValueError(f"tile_size must be None or an int >= 16 px, got {tile_size!r}")
    batch = image.shape[0]
    focus_t = check_focus(focus, batch)
    device = image.device
    if arnet is None or iunet is None:
        bundled_arnet, bundled_iunet = load_bundled_models(device)
        arnet = arnet if arnet is not None else bundled_arnet
        iunet = iunet if iunet is not None else bundled_iunet
    _check_model(arnet, ARNet, "arnet", device)
    _check_model(iunet, IUNet, "iunet", device)

    image = image.to(torch.float32)
    disparity = disparity.to(torch.float32).expand(batch, -1, -1, -1)
    defocus_px = signed_defocus(disparity, K, focus_t)
    if highlight:
        image = apply_highlight(image, defocus_px, K)

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
            progress=classical_progress,
        )
        bokeh_classical = classical.bokeh.to(torch.float32)
        dilated_px = classical.dilated_defocus.to(torch.float32)
        if progress is not None:
            progress(batch * _CLASSICAL_UNITS, total)
        neural = render_neural(
            image, defocus_px, dilated_px, gamma=gamma, arnet=arnet, iunet=iunet, tile_size=tile_size,
            return_intermediates=return_intermediates, progress=step,
        )
        if error_map == "analytic":
            from .error_map import analytic_error_map

            error = analytic_error_map(disparity, K, focus_t).to(torch.float32).expand(batch, -1, -1, -1)
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

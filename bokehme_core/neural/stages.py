"""The two neural stages of BokehMe: ARNet at an adaptive low resolution, then IUNet's iterative upsampling.

Peng et al., "BokehMe: When Neural Rendering Meets Classical Rendering", CVPR 2022 (official code:
https://github.com/JuewenPeng/BokehMe); the staging follows the official demo exactly
(docs/official-behaviour.md, section 8):

1. adaptive resizing: ``s = max(max|defocus| / 10, 1)``; ARNet runs at ``floor(H / s) x floor(W / s)``;
2. ARNet gives a low-resolution bokeh (clamped to [0, 1e5]) and the error map (upsampled to full size);
3. IUNet doubles the resolution ``int(log2 s)`` times, then runs once more at full resolution; each result
   is blended with the upsampled previous bokeh through a blurred mask of ``|dilated defocus| < 10 px``.

Everything that depends on this staging (the pipeline, the ARNet / IUNet nodes, the training scripts) uses
the functions and constants of this module; nothing re-derives them.

Defocus inside the networks is measured in units of 10 px (:data:`DEFOCUS_SCALE`, the official
``defocus_scale``); the public API speaks pixels. Conventions: image (B, 3, H, W) sRGB in [0, 1]; signed
defocus (B, 1, H, W) in px, positive = nearer than focus; gamma in [1, 5].
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .._checks import check_disparity, check_image, check_range, check_same_spatial
from .arnet import ARNET_SPARSE_TILE, ARNet
from .blocks import resize_bilinear
from .iunet import SPARSE_TILE_SIZE, IUNet

logger = logging.getLogger(__name__)

__all__ = [
    "BokehMeIntermediates",
    "NeuralResult",
    "render_neural",
    "arnet_stage",
    "arnet_needed",
    "pass_sizes",
    "iunet_stage",
    "network_defocus",
    "adaptive_scale",
    "lowres_size",
    "num_iunet_passes",
    "gamma_norm",
    "blend_mask",
    "gaussian_blur",
    "check_model",
    "DEFOCUS_SCALE",
    "DEFAULT_TILE_SIZE",
    "MIN_TILE_SIZE",
    "SPARSE_ERROR_THRESHOLD",
    "SPARSE_FILL",
    "NetworkOutOfMemoryError",
    "is_out_of_memory",
    "run_with_tile_retry",
    "GAMMA_MIN",
    "GAMMA_MAX",
]

#: pixels per unit of the networks' defocus input (the official ``defocus_scale``, R_hat in the paper)
DEFOCUS_SCALE = 10.0
#: gamma range the networks were trained for; ``gamma_norm = (gamma - 1) / 4``
GAMMA_MIN, GAMMA_MAX = 1.0, 5.0
#: default tile edge (full-resolution px) of the network passes; bounds their memory at any image size
DEFAULT_TILE_SIZE = 1024
#: sparse evaluation: neural output pixels whose fusion weight (error map) is at or below this are not refined
#: by IUNet (the fused result changes by at most this times the neural/coarse difference: < 1e-4)
SPARSE_ERROR_THRESHOLD = 5e-5
#: sparse evaluation runs the whole pass densely when more than this fraction of its pixels is used (the tile
#: halos would cost more than the skipped tiles save)
DENSE_ABOVE = 0.7
#: sparse ARNet: what its outputs hold where nothing reads them (outside :func:`arnet_needed`)
SPARSE_FILL = "bokeh: the input image at ARNet's resolution; error map: 0"
#: the blend-mask blur radius is this fraction of (h + w) (official)
MASK_BLUR_FRACTION = 0.005
#: clamp of the network outputs (official)
_CLAMP_MAX = 1e5


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


def network_defocus(defocus_px: torch.Tensor) -> torch.Tensor:
    """Signed defocus in px -> the networks' defocus input, in units of :data:`DEFOCUS_SCALE` (10 px)."""
    return defocus_px / DEFOCUS_SCALE


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


def gamma_norm(gamma: float) -> float:
    """The networks' gamma input: ``(gamma - 1) / 4`` for gamma in [1, 5]."""
    return (gamma - GAMMA_MIN) / (GAMMA_MAX - GAMMA_MIN)


def check_model(model, cls, name: str, device: torch.device) -> None:
    """Raise TypeError unless ``model`` is a ``cls``, ValueError unless its weights are on ``device``."""
    if not isinstance(model, cls):
        raise TypeError(f"{name} must be a bokehme_core.{cls.__name__}, got {type(model).__name__}")
    param = next(model.parameters(), None)
    if param is not None and param.device != device:
        raise ValueError(
            f"{name} is on {param.device} but the image is on {device}: move it first ({name}.to(image.device))"
        )


# --- stages -----------------------------------------------------------------------------------------------

class NetworkOutOfMemoryError(RuntimeError):
    """A network pass ran out of memory even at the smallest tile size (the message names the sizes)."""


#: smallest tile edge (full-resolution px) the out-of-memory retries go down to
MIN_TILE_SIZE = 64


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocation failure of torch on any device (CUDA, MPS, CPU)."""
    if isinstance(exc, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def run_with_tile_retry(run: Callable[[int], torch.Tensor], tile_size: int, what: str, image_size: tuple):
    """``run(tile_size)``; on an out-of-memory error retry with half the tile size (freeing cached device
    memory first), down to :data:`MIN_TILE_SIZE`, then raise :class:`NetworkOutOfMemoryError` naming the image
    size and the tile size. The same policy as ComfyUI core's tiled fallbacks."""
    tile = int(tile_size)
    while True:
        try:
            return run(tile)
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if tile // 2 < MIN_TILE_SIZE:
                raise NetworkOutOfMemoryError(
                    f"{what} ran out of memory on a {image_size[1]}x{image_size[0]} px input even with {tile} px "
                    f"tiles (the smallest tried); free memory (close other jobs, or run on the CPU) or render a "
                    f"smaller image"
                ) from exc
            logger.warning("%s ran out of memory with %d px tiles on %dx%d px; retrying with %d px tiles",
                           what, tile, image_size[1], image_size[0], tile // 2)
            tile //= 2


def arnet_stage(
    arnet: ARNet,
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    gamma,
    tile_size: int | None = None,
    scale: float | None = None,
    needed: torch.Tensor | None = None,
) -> tuple:
    """Adaptive resizing + ARNet (docs/official-behaviour.md, section 8.2).

    Args:
        arnet: the network, on the device of ``image``.
        image: (B, 3, H, W) in [0, 1] (after the highlight boost, if any).
        defocus_px: (B, 1, H, W) signed defocus in px. One adaptive scale is used for the whole batch (from
            its largest |defocus|); :func:`render_bokehme` calls this per image.
        gamma: in [1, 5]: a number, or one per image ((B,) tensor; training batches).
        tile_size: tile edge in px for the network body (exact); None = :data:`DEFAULT_TILE_SIZE`.
        scale: the adaptive scale; None (inference) = :func:`adaptive_scale` of ``defocus_px``. Training passes
            a larger one to show the networks coarser inputs; below the adaptive scale ARNet would see defocus
            beyond its [-1, 1] range (ValueError).
        needed: None (dense, the official computation) or (B or 1, 1, floor(H/s), floor(W/s)) bool: the pixels of
            ARNet's working resolution whose bokeh or error is used (:func:`arnet_needed`). ARNet then runs only
            on the cells of that grid holding one (:meth:`ARNet.forward_sparse`, exact halo); elsewhere the bokeh
            is the resized input image and the error 0 (see :data:`SPARSE_FILL`), which no used pixel reads.

    Returns:
        ``(bokeh_lowres, error_map, scale)``: bokeh (B, 3, floor(H/s), floor(W/s)) clamped to [0, 1e5],
        error map (B, 1, H, W) in (0, 1) (bilinear, align_corners=True; with ``needed``: in [0, 1), exact where
        it reads needed pixels only), the adaptive scale ``s``.
    """
    least_scale = adaptive_scale(defocus_px)
    if scale is None:
        scale = least_scale
    elif not scale >= least_scale * (1 - 1e-6):
        raise ValueError(f"scale must be >= the adaptive scale {least_scale:.4g} of this defocus, got {scale!r}")
    height, width = image.shape[-2:]
    h, w = lowres_size(height, width, scale)
    if h < 2 or w < 2:
        raise ValueError(
            f"image {height}x{width} px is too small for a blur radius of {scale * DEFOCUS_SCALE:.1f} px: ARNet "
            f"would run at {h}x{w} px (needs >= 2x2); use a smaller K or a larger image"
        )
    defocus_units = network_defocus(defocus_px)
    if scale == 1.0:
        image_lr, defocus_lr = image, defocus_units
    else:
        image_lr = F.interpolate(image, scale_factor=1.0 / scale, mode="bilinear", align_corners=True)
        defocus_lr = F.interpolate(defocus_units, scale_factor=1.0 / scale, mode="bilinear", align_corners=True)
        defocus_lr = defocus_lr * (1.0 / scale)
    if needed is None:
        bokeh_lowres, error_lowres = run_with_tile_retry(
            lambda tile: arnet(image_lr, defocus_lr, gamma_norm(gamma), tile), tile_size or DEFAULT_TILE_SIZE,
            "ARNet", tuple(image_lr.shape[-2:]),
        )
    else:
        if tuple(needed.shape[-2:]) != (h, w):
            raise ValueError(f"needed must be (B, 1, {h}, {w}) at ARNet's working resolution, got "
                             f"{tuple(needed.shape)}")
        bokeh_lowres, error_lowres, exact = run_with_tile_retry(
            lambda tile: arnet.forward_sparse(image_lr, defocus_lr, gamma_norm(gamma), needed, tile),
            min(tile_size or DEFAULT_TILE_SIZE, ARNET_SPARSE_TILE), "ARNet", tuple(image_lr.shape[-2:]),
        )
        # outside the computed cells (read by no used pixel): the input image and error 0 (SPARSE_FILL)
        bokeh_lowres = torch.where(exact, bokeh_lowres, image_lr)
        error_lowres = torch.where(exact, error_lowres, torch.zeros((), dtype=error_lowres.dtype))
    error_map = resize_bilinear(error_lowres, (height, width))
    return bokeh_lowres.clamp(0, _CLAMP_MAX), error_map, scale


def iunet_stage(
    iunet: IUNet,
    image: torch.Tensor,
    defocus_px: torch.Tensor,
    dilated_defocus_px: torch.Tensor | None,
    bokeh_lowres: torch.Tensor,
    scale: float | None,
    gamma: float,
    tile_size: int | None = None,
    progress: Callable[[], None] | None = None,
    record: dict | None = None,
    needed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Iterative upsampling with IUNet (docs/official-behaviour.md, section 8.3).

    Args:
        iunet: the network, on the device of ``image``.
        image: (B, 3, H, W) in [0, 1] (after the highlight boost, if any).
        defocus_px: (B, 1, H, W) signed defocus in px.
        dilated_defocus_px: (B, 1, H, W) the classical renderer's dilated signed defocus in px (where the
            blend masks come from); None computes it here with the same official dilation
            (:func:`bokehme_core.scatter.dilate_defocus`).
        bokeh_lowres: (B, 3, h, w) ARNet bokeh from :func:`arnet_stage`; its size must be
            :func:`lowres_size` of the image for this defocus (ValueError otherwise).
        scale: the adaptive scale from :func:`arnet_stage`; None = :func:`adaptive_scale` of ``defocus_px``.
        gamma: in [1, 5].
        tile_size: tile edge in px for the network body (exact); None = :data:`DEFAULT_TILE_SIZE`.
        progress: called once after each IUNet pass.
        record: if a dict, receives lists ``"bokeh"`` and ``"masks"`` with the result and blend mask of every
            pass (the last ones at full resolution).
        needed: None (dense, the official computation) or (B, 1, H, W) bool: the output pixels that are used
            (the pipeline passes ``error map > SPARSE_ERROR_THRESHOLD``). IUNet then runs only on the tiles whose
            refinement reaches them (through the blend masks and its receptive field, pass by pass); the result
            equals the dense one on ``needed`` (up to float rounding) and is the upsampled coarser bokeh
            elsewhere.

    Returns:
        (B, 3, H, W) neural bokeh, each pass clamped to [0, 1e5] before blending (not clamped to 1).
    """
    if scale is None:
        scale = adaptive_scale(defocus_px)
    expected = lowres_size(image.shape[-2], image.shape[-1], scale)
    if tuple(bokeh_lowres.shape[-2:]) != expected:
        raise ValueError(
            f"bokeh_lowres is {bokeh_lowres.shape[-1]}x{bokeh_lowres.shape[-2]} px (WxH) but this image and defocus "
            f"need {expected[1]}x{expected[0]} px (adaptive scale {scale:.4g}): it must come from arnet_stage run "
            f"with the same image and defocus"
        )
    if dilated_defocus_px is None:
        from ..scatter.dilate import dilate_defocus

        dilated_defocus_px = dilate_defocus(defocus_px)
    height, width = image.shape[-2:]
    gamma_input = gamma_norm(gamma)
    tile_size = tile_size or DEFAULT_TILE_SIZE
    defocus_units = network_defocus(defocus_px)
    dilated_units = network_defocus(dilated_defocus_px)
    passes = []  # (size, image, defocus, blend mask) of every pass, coarse to fine
    sizes = pass_sizes(height, width, scale)
    for i, size in enumerate(sizes):
        if i < len(sizes) - 1:
            ratio = 2 ** (i + 1) / scale
            image_i = resize_bilinear(image, size)
            defocus_i = ratio * resize_bilinear(defocus_units, size)
            dilated_i = ratio * resize_bilinear(dilated_units, size)
        else:  # the final pass, at full resolution
            image_i, defocus_i, dilated_i = image, defocus_units, dilated_units
        passes.append((size, image_i, defocus_i.clamp(-1, 1), blend_mask(dilated_i)))
    refine_where = None if needed is None else _refinement_regions(needed, passes, iunet.config.num_convs)
    bokeh = bokeh_lowres
    for i, (size, image_i, defocus_i, mask) in enumerate(passes):
        upsampled = resize_bilinear(bokeh, size)
        if refine_where is None or float(refine_where[i].float().mean()) > DENSE_ABOVE:
            # dense: the official computation, or nearly everything is used (then dense is cheaper)
            refined = run_with_tile_retry(lambda tile: iunet(image_i, defocus_i, bokeh, gamma_input, tile),
                                          tile_size, "IUNet", size).clamp(0, _CLAMP_MAX)
        elif bool(refine_where[i].any()):
            refined, exact = run_with_tile_retry(
                lambda tile: iunet.forward_sparse(image_i, defocus_i, bokeh, gamma_input, refine_where[i], tile),
                min(tile_size, SPARSE_TILE_SIZE), "IUNet", size,
            )
            refined = torch.where(exact, refined.clamp(0, _CLAMP_MAX), upsampled)
        else:  # nothing of this pass's refinement reaches the output
            refined = upsampled
        bokeh = mask * refined + (1 - mask) * upsampled
        if record is not None:
            record.setdefault("bokeh", []).append(bokeh)
            record.setdefault("masks", []).append(mask)
        if progress is not None:
            progress()
    return bokeh


def pass_sizes(height: int, width: int, scale: float) -> list:
    """(h_i, w_i) of every IUNet pass for an (height, width) image and adaptive scale ``s``, coarse to fine:
    ``int(2^(i+1) / s * H)`` for the ``int(log2 s)`` doublings, then (height, width)."""
    sizes = []
    for i in range(num_iunet_passes(scale) - 1):
        ratio = 2 ** (i + 1) / scale
        sizes.append((int(ratio * height), int(ratio * width)))
    return sizes + [(height, width)]


def arnet_needed(used: torch.Tensor, scale: float, iunet_convs: int) -> torch.Tensor:
    """The pixels of ARNet's working resolution that full-resolution ``used`` pixels depend on.

    A used pixel reads ARNet's error map through its bilinear upsampling (1 px) and ARNet's bokeh through every
    IUNet pass: each pass reads the previous bokeh through the bilinear upsampling (1 px) and through the
    network (the coarse input is resized to half of the pass's size, then read within one pixel per
    convolution: ``2 * (iunet_convs + 2)`` px of the previous bokeh, as in :func:`_refinement_regions`). The
    blend masks are not consulted (a superset: correct whatever the masks and whichever IUNet pixels the
    sparse IUNet evaluation refines).

    Args:
        used: (B, 1, H, W) bool, the pixels whose neural bokeh or error map is used (fusion weight > 0).
        scale: the adaptive scale ``s`` (:func:`adaptive_scale`).
        iunet_convs: IUNet's number of 3x3 convolutions (``iunet.config.num_convs``).

    Returns:
        (B, 1, floor(H/s), floor(W/s)) bool.
    """
    height, width = used.shape[-2:]
    lowres = lowres_size(height, width, scale)
    sizes = pass_sizes(height, width, scale)
    region = used
    for previous in list(reversed(sizes[:-1])) + [lowres]:
        region = _grow(region, previous, 2 * (iunet_convs + 2))
    return region | _grow(used, lowres, 1)


def _grow(mask: torch.Tensor, size: tuple, margin: int) -> torch.Tensor:
    """A (B, 1, h, w) bool mask mapped (conservatively: max over each block) to ``size`` and grown by
    ``margin`` px (a square max filter)."""
    grown = F.adaptive_max_pool2d(mask.to(torch.float32), size) > 0 if tuple(mask.shape[-2:]) != tuple(size) \
        else mask
    if margin > 0:
        grown = _dilate_axis(_dilate_axis(grown, margin, -1), margin, -2)
    return grown


def _dilate_axis(mask: torch.Tensor, margin: int, dim: int) -> torch.Tensor:
    """1-D max filter of width ``2 * margin + 1`` of a bool mask along ``dim`` (windows clipped at the border),
    from a running count: O(1) per pixel whatever the margin (a max_pool2d is O(margin))."""
    length = mask.shape[dim]
    counts = F.pad(mask.to(torch.float32).cumsum(dim).movedim(dim, -1), (1, 0)).movedim(-1, dim)  # exact: < 2^24
    index = torch.arange(length, device=mask.device)
    upper = (index + margin + 1).clamp(max=length)
    lower = (index - margin).clamp(min=0)
    return (counts.index_select(dim % counts.ndim, upper) - counts.index_select(dim % counts.ndim, lower)) > 0


def _refinement_regions(needed: torch.Tensor, passes: list, num_convs: int) -> list:
    """Per IUNet pass, the (B, 1, h_i, w_i) bool pixels whose refinement reaches ``needed`` final pixels.

    Pass i gives ``B_i = M_i * R_i + (1 - M_i) * up(B_{i-1})``. Going from the final pass back to the first:
    R_i is needed where B_i is needed and M_i > 0; B_{i-1} is needed where up(B_{i-1}) is read (B_i needed and
    M_i < 1, grown by the bilinear support) and under the receptive field of every needed R_i pixel (the coarse
    input is resized to half of pass i's size, at most a 2x reduction of B_{i-1}, then read through one pixel
    per convolution: a margin of 2 * (num_convs + 2) px of B_{i-1})."""
    regions = [None] * len(passes)
    out_needed = needed
    for i in range(len(passes) - 1, -1, -1):
        size, _, _, mask = passes[i]
        out_needed = _grow(out_needed, size, 0)
        regions[i] = out_needed & (mask > 0)
        if i == 0:
            break
        prev_size = passes[i - 1][0]
        read_upsampled = _grow(out_needed & (mask < 1), prev_size, 1)
        read_by_network = _grow(regions[i], prev_size, 2 * (num_convs + 2))
        out_needed = read_upsampled | read_by_network
    return regions


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
    sparse: bool = False,
    fusion_error: torch.Tensor | None = None,
    error_gate: torch.Tensor | None = None,
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
        sparse: evaluate IUNet only where the neural result reaches the fused output: where the error map
            used for the fusion exceeds :data:`SPARSE_ERROR_THRESHOLD` (see :func:`iunet_stage`). The fused
            result then equals the dense one within 1e-4; :attr:`NeuralResult.bokeh` itself equals it only
            there (elsewhere it is the upsampled coarser bokeh, which the fusion does not use). With
            ``error_gate`` or ``fusion_error`` ARNet too runs only for the pixels where that map is > 0
            (:func:`arnet_needed`; elsewhere its outputs hold :data:`SPARSE_FILL`, and the fusion weight there is
            exactly 0); without either every pixel is used and ARNet runs densely.
        fusion_error: (B, 1, H, W) the error map the fusion will use, when it is not ARNet's (the analytic one);
            only for ``sparse``.
        error_gate: (B, 1, H, W) in [0, 1]: the fusion will use ARNet's map times this one (the pipeline's
            map for the layered renderer, :func:`bokehme_core.error_map.defocus_error_map`); only for
            ``sparse``, not with ``fusion_error``. :attr:`NeuralResult.error_map` stays ARNet's own map (with
            ``sparse``: exact where ``error_gate > 0``, anything in [0, 1) elsewhere).

    Returns:
        :class:`NeuralResult`.
    """
    check_image(image)
    if fusion_error is not None:
        check_same_spatial(image, fusion_error, "image", "fusion_error", batch="equal")
    if error_gate is not None:
        if fusion_error is not None:
            raise ValueError("render_neural: give fusion_error or error_gate, not both")
        check_same_spatial(image, error_gate, "image", "error_gate", batch="equal")
    check_disparity(defocus_px, "defocus_px")
    check_disparity(dilated_defocus_px, "dilated_defocus_px")
    check_same_spatial(image, defocus_px, "image", "defocus_px", batch="equal")
    check_same_spatial(image, dilated_defocus_px, "image", "dilated_defocus_px", batch="equal")
    gamma = check_range(gamma, "gamma", GAMMA_MIN, GAMMA_MAX)
    check_model(arnet, ARNet, "arnet", image.device)
    check_model(iunet, IUNet, "iunet", image.device)
    inter = BokehMeIntermediates(dilated_defocus=dilated_defocus_px, defocus=defocus_px) if return_intermediates else None
    bokeh_all, error_all = [], []
    with torch.inference_mode():
        for b in range(image.shape[0]):
            img, dfc, dil = image[b : b + 1], defocus_px[b : b + 1], dilated_defocus_px[b : b + 1]
            used = None  # the pixels where the fusion weight can be > 0: ARNet runs only for them
            if sparse and error_gate is not None:
                used = error_gate[b : b + 1] > 0
            elif sparse and fusion_error is not None:
                used = fusion_error[b : b + 1] > 0
            if used is None:
                bokeh_lowres, error_map, scale = arnet_stage(arnet, img, dfc, gamma, tile_size)
            else:
                scale = adaptive_scale(dfc)
                needed_lowres = arnet_needed(used, scale, iunet.config.num_convs)
                bokeh_lowres, error_map, scale = arnet_stage(arnet, img, dfc, gamma, tile_size, scale, needed_lowres)
            if progress is not None:
                progress()
            record = {} if inter is not None else None
            needed = None
            if sparse:
                weight = error_map if fusion_error is None else fusion_error[b : b + 1]
                if error_gate is not None:
                    weight = error_map * error_gate[b : b + 1]
                needed = weight > SPARSE_ERROR_THRESHOLD
            bokeh = iunet_stage(iunet, img, dfc, dil, bokeh_lowres, scale, gamma, tile_size, progress, record, needed)
            bokeh_all.append(bokeh)
            error_all.append(error_map)
            if inter is not None:
                inter.adapt_scale.append(scale)
                inter.arnet_bokeh.append(bokeh_lowres)
                inter.iteration_bokeh.append(record["bokeh"])
                inter.iteration_masks.append(record["masks"])
    return NeuralResult(torch.cat(bokeh_all), torch.cat(error_all), inter)

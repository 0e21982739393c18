"""The lens-character node: BokehMe Lens -> BOKEHME_LENS (a :class:`bokehme_core.Lens`) for the render nodes.

Shared pieces for the render nodes: :data:`LENS_INPUT` (their optional ``lens`` socket) and :func:`check_lens`.
The math is in ``bokehme_core`` (:mod:`bokehme_core.aperture`, :mod:`bokehme_core.defocus`).
"""

from __future__ import annotations

import logging

import torch

from ..bokehme_core import Lens, render_classical
from ..bokehme_core.lens import LENS_RANGES
from . import _comfy

logger = logging.getLogger(__name__)

LENS_TYPE = "BOKEHME_LENS"

LENS_INPUT = {"lens": (LENS_TYPE, {"tooltip":
              "Optional lens character from 'BokehMe Lens' (cat's eye, swirl, soap-bubble ring, colour fringing, "
              "bright highlights, focus range). Not connected = the plain aperture."})}

# option -> (default, step, what it does); the range comes from bokehme_core.lens.LENS_RANGES
_OPTIONS = {
    "cat_eye": (0.0, 0.01, "Cat's-eye bokeh (optical vignetting): toward the frame's edges the bokeh balls are clipped "
                "into lemon shapes squeezed toward the image centre, more the farther from the centre; none at the "
                "centre. 0 = off, 0.5 = a fast lens wide open, 1 = strong."),
    "swirl": (0.0, 0.01, "Swirly bokeh (Petzval look): the cat's-eye lemons lean up to 45 degrees and stretch along "
              "circles around the centre. 0 = off."),
    "ring": (0.0, 0.01, "Soap-bubble bokeh: bright rim, centre dimmed to 1 - ring (the light is kept, moved to the rim). "
             "0 = off, 1 = hollow rings."),
    "fringe": (0.0, 0.005, "Colour fringing (longitudinal chromatic aberration): the red and blue blur radii differ "
               "from green by this fraction (purple / green fringes on bokeh edges). 0 = off, 0.03-0.1 is lens-like."),
    "highlight_gain": (1.0, 0.1, "Bright highlights: lights above 'highlight_threshold' are made this many times "
                       "brighter in linear light before blurring, so bokeh balls come out as bright as a real lens "
                       "makes them (8-bit photos clip lights at 1.0). 1 = off; about 3 with threshold 0.98 suits "
                       "typical photos (measured: bench/README.md)."),
    "highlight_threshold": (0.98, 0.01, "sRGB level above which pixels count as lights for 'highlight_gain' (the "
                            "brightest channel; soft over +-0.05). No effect while highlight_gain = 1."),
    "focus_range": (0.0, 0.005, "Depth band around the focus that stays fully sharp, in disparity units (the blur then "
                    "grows from the band's edges at the usual rate). 0 = a focus plane."),
    "near_scale": (1.0, 0.05, "Blur growth in front of the focus, relative to K (1 = as far, 0 = foreground sharp)."),
    "far_scale": (1.0, 0.05, "Blur growth behind the focus, relative to K (1 = as near, 2 = background twice as blurred)."),
}


def lens_inputs() -> dict:
    """The BokehMe Lens node's widgets: one FLOAT per :class:`bokehme_core.Lens` option, ranges from LENS_RANGES."""
    inputs = {}
    for name, (default, step, tip) in _OPTIONS.items():
        lo, hi = LENS_RANGES[name]
        inputs[name] = ("FLOAT", {"default": default, "min": lo, "max": hi, "step": step,
                                  "tooltip": f"{tip} Range {lo:g}..{hi:g}."})
    return inputs


def lens_from_inputs(**options) -> Lens:
    """Node widgets -> :class:`bokehme_core.Lens`; out-of-range values name the option and its range."""
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise TypeError(f"BokehMe Lens: unknown options {unknown}; expected {list(_OPTIONS)}")
    try:
        return Lens(**{name: float(value) for name, value in options.items()})
    except (TypeError, ValueError) as exc:  # the core names the option and its range
        raise ValueError(f"BokehMe Lens: {exc}") from exc


def check_lens(lens, node: str):
    """The optional ``lens`` input of a render node: None or a :class:`bokehme_core.Lens`."""
    if lens is None or isinstance(lens, Lens):
        return lens
    raise TypeError(f"{node}: the 'lens' input must come from the 'BokehMe Lens' node, got {type(lens).__name__}")


def lens_preview(lens: Lens, height: int = 192, width: int = 288, radius: float = 13.0) -> torch.Tensor:
    """(1, 3, H, W) picture of the lens: a 3x3 grid of white point lights (centre, edges, near the corners) on a
    dark background, rendered out of focus (fast classical renderer, gamma 2.2, the lens's highlight lift)."""
    image = torch.full((1, 3, height, width), 0.04)
    for fy in (0.12, 0.5, 0.88):
        for fx in (0.09, 0.5, 0.91):
            y, x = round(fy * (height - 1)), round(fx * (width - 1))
            image[..., y - 1:y + 1, x - 1:x + 1] = 1.0
    defocus = torch.full((1, 1, height, width), -float(radius))  # behind the focus
    out = render_classical(lens.lift_highlights(image), defocus, gamma=2.2, mode="fast", lens=lens.shape).bokeh
    return (out * 6.0).clamp(0, 1)  # exposed so that the dim rims of large balls read clearly


class BokehMeLens:
    """Lens character for the render nodes."""

    DESCRIPTION = (
        "Lens character for BokehMe Classical Render and BokehMe: cat's-eye and swirly bokeh toward the frame's "
        "edges, soap-bubble rings, colour fringing, bright highlights (clipped lights lifted before blurring) and a "
        "focus range that stays fully sharp, with separate near / far blur. Every option at its default = the plain "
        "aperture (today's output exactly). Connect 'lens' to the render node's optional 'lens' input."
    )
    CATEGORY = _comfy.CATEGORY
    FUNCTION = "build"
    RETURN_TYPES = (LENS_TYPE, "IMAGE")
    RETURN_NAMES = ("lens", "preview")
    OUTPUT_TOOLTIPS = (
        "The lens character; connect to the 'lens' input of BokehMe Classical Render or BokehMe.",
        "How the lens renders point lights at the centre, the edges and near the corners of a frame (exposed 6x).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": lens_inputs()}

    def build(self, **options):
        lens = lens_from_inputs(**options)
        with torch.inference_mode():
            preview = lens_preview(lens)
        return lens, _comfy.bchw_to_image(preview)


NODE_CLASS_MAPPINGS = {"BokehMeLens": BokehMeLens}
NODE_DISPLAY_NAME_MAPPINGS = {"BokehMeLens": "BokehMe Lens"}

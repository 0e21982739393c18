"""Classical rendering nodes: aperture shapes, the classical scatter renderer, the analytic error map, fusion.

Shared pieces used by the neural nodes too: :data:`APERTURE_INPUTS`, :func:`aperture_from_inputs`,
:data:`FOCUS_INPUTS`, :func:`focus_per_frame`, :func:`common_batch`.
"""

from __future__ import annotations

import logging
import math

import torch

from ..bokehme_core import Aperture, analytic_error_map, fuse, render_classical
from ..bokehme_core.defocus import render_inputs
from ..bokehme_core.scatter import MODES as CLASSICAL_MODES
from ..bokehme_core.disparity import match_size
from ..bokehme_core.preview import aperture_shape, defocus_preview, in_focus_mask
from . import _comfy
from .lens import LENS_INPUT, check_lens

logger = logging.getLogger(__name__)

# --- shared inputs and helpers --------------------------------------------------------------------------

RENDER_INPUTS = {
    "image": ("IMAGE", {"tooltip": "All-in-focus photo (sRGB). Alpha is ignored; a batch renders frame by frame."}),
    "disparity": ("IMAGE", {"tooltip": "Disparity map, gray IMAGE in [0,1], 1 = near (from BokehMe Estimate Disparity, "
                            "BokehMe Depth -> Disparity, ...). One map for all frames or one per frame."}),
    "K": ("FLOAT", {"default": 30.0, "min": 0.0, "max": 500.0, "step": 0.5, "tooltip":
          "Blur strength: blur radius in pixels per unit of disparity (radius = K * |disparity - focus|). "
          "0 = no blur; 10-60 is typical at 1-2 megapixels."}),
}

FOCUS_INPUTS = {
    "focus": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
              "Focus disparity in [0,1]: what stays sharp (0 = farthest, 1 = nearest). Connect BokehMe Focus to pick it "
              "by clicking."}),
    "focus_end": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 1.0, "step": 0.001, "advanced": True, "tooltip":
                  "Focus pull for batches/video: when >= 0, the focus moves linearly from 'focus' (first frame) to this "
                  "value (last frame). -1 = off."}),
    "gamma": ("FLOAT", {"default": 4.0, "min": 1.0, "max": 5.0, "step": 0.1, "tooltip":
              "Highlight exponent of BokehMe (1..5): higher makes bright bokeh balls pop (renders image**gamma). "
              "2.2 is close to rendering in linear light."}),
}

# Inputs marked "advanced" are folded away by ComfyUI's frontend until the user shows the node's advanced inputs
# (the ``advanced`` flag of ComfyUI's node schema; older frontends show every widget). They keep their place in
# the widget order, so a saved workflow still gives every value to the same input.
APERTURE_INPUTS = {
    "aperture": (["circle", "polygon"], {"default": "circle", "tooltip":
                 "Shape of the bokeh: a circle or a polygon with 'blades' sides. Connect 'aperture_mask' for any other "
                 "shape (heart, star, a photo of a real lens's bokeh)."}),
    "blades": ("INT", {"default": 6, "min": 3, "max": 16, "advanced": True, "tooltip":
               "Number of aperture blades (polygon sides); used when aperture = polygon."}),
    "rotation_deg": ("FLOAT", {"default": 90.0, "min": -360.0, "max": 360.0, "step": 1.0, "advanced": True, "tooltip":
                     "Polygon rotation in degrees; 90 = a vertex pointing up (the official default). Used when "
                     "aperture = polygon."}),
    "anamorphic": ("FLOAT", {"default": 1.0, "min": 0.2, "max": 5.0, "step": 0.05, "advanced": True, "tooltip":
                   "Bokeh width / height: 1 = round, 0.5 = tall ovals as from a 2x anamorphic lens."}),
}

RECOVER_INPUT = {"recover_highlights": ("BOOLEAN", {"default": True, "tooltip": (
    "Highlights: recover clipped lights (on, the default). Clipped, out-of-focus pixels (255 in 8 bits) are lifted "
    "in linear light before blurring, so lights render as bright bokeh balls as a real lens makes them; pixels "
    "below the clip level and sharp pixels are untouched. Off = render the photo's values as they are. A "
    "connected lens with its own highlight_gain replaces the recovery; the official boost (advanced inputs) is "
    "an alternative look. Use the same setting on every BokehMe node of one render.")})}

#: the official boost, one of the alternatives to the recovery (an advanced input of every render node)
HIGHLIGHT_TIP = (
    "Official highlight boost (BokehMe's own): brightens bright out-of-focus pixels (> 220/255) by up to 40% "
    "before blurring. An alternative to 'recover_highlights'; normally leave it off when the recovery is on."
)

APERTURE_MASK_INPUT = {"aperture_mask": ("MASK", {"tooltip":
                       "Optional custom aperture shape (white = open), e.g. from BokehMe Aperture Shape or a loaded "
                       "image; overrides 'aperture'."})}


def aperture_from_inputs(aperture: str, blades: int, rotation_deg: float, anamorphic: float, aperture_mask=None) -> Aperture:
    """Node widgets -> :class:`bokehme_core.Aperture`."""
    if aperture_mask is not None:
        shape = _comfy.mask_to_b1hw(aperture_mask, "aperture_mask")[0, 0]
        return Aperture.from_mask(shape, anamorphic=anamorphic)
    if aperture == "polygon":
        return Aperture.polygon(int(blades), math.radians(rotation_deg), anamorphic=anamorphic)
    if aperture == "circle":
        return Aperture.circle(anamorphic=anamorphic)
    raise ValueError(f"BokehMe: unknown aperture {aperture!r}; use circle or polygon, or connect aperture_mask")


def focus_per_frame(focus: float, focus_end: float, batch: int) -> torch.Tensor:
    """(B,) focus values: constant, or a linear pull from ``focus`` to ``focus_end`` (when >= 0) over the batch."""
    if focus_end is None or focus_end < 0:
        return torch.full((batch,), float(focus))
    if batch == 1:
        return torch.tensor([float(focus)])
    return torch.linspace(float(focus), float(focus_end), batch)


def common_batch(image: torch.Tensor, disparity: torch.Tensor, resize: bool = False):
    """Bring (B,3,H,W) image and (b,1,h,w) disparity to one batch size and (optionally) one spatial size."""
    disparity = match_size(disparity, image.shape[-2:], resize=resize, what="BokehMe: the disparity map",
                           advice="enable 'resize_disparity' on this node or resize one of them")
    b_img, b_disp = image.shape[0], disparity.shape[0]
    if b_img != b_disp:
        if b_disp == 1:
            disparity = disparity.expand(b_img, -1, -1, -1)
        elif b_img == 1:
            image = image.expand(b_disp, -1, -1, -1)
        else:
            raise ValueError(f"BokehMe: {b_img} images but {b_disp} disparity maps; give one map, or one per image")
    return image, disparity


#: the classical renderer's modes and what each costs (shared by the classical and the all-in-one node)
CLASSICAL_MODE_TIP = (
    "layered (default): occlusion-aware, soft depth slabs composited back to front with the hidden background "
    "filled, so a blurred background never spills over a sharp subject; the most faithful to a real lens and "
    "several times slower than fast. exact: the official scatter kernel (cost grows with the blur area). fast: "
    "the same look as exact, cost grows with the blur radius only (for previews and big images). Measured "
    "quality and speed: bench/README.md."
)


# --- nodes ----------------------------------------------------------------------------------------------

class BokehMeApertureShape:
    """Draw an aperture shape to use as a custom bokeh shape."""

    DESCRIPTION = "Draws an aperture shape (circle, polygon, star, heart) as a MASK for the 'aperture_mask' input of the render nodes."
    CATEGORY = _comfy.CATEGORY
    FUNCTION = "draw"
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("aperture_mask", "preview")
    OUTPUT_TOOLTIPS = ("Aperture shape, white = open; connect to 'aperture_mask'.", "The same shape as an IMAGE.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "shape": (["heart", "star", "polygon", "circle"], {"default": "heart", "tooltip": "Shape of the bokeh."}),
            "blades": ("INT", {"default": 6, "min": 3, "max": 32, "tooltip": "Polygon sides / star points."}),
            "rotation_deg": ("FLOAT", {"default": 90.0, "min": -360.0, "max": 360.0, "step": 1.0, "tooltip":
                             "Rotation in degrees; 90 = upright (a polygon or star vertex points up, the heart stands upright)."}),
            "size": ("INT", {"default": 129, "min": 9, "max": 1025, "step": 2, "tooltip":
                     "Resolution of the drawn shape in pixels (129 is plenty; it is resampled to each blur size)."}),
        }}

    def draw(self, shape, blades, rotation_deg, size):
        mask = aperture_shape(shape, size, blades=blades, rotation=math.radians(rotation_deg), points=blades)
        return mask[None], mask[None, :, :, None].expand(1, -1, -1, 3).contiguous()


class BokehMeClassicalRender:
    """BokehMe's classical scatter renderer."""

    DESCRIPTION = (
        "Renders lens blur with BokehMe's classical scatter renderer: every pixel spreads into a disk (or polygon, "
        "or custom shape) of its own blur radius. Exact mode reproduces the official kernel; fast mode is a "
        "linear-time approximation for previews and big images. Physically faithful bokeh balls, but it cannot "
        "see behind blurred foreground edges: the hybrid BokehMe node fixes those areas with the neural renderer."
    )
    CATEGORY = _comfy.CATEGORY_STAGES
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE", "BOKEHME_DEFOCUS", "IMAGE", "MASK")
    RETURN_NAMES = ("bokeh", "dilated_defocus", "defocus_preview", "in_focus_mask")
    OUTPUT_TOOLTIPS = (
        "The blurred image (sRGB, [0,1]).",
        "Signed blur radius in pixels after the official max-dilation (for the BokehMe IUNet node).",
        "Signed blur as a picture: red = nearer than focus, blue = farther, gray = sharp.",
        "1 where the image stays sharp (blur radius <= 0.5 px), 0 where blurred (>= 1.5 px).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **RENDER_INPUTS, **FOCUS_INPUTS, **APERTURE_INPUTS,
                "mode": (list(CLASSICAL_MODES), {"default": "layered", "tooltip": CLASSICAL_MODE_TIP}),
                "highlight": ("BOOLEAN", {"default": False, "advanced": True, "tooltip": HIGHLIGHT_TIP}),
                "resize_disparity": ("BOOLEAN", {"default": False, "advanced": True, "tooltip":
                                     "Resize a disparity map of another size to the image (bilinear) instead of stopping "
                                     "with an error."}),
            },
            "optional": {**APERTURE_MASK_INPUT, **LENS_INPUT, **RECOVER_INPUT},
        }

    def render(self, image, disparity, K, focus, focus_end, gamma, aperture, blades, rotation_deg, anamorphic,
               mode, highlight, resize_disparity, aperture_mask=None, lens=None, recover_highlights=True):
        device = _comfy.torch_device()
        img = _comfy.image_to_bchw(image)
        disp = _comfy.map_to_b1hw(disparity, "disparity")
        img, disp = common_batch(img, disp, resize_disparity)
        ap = aperture_from_inputs(aperture, blades, rotation_deg, anamorphic, aperture_mask)
        lens = check_lens(lens, "BokehMe Classical Render")
        focus_values = focus_per_frame(focus, focus_end, img.shape[0])
        progress = _comfy.frame_progress(img.shape[0])
        bokeh, dilated, preview, in_focus = [], [], [], []
        with torch.inference_mode():
            for i in range(img.shape[0]):  # frame by frame: bounded memory for long batches, and interruptible
                _comfy.check_interrupted()
                frame, frame_disp = img[i : i + 1].to(device), disp[i : i + 1].to(device)
                frame, defocus = render_inputs(frame, frame_disp, K, focus_values[i : i + 1], highlight=highlight,
                                               recover=recover_highlights, **({} if lens is None else lens.pre_render))
                _comfy.check_interrupted()
                result = render_classical(frame, defocus, gamma=gamma, aperture=ap, mode=mode,
                                          lens=None if lens is None else lens.shape, progress=progress(i))
                bokeh.append(result.bokeh.clamp(0, 1).cpu())
                dilated.append(result.dilated_defocus.cpu())
                preview.append(defocus_preview(defocus, max_radius=max(K * 0.5, 1e-3)).cpu())
                in_focus.append(in_focus_mask(defocus).cpu())
        _comfy.release_memory()
        return (_comfy.bchw_to_image(torch.cat(bokeh)), torch.cat(dilated), _comfy.bchw_to_image(torch.cat(preview)),
                _comfy.b1hw_to_mask(torch.cat(in_focus)))


class BokehMeAnalyticErrorMap:
    """Where the classical renderer is wrong, computed analytically (paper Eq. 5)."""

    DESCRIPTION = (
        "Computes BokehMe's analytic error map from disparity, K and focus (paper Eq. 5): 1 where the classical "
        "renderer is known to fail (depth edges whose two sides are blurred differently; for the layered mode only "
        "where a blurred foreground reveals hidden background), 0 where it is right. A network-free alternative to ARNet's predicted error map for the fusion node."
    )
    CATEGORY = _comfy.CATEGORY_STAGES
    FUNCTION = "compute"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("error_map",)
    OUTPUT_TOOLTIPS = ("Error map in [0,1]: 1 = use the neural rendering, 0 = keep the classical one.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "disparity": RENDER_INPUTS["disparity"], "K": RENDER_INPUTS["K"],
                "focus": FOCUS_INPUTS["focus"], "focus_end": FOCUS_INPUTS["focus_end"],
            },
            "optional": {
                "classical_mode": (list(CLASSICAL_MODES), {"default": "layered", "tooltip": (
                    "The classical renderer whose errors are mapped. 'layered' (default, the occlusion-aware "
                    "mode): only where a blurred foreground reveals background hidden in the photo; 'exact' / "
                    "'fast' (scatter): also where the background would spread over a sharper subject (halo).")}),
            },
        }

    def compute(self, disparity, K, focus, focus_end, classical_mode="layered"):
        disp = _comfy.map_to_b1hw(disparity, "disparity")
        focus_values = focus_per_frame(focus, focus_end, disp.shape[0])
        with torch.inference_mode():
            error = analytic_error_map(disp, K, focus_values,
                                       renderer="layered" if classical_mode == "layered" else "scatter")
        return (_comfy.b1hw_to_mask(error),)


class BokehMeFuse:
    """Blend a classical and a neural rendering with an error map (paper Eq. 1)."""

    DESCRIPTION = (
        "Fuses two renderings: classical * (1 - error_map) + neural * error_map. Any node's output can be plugged in "
        "(another blur renderer, a hand-painted error map)."
    )
    CATEGORY = _comfy.CATEGORY_STAGES
    FUNCTION = "fuse"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("bokeh",)
    OUTPUT_TOOLTIPS = ("Fused bokeh image (sRGB, [0,1]).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "classical": ("IMAGE", {"tooltip": "Classical rendering (kept where error_map = 0)."}),
            "neural": ("IMAGE", {"tooltip": "Neural rendering (used where error_map = 1)."}),
            "error_map": ("MASK", {"tooltip": "Blend weights in [0,1] (values outside are clamped)."}),
            "resize_error_map": ("BOOLEAN", {"default": False, "tooltip":
                                 "Resize an error map of another size to the images (bilinear) instead of stopping with an error."}),
        }}

    def fuse(self, classical, neural, error_map, resize_error_map):
        a, b = _comfy.image_to_bchw(classical, "classical"), _comfy.image_to_bchw(neural, "neural")
        if a.shape != b.shape:
            raise ValueError(f"BokehMe Fuse: classical {tuple(classical.shape)} and neural {tuple(neural.shape)} "
                             f"images must have the same batch and size")
        e = _comfy.mask_to_b1hw(error_map, "error_map")
        e = match_size(e, a.shape[-2:], resize=resize_error_map, what="BokehMe Fuse: error_map",
                       advice="enable 'resize_error_map'")
        return (_comfy.bchw_to_image(fuse(a, b, e.clamp(0, 1)).clamp(0, 1)),)


NODE_CLASS_MAPPINGS = {
    "BokehMeApertureShape": BokehMeApertureShape,
    "BokehMeClassicalRender": BokehMeClassicalRender,
    "BokehMeAnalyticErrorMap": BokehMeAnalyticErrorMap,
    "BokehMeFuse": BokehMeFuse,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "BokehMeApertureShape": "BokehMe Aperture Shape",
    "BokehMeClassicalRender": "BokehMe Classical Render",
    "BokehMeAnalyticErrorMap": "BokehMe Analytic Error Map",
    "BokehMeFuse": "BokehMe Fuse",
}

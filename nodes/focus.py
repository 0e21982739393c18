"""Focus node: pick the in-focus plane from a value, a clicked point or a subject mask.

The frontend extension ``web/js/bokehme_focus.js`` lets the user click on this node's preview to set x, y.
"""

from __future__ import annotations

import logging

import torch

from ..bokehme_core import focus as core_focus
from . import _comfy

logger = logging.getLogger(__name__)


def save_preview(image_bchw: torch.Tensor, prefix: str) -> list:
    """Save (B,3,H,W) previews into ComfyUI's temp folder and return the UI image list (empty outside ComfyUI)."""
    try:
        import folder_paths
    except ImportError:
        return []
    import os
    import random

    import numpy as np
    from PIL import Image

    temp_dir = folder_paths.get_temp_directory()
    os.makedirs(temp_dir, exist_ok=True)
    suffix = "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6))
    results = []
    for i, picture in enumerate(_comfy.bchw_to_image(image_bchw)):
        name = f"{prefix}_{suffix}_{i:03d}.png"
        Image.fromarray((picture.numpy() * 255.0 + 0.5).astype(np.uint8)).save(os.path.join(temp_dir, name), compress_level=1)
        results.append({"filename": name, "subfolder": "", "type": "temp"})
    return results


def draw_marker(image: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Draw a focus marker (a dark-edged white ring) at normalised (x, y) on (B,3,H,W) previews."""
    out = image.clone()
    h, w = out.shape[-2:]
    radius = max(4.0, 0.02 * max(h, w))
    yy = torch.arange(h, dtype=torch.float32).view(-1, 1)
    xx = torch.arange(w, dtype=torch.float32).view(1, -1)
    # the same pixel that focus_from_point reads
    col, row = min(int(x * w), w - 1), min(int(y * h), h - 1)
    dist = torch.sqrt((xx - col) ** 2 + (yy - row) ** 2)
    ring = (dist - radius).abs()
    out[:, :, ring <= 1.0] = 1.0
    out[:, :, (ring > 1.0) & (ring <= 2.0)] = 0.0
    return out


class BokehMeFocus:
    """Choose the focus plane (disparity value in [0,1])."""

    DESCRIPTION = (
        "Chooses what stays sharp. 'point': click on this node's preview (after one run) to focus on that spot; "
        "the median disparity around it is used. 'mask': the median disparity inside a subject mask (e.g. from a "
        "segmentation node). 'value': the focus disparity typed in directly (0 = farthest, 1 = nearest)."
    )
    CATEGORY = _comfy.CATEGORY
    FUNCTION = "pick"
    OUTPUT_NODE = True
    RETURN_TYPES = ("FLOAT", "IMAGE")
    RETURN_NAMES = ("focus", "preview")
    OUTPUT_TOOLTIPS = (
        "Focus disparity in [0, 1] (1 = near): connect to the 'focus' input of a render node. With a batch and "
        "mode 'mask', the value of the first frame.",
        "The image (or disparity) with the focus marker.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "disparity": ("IMAGE", {"tooltip": "Disparity map (gray IMAGE in [0,1], 1 = near)."}),
                "mode": (["point", "value", "mask"], {"default": "point", "tooltip":
                         "point: focus where you click on the preview; value: the number below; mask: median "
                         "disparity inside the connected mask."}),
                "focus": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                          "Focus disparity for mode 'value' (0 = farthest, 1 = nearest)."}),
                "x": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                      "Focus point, fraction of the width (0 = left). Set by clicking on the preview."}),
                "y": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                      "Focus point, fraction of the height (0 = top). Set by clicking on the preview."}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "Optional photo shown in the preview instead of the disparity map."}),
                "mask": ("MASK", {"tooltip": "Subject mask for mode 'mask' (white = subject)."}),
            },
        }

    def pick(self, disparity, mode, focus, x, y, image=None, mask=None):
        disp = _comfy.map_to_b1hw(disparity, "disparity")
        if mode == "value":
            value = float(focus)
        elif mode == "point":
            value = float(core_focus.focus_from_point(disp[:1], x, y)[0])
        elif mode == "mask":
            if mask is None:
                raise ValueError("BokehMe Focus: mode 'mask' needs a MASK connected to the 'mask' input")
            value = float(core_focus.focus_from_mask(disp[:1], _comfy.mask_to_b1hw(mask)[:1])[0])
        else:
            raise ValueError(f"BokehMe Focus: unknown mode {mode!r}")
        if image is not None:
            picture = _comfy.image_to_bchw(image[:1])
        else:
            picture = disp[:1].expand(-1, 3, -1, -1)
        if mode == "point":
            picture = draw_marker(picture, x, y)
        logger.info("BokehMe focus (%s): %.4f", mode, value)
        return {"ui": {"images": save_preview(picture, "bokehme_focus"), "focus": [value]},
                "result": (value, _comfy.bchw_to_image(picture))}


NODE_CLASS_MAPPINGS = {"BokehMeFocus": BokehMeFocus}
NODE_DISPLAY_NAME_MAPPINGS = {"BokehMeFocus": "BokehMe Focus (click to focus)"}

"""Disparity input nodes: the bundled example scene, disparity files at full precision, and conversion of any
depth/disparity map another node produces into BokehMe's convention (IMAGE/MASK in [0,1], 1 = near)."""

from __future__ import annotations

import logging
import pathlib

import torch
import torch.nn.functional as F

from ..bokehme_core import disparity as core_disparity
from ..bokehme_core.paths import package_root
from . import _comfy

logger = logging.getLogger(__name__)

_DISPARITY_EXTS = (".png", ".tif", ".tiff", ".exr", ".npy", ".jpg", ".jpeg", ".webp")

_MODE_TOOLTIP = (
    "What the input map holds. 'disparity (near = bright)': Depth Anything, MiDaS/DPT, ZoeDepth previews and "
    "most depth nodes' outputs. 'depth (near = dark)': a depth map where larger = farther, inverted linearly. "
    "'metric depth (1/d)': depth in metres or any unit (Depth Pro, MoGe, Depth Anything metric, Marigold "
    "depth decoded to real values), converted physically as 1/depth."
)
_MODES = {"disparity (near = bright)": "disparity", "depth (near = dark)": "inverted", "metric depth (1/d)": "metric"}


def _outputs(disparity: torch.Tensor):
    """(B,1,H,W) -> (IMAGE gray, MASK)."""
    return _comfy.bchw_to_image(disparity), _comfy.b1hw_to_mask(disparity)


def convert_map(raw: torch.Tensor, *, mode: str, repair: bool, deband_8bit: bool, **options) -> torch.Tensor:
    """(B,1,H,W) raw map -> disparity in [0,1], 1 = near: the core's one preparation path
    (:func:`bokehme_core.disparity.prepare_disparity`) with this node's option names in its messages."""
    return core_disparity.prepare_disparity(
        raw, mode=_MODES[mode], repair=repair, deband_8bit=deband_8bit, **options,
        option_names={"repair": "enable 'repair_nan' on this node", "normalize": "enable 'normalize' on this node"},
    )


_CONVERT_OPTIONS = {
    "mode": (list(_MODES), {"default": "disparity (near = bright)", "tooltip": _MODE_TOOLTIP}),
    "normalize": ("BOOLEAN", {"default": True, "tooltip": "Stretch the map to [0, 1] (min-max, or the percentiles below). "
                              "K is defined per unit of normalised disparity, so keep it on unless the map is already "
                              "a disparity in [0, 1]."}),
    "low_percentile": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 49.0, "step": 0.5,
                                 "tooltip": "Percentile (%) mapped to 0 (far). Raise to 1-2 to ignore outliers such as sky noise."}),
    "high_percentile": ("FLOAT", {"default": 100.0, "min": 51.0, "max": 100.0, "step": 0.5,
                                  "tooltip": "Percentile (%) mapped to 1 (near). Lower to 98-99 to ignore a few very near pixels."}),
    "batch_stable": ("BOOLEAN", {"default": False, "tooltip": "One normalisation range for the whole batch (video: no "
                                 "flicker) instead of one per frame."}),
    "invert": ("BOOLEAN", {"default": False, "tooltip": "Swap near and far after conversion."}),
    "repair_nan": ("BOOLEAN", {"default": True, "tooltip": "Fill NaN/inf pixels (and depth <= 0 in metric mode) from "
                               "their surroundings. Off: such pixels stop the workflow with an error."}),
    "deband_8bit": ("BOOLEAN", {"default": False, "tooltip": "Smooth the staircase of 8-bit depth images (visible as "
                                "rings in the blur) without blurring real depth edges."}),
}


class BokehMeDepthToDisparity:
    """Any depth or disparity map (IMAGE or MASK from another node) -> BokehMe disparity."""

    DESCRIPTION = (
        "Converts a depth or disparity map from any node (Depth Anything, MiDaS, Depth Pro, MoGe, Marigold, a "
        "hand-painted mask...) into BokehMe's disparity: values in [0, 1], 1 = nearest. Connect either an IMAGE "
        "(the first channel is used) or a MASK."
    )
    CATEGORY = _comfy.CATEGORY_DEPTH
    FUNCTION = "convert"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("disparity", "disparity_mask")
    OUTPUT_TOOLTIPS = (
        "Disparity as a gray IMAGE in [0, 1], 1 = near: connect to the render nodes.",
        "The same disparity as a MASK (B,H,W).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": dict(_CONVERT_OPTIONS),
            "optional": {
                "depth_image": ("IMAGE", {"tooltip": "Depth/disparity map as an IMAGE (first channel used)."}),
                "depth_mask": ("MASK", {"tooltip": "Depth/disparity map as a MASK; use instead of depth_image."}),
                "match_size_of": ("IMAGE", {"tooltip": "Optional: resize the map (bilinear) to this image's size, "
                                            "e.g. the photo to blur when the depth model ran at another resolution."}),
            },
        }

    def convert(self, mode, normalize, low_percentile, high_percentile, batch_stable, invert, repair_nan,
                deband_8bit, depth_image=None, depth_mask=None, match_size_of=None):
        if (depth_image is None) == (depth_mask is None):
            raise ValueError("BokehMe Depth -> Disparity: connect exactly one of depth_image or depth_mask")
        raw = _comfy.map_to_b1hw(depth_image if depth_image is not None else depth_mask, "depth map")
        if match_size_of is not None and tuple(match_size_of.shape[1:3]) != tuple(raw.shape[-2:]):
            raw = F.interpolate(raw, size=tuple(match_size_of.shape[1:3]), mode="bilinear", align_corners=False)
        disparity = convert_map(raw, mode=mode, normalize=normalize, low_pct=low_percentile, high_pct=high_percentile,
                                batch_stable=batch_stable, invert=invert, repair=repair_nan, deband_8bit=deband_8bit)
        return _outputs(disparity)


class BokehMeRefineDisparity:
    """Snap the depth edges of a predicted disparity map onto the photo's edges."""

    DESCRIPTION = (
        "Refines a predicted disparity map (from a depth network) for rendering: around every depth edge, each "
        "pixel goes to the near or the far side by its colour, so soft, dilated or shifted edges land on the "
        "photo's own edges and the bokeh shows no halo of the wrong sharpness around the subject. Pixels away "
        "from depth edges keep their values; a map whose edges already follow the photo comes back unchanged. "
        "Connect a subject mask (from any segmentation node) to make the subject's outline exact."
    )
    CATEGORY = _comfy.CATEGORY_DEPTH
    FUNCTION = "refine"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("disparity", "disparity_mask")
    OUTPUT_TOOLTIPS = (
        "Refined disparity as a gray IMAGE in [0, 1], 1 = near: connect to the render nodes.",
        "The same disparity as a MASK (B,H,W).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The photo the disparity map belongs to (its edges guide the map's)."}),
                "disparity": ("IMAGE", {"tooltip": "Disparity map, gray IMAGE (or MASK) in [0,1], 1 = near, the "
                                        "size of the image (from BokehMe Estimate Disparity or Depth -> Disparity)."}),
                "radius": ("INT", {"default": 4, "min": 1, "max": 64, "advanced": True, "tooltip":
                           "How far (in pixels) a depth edge may move to reach the photo's edge; 4 covers the "
                           "usual errors of depth networks at 1-2 megapixels."}),
            },
            "optional": {
                "subject_mask": ("MASK", {"tooltip": "Optional subject / alpha mask (white = subject), e.g. from a "
                                          "segmentation node: its outline decides the subject's edges."}),
            },
        }

    def refine(self, image, disparity, radius, subject_mask=None):
        image_t = _comfy.image_to_bchw(image, "image")
        disparity_t = _comfy.map_to_b1hw(disparity, "disparity")
        mask_t = None if subject_mask is None else _comfy.mask_to_b1hw(subject_mask, "subject_mask")
        try:
            refined = core_disparity.refine_disparity(disparity_t, image_t, radius=int(radius), mask=mask_t)
        except ValueError as exc:
            raise ValueError(f"BokehMe Refine Disparity: {exc}") from exc
        return _outputs(refined)


def _input_directory() -> pathlib.Path | None:
    try:
        import folder_paths
    except ImportError:
        return None
    return pathlib.Path(folder_paths.get_input_directory())


_EXAMPLES_DIR = package_root() / "workflows" / "inputs"
_EXAMPLE_PREFIX = "[BokehMe examples] "


def _disparity_files() -> dict:
    """Files offered by the disparity file loader: ComfyUI's input folder, then the pack's example inputs."""
    files = {}
    input_dir = _input_directory()
    if input_dir is not None and input_dir.is_dir():
        for p in sorted(input_dir.rglob("*")):
            if p.is_file() and p.suffix.lower() in _DISPARITY_EXTS:
                files[p.relative_to(input_dir).as_posix()] = p
    for base in (_EXAMPLES_DIR, package_root() / "assets" / "demo"):
        if base.is_dir():
            for p in sorted(base.iterdir()):
                if p.is_file() and p.suffix.lower() in _DISPARITY_EXTS:
                    files.setdefault(_EXAMPLE_PREFIX + p.name, p)
    return files


class BokehMeLoadDisparityFile:
    """Load a disparity/depth file at full precision (16-bit PNG, float TIFF, EXR, NPY)."""

    DESCRIPTION = (
        "Loads a disparity or depth map file at full precision: 16-bit PNG keeps all 16 bits (ComfyUI's Load "
        "Image reduces them to 8), float TIFF/EXR/NPY keep real values (metric depth included). Files come from "
        "ComfyUI's input folder; the pack's example inputs are listed too."
    )
    CATEGORY = _comfy.CATEGORY_DEPTH
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("disparity", "disparity_mask")
    OUTPUT_TOOLTIPS = BokehMeDepthToDisparity.OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        names = sorted(_disparity_files()) or ["(put a disparity file into ComfyUI/input)"]
        return {"required": {"file": (names, {"tooltip": "Disparity/depth file from ComfyUI's input folder "
                                              "(8/16-bit PNG, float TIFF, EXR, NPY)."}), **_CONVERT_OPTIONS}}

    @classmethod
    def IS_CHANGED(cls, file, **kwargs):
        path = _disparity_files().get(file)
        return path.stat().st_mtime_ns if path is not None else file

    @classmethod
    def VALIDATE_INPUTS(cls, file, **kwargs):
        if file not in _disparity_files():
            return f"disparity file {file!r} not found in ComfyUI's input folder"
        return True

    def load(self, file, mode, normalize, low_percentile, high_percentile, batch_stable, invert, repair_nan, deband_8bit):
        path = _disparity_files().get(file)
        if path is None:
            raise FileNotFoundError(f"BokehMe: disparity file {file!r} not found in ComfyUI's input folder")
        raw = core_disparity.load_disparity(path)
        disparity = convert_map(raw, mode=mode, normalize=normalize, low_pct=low_percentile, high_pct=high_percentile,
                                batch_stable=batch_stable, invert=invert, repair=repair_nan, deband_8bit=deband_8bit)
        return _outputs(disparity)


class BokehMeExampleScene:
    """The bundled example: an all-in-focus image and its exact disparity, made by the pack's own renderer."""

    DESCRIPTION = (
        "Outputs the pack's bundled example scene (a synthetic photo-like scene made by our own code, with its "
        "exact disparity), so that the example workflows run on a fresh install with no input files."
    )
    CATEGORY = _comfy.CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "IMAGE", "MASK")
    RETURN_NAMES = ("image", "disparity", "disparity_mask")
    OUTPUT_TOOLTIPS = ("All-in-focus image (sRGB, [0,1]).", "Disparity, gray IMAGE in [0,1], 1 = near.",
                       "The same disparity as a MASK.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"frames": ("INT", {"default": 1, "min": 1, "max": 240, "tooltip":
                                                "Repeat the scene as a batch of this many frames (for video/focus-pull examples)."})}}

    def load(self, frames):
        from ..bokehme_core.image_io import read_image

        demo = package_root() / "assets" / "demo"
        image = read_image(demo / "image.png")
        disparity = core_disparity.load_disparity(demo / "disparity.png")
        image, disparity = image.expand(frames, -1, -1, -1), disparity.expand(frames, -1, -1, -1)
        return (_comfy.bchw_to_image(image), *_outputs(disparity))


NODE_CLASS_MAPPINGS = {
    "BokehMeDepthToDisparity": BokehMeDepthToDisparity,
    "BokehMeLoadDisparityFile": BokehMeLoadDisparityFile,
    "BokehMeExampleScene": BokehMeExampleScene,
    "BokehMeRefineDisparity": BokehMeRefineDisparity,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "BokehMeDepthToDisparity": "BokehMe Depth -> Disparity",
    "BokehMeLoadDisparityFile": "BokehMe Load Disparity File",
    "BokehMeExampleScene": "BokehMe Example Scene",
    "BokehMeRefineDisparity": "BokehMe Refine Disparity",
}

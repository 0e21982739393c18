"""Disparity estimation nodes: load a depth model (Depth Anything V2, MiDaS DPT) and estimate disparity.

The conversion of depth maps from other packs (``BokehMeDepthToDisparity``) lives in ``nodes/disparity.py``.
"""

from __future__ import annotations

import logging

import torch

from ..bokehme_core.depth import DepthCheckpointError, load_depth_model
from . import _comfy

logger = logging.getLogger(__name__)

#: loader choice -> official short name
_DOWNLOAD_CHOICES = {
    "Depth Anything V2 Small (download)": "depth_anything_v2_vits",
    "Depth Anything V2 Base (download, CC-BY-NC)": "depth_anything_v2_vitb",
    "Depth Anything V2 Large (download, CC-BY-NC)": "depth_anything_v2_vitl",
}
_PRECISIONS = ("auto", "fp32", "fp16")
_OUTPUTS = ("disparity 0..1", "raw network output")


def _model_choices() -> list:
    files = [name for name, _ in _comfy.list_model_files("bokehme_depth")]
    return files + list(_DOWNLOAD_CHOICES)


class BokehMeDepthModelLoader:
    """Loads a Depth Anything V2 or MiDaS DPT checkpoint (official files only) for BokehMe Estimate Disparity."""

    DESCRIPTION = (
        "Loads a monocular depth network for 'BokehMe Estimate Disparity'. Lists the .pth/.safetensors files in "
        "models/bokehme/depth/ and models/depthanything/: official Depth Anything V2 vits/vitb/vitl and MiDaS "
        "dpt_hybrid_384.pt / dpt_large_384.pt. The '(download)' choices fetch the official file from Hugging Face "
        "into models/bokehme/depth/ once. Licences of the weights: Depth Anything V2 Small Apache-2.0; Base and "
        "Large CC-BY-NC-4.0 (non-commercial use only); MiDaS MIT."
    )
    CATEGORY = _comfy.CATEGORY_DEPTH
    FUNCTION = "load"
    RETURN_TYPES = ("BOKEHME_DEPTH_MODEL",)
    RETURN_NAMES = ("depth_model",)
    OUTPUT_TOOLTIPS = ("The depth network (loaded onto the GPU by ComfyUI's model manager when it runs).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (_model_choices(), {
                    "default": next(iter(_DOWNLOAD_CHOICES)),
                    "tooltip": "A depth model file from models/bokehme/depth/ or models/depthanything/, or an official "
                               "Depth Anything V2 model to download (Small: Apache-2.0, ~99 MB; Base ~390 MB and "
                               "Large ~1.3 GB: CC-BY-NC-4.0, non-commercial only).",
                }),
            }
        }

    def load(self, model):
        if model in _DOWNLOAD_CHOICES:
            path = _comfy.official_weights_path(_DOWNLOAD_CHOICES[model], "BokehMe Depth Model Loader")
        else:
            found = dict(_comfy.list_model_files("bokehme_depth"))
            if model not in found:
                raise FileNotFoundError(
                    f"BokehMe Depth Model Loader: {model!r} is not in the depth model folders "
                    f"{[str(d) for d in _comfy.model_dirs('bokehme_depth')]}; refresh the page or pick another file"
                )
            path = found[model]
        try:
            network = load_depth_model(path, device=_comfy.offload_device())
        except DepthCheckpointError as exc:
            raise ValueError(f"BokehMe Depth Model Loader: {model!r} is not usable: {exc}") from exc
        return (network,)


class BokehMeEstimateDisparity:
    """Estimates disparity (near = 1) for every image of a batch."""

    DESCRIPTION = (
        "Estimates disparity for each image with the depth model (official preprocessing: aspect kept, "
        "shorter side at the processing resolution, sizes rounded to the network's multiple). Output: disparity "
        "in [0, 1], white = near, ready for the BokehMe render nodes."
    )
    CATEGORY = _comfy.CATEGORY_DEPTH
    FUNCTION = "estimate"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("disparity", "disparity_mask")
    OUTPUT_TOOLTIPS = (
        "Disparity as a gray IMAGE at the input size in [0, 1], 1 = near ('raw network output': the raw values "
        "divided by the batch maximum, for viewing).",
        "The same disparity as a MASK (B,H,W) in [0, 1] ('raw network output': the unbounded raw relative inverse "
        "depth, >= 0, for nodes that normalise it themselves, e.g. BokehMe Depth -> Disparity).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "depth_model": ("BOKEHME_DEPTH_MODEL", {"tooltip": "From 'BokehMe Depth Model Loader'."}),
                "image": ("IMAGE", {"tooltip": "Photos (batch allowed), RGB in [0, 1]."}),
                "processing_resolution": ("INT", {
                    "default": 0, "min": 0, "max": 4096, "step": 1,
                    "tooltip": "Network working resolution in px (0 = the official default: 518 for Depth Anything "
                               "V2, 384 for MiDaS DPT). Higher = finer edges, slower, and more memory; the shorter "
                               "side is scaled to about this size (multiples of 14 / 32).",
                }),
                "precision": (list(_PRECISIONS), {
                    "default": "auto",
                    "tooltip": "auto: fp16 on CUDA, fp32 otherwise. fp16 halves memory and time on GPUs with "
                               "small numerical differences; on the CPU fp32 is faster.",
                }),
                "batch_stable": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "One normalisation range for the whole batch (video: no flicker between frames) "
                               "instead of stretching every image to [0, 1] on its own.",
                }),
                "output": (list(_OUTPUTS), {
                    "default": _OUTPUTS[0],
                    "tooltip": "'disparity 0..1': normalised, 1 = near. 'raw network output': the network's "
                               "relative inverse depth, unnormalised (see the output tooltips).",
                }),
            }
        }

    def estimate(self, depth_model, image, processing_resolution, precision, batch_stable, output):
        from ..bokehme_core.disparity import normalize_disparity

        if not hasattr(depth_model, "estimate"):
            raise TypeError("BokehMe Estimate Disparity: depth_model must come from 'BokehMe Depth Model Loader'")
        _comfy.check_interrupted()
        image_bchw = _comfy.image_to_bchw(image)
        device = _comfy.load_models([depth_model])  # resident under ComfyUI's model manager (evictable)
        if precision == "auto":
            dtype = torch.float16 if device.type == "cuda" else torch.float32
        else:
            dtype = torch.float16 if precision == "fp16" else torch.float32
        processing_res = None if processing_resolution == 0 else int(processing_resolution)
        progress = _comfy.progress_callback(image_bchw.shape[0])
        try:
            depth_model.to(dtype=dtype)
            raw = depth_model.estimate(image_bchw, normalize=False, processing_res=processing_res, progress=progress)
        except ValueError as exc:
            if "NaN/inf" in str(exc) and dtype == torch.float16:
                raise ValueError(
                    "BokehMe Estimate Disparity: the depth network overflowed in fp16; set precision to fp32"
                ) from exc
            raise
        finally:
            depth_model.to(dtype=torch.float32)  # weights rest in float32; ComfyUI moves them when it needs room
            _comfy.release_memory()
        raw = raw.to("cpu", torch.float32)
        if output == _OUTPUTS[1]:
            preview = raw / raw.max().clamp_min(1e-6)
            return _comfy.bchw_to_image(preview), _comfy.b1hw_to_mask(raw)
        disparity = normalize_disparity(raw, batch_stable=batch_stable)
        return _comfy.bchw_to_image(disparity), _comfy.b1hw_to_mask(disparity)


NODE_CLASS_MAPPINGS = {
    "BokehMeDepthModelLoader": BokehMeDepthModelLoader,
    "BokehMeEstimateDisparity": BokehMeEstimateDisparity,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "BokehMeDepthModelLoader": "BokehMe Depth Model Loader",
    "BokehMeEstimateDisparity": "BokehMe Estimate Disparity",
}

"""BokehMe neural renderer nodes: model loader, ARNet, IUNet and the all-in-one BokehMe node.

V1 node classes (they load in every ComfyUI and are testable without it). Layout conversion, progress,
interruption, devices and model folders all go through ``_comfy``; the math is in ``bokehme_core``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from ..bokehme_core import pipeline as core_pipeline
from ..bokehme_core.defocus import render_inputs, signed_defocus
from ..bokehme_core.neural import stages
from ..bokehme_core.neural.arnet import ARNet
from ..bokehme_core.neural.iunet import IUNet
from ..bokehme_core.weights import PROVENANCE, CheckpointError, load_arnet, load_bundled_models, load_iunet
from . import _comfy
from .lens import LENS_INPUT, check_lens
from .render import (
    CLASSICAL_MODE_TIP,
    HIGHLIGHT_TIP,
    RECOVER_INPUT,
    APERTURE_INPUTS,
    APERTURE_MASK_INPUT,
    FOCUS_INPUTS,
    RENDER_INPUTS,
    aperture_from_inputs,
    common_batch,
    focus_per_frame,
)

logger = logging.getLogger(__name__)

BUNDLED = "bundled"
OFFICIAL = "official (download if missing)"
MODELS_TYPE = "BOKEHME_MODELS"
#: the licence of the authors' ARNet / IUNet files, shown wherever they can be chosen
OFFICIAL_LICENCE = PROVENANCE["arnet"].licence
DEFOCUS_TYPE = "BOKEHME_DEFOCUS"


# --- model handle -----------------------------------------------------------------------------------------

@dataclass(eq=False)
class BokehMeModels:
    """The BOKEHME_MODELS handle: both networks (resting on the offload device) and where they came from."""

    arnet: ARNet
    iunet: IUNet
    arnet_source: str
    iunet_source: str

    def __repr__(self) -> str:
        return f"BokehMeModels(arnet={self.arnet_source!r}, iunet={self.iunet_source!r})"


@contextlib.contextmanager
def _models_on_device(models: BokehMeModels):
    """Both networks resident on ComfyUI's compute device for a run, through ComfyUI's model manager (which
    keeps them between runs while memory allows and evicts them when another model needs the room); cached
    GPU memory is released after the run, also when it fails or is cancelled."""
    if not isinstance(models, BokehMeModels):
        raise TypeError(f"models must come from the 'BokehMe Model Loader' node, got {type(models).__name__}")
    device = _comfy.load_models([models.arnet, models.iunet])
    try:
        yield models.arnet, models.iunet, device
    finally:
        _comfy.release_memory()


def _model_file_choices() -> list:
    """Weight files in the ``bokehme`` model folders (depth models in ``depth/`` are left out)."""
    return [name for name, _ in _comfy.list_model_files("bokehme") if not name.startswith("depth/")]


def _load_choice(choice: str, kind: str):
    """Load ARNet (``kind="arnet"``) or IUNet from a loader choice; returns (network on CPU, description)."""
    loader = load_arnet if kind == "arnet" else load_iunet
    if choice == BUNDLED:
        try:
            arnet, iunet = load_bundled_models("cpu")
        except FileNotFoundError as exc:
            raise RuntimeError(
                f"BokehMe Model Loader: {exc}. In ComfyUI: choose '{OFFICIAL}' instead, or put weight files "
                f"into models/bokehme/ and pick them in the list."
            ) from exc
        return (arnet if kind == "arnet" else iunet), BUNDLED
    if choice == OFFICIAL:
        path = _comfy.official_weights_path(kind, "BokehMe Model Loader")
        logger.warning("BokehMe Model Loader: the official %s weights are used (%s)", kind, PROVENANCE[kind].licence)
    else:
        found = dict(_comfy.list_model_files("bokehme"))
        if choice not in found:
            raise FileNotFoundError(
                f"BokehMe Model Loader: {kind} file {choice!r} is not in the model folders "
                f"{[str(d) for d in _comfy.model_dirs('bokehme')]}; refresh the page or pick another file"
            )
        path = found[choice]
    try:
        return loader(path, device="cpu"), str(choice)
    except CheckpointError as exc:
        raise ValueError(f"BokehMe Model Loader: the {kind} choice {choice!r} is not usable: {exc}") from exc


# --- shared inputs ----------------------------------------------------------------------------------------

_TILE_TIP = (
    "Network passes run in tiles of this many pixels (exact: tiles overlap by the receptive field). "
    "Lower it if you run out of memory on very large images."
)
_RESIZE_TIP = "Resize a disparity map of another size to the image (bilinear) instead of stopping with an error."
_ERROR_MODE_TIP = (
    "The classical renderer this error map will be fused with. 'layered' (default; the occlusion-aware mode): "
    "ARNet's map restricted to where that renderer has to guess (background revealed by a blurred foreground); "
    "'exact' / 'fast': ARNet's map as is (official)."
)


def _common_inputs() -> dict:
    """models + the classical render node's image / disparity / K / focus / gamma widgets (same names, ranges
    and tooltips), without the focus pull (the two-stage nodes need one ARNet size per batch)."""
    return {
        "models": (MODELS_TYPE, {"tooltip": "Networks from 'BokehMe Model Loader'."}),
        **RENDER_INPUTS,
        "focus": FOCUS_INPUTS["focus"],
        "gamma": FOCUS_INPUTS["gamma"],
    }


def _inputs_bchw(image, disparity, resize_disparity: bool = False):
    """IMAGE + disparity IMAGE/MASK -> (B,3,H,W), (B,1,H,W) float32 (CPU), one batch size."""
    return common_batch(_comfy.image_to_bchw(image, "image"), _comfy.map_to_b1hw(disparity, "disparity"),
                        resize_disparity)


# --- nodes ------------------------------------------------------------------------------------------------

class BokehMeModelLoader:
    """Loads ARNet and IUNet into a BOKEHME_MODELS handle."""

    DESCRIPTION = (
        "Loads the BokehMe neural renderer: ARNet (renders bokeh and the error map at low resolution) and IUNet "
        "(upsamples it). 'bundled' = weights trained and shipped with this pack (Apache-2.0); 'official' = the "
        "authors' checkpoints, downloaded from github.com/JuewenPeng/BokehMe into models/bokehme/ if missing, "
        f"under their licence ({OFFICIAL_LICENCE}); or any .pth / .safetensors file in models/bokehme/."
    )
    CATEGORY = _comfy.CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (MODELS_TYPE,)
    RETURN_NAMES = ("models",)
    OUTPUT_TOOLTIPS = ("Both networks; connect to the BokehMe, BokehMe ARNet and BokehMe IUNet nodes.",)

    @classmethod
    def INPUT_TYPES(cls):
        choices = [BUNDLED, OFFICIAL] + _model_file_choices()
        return {
            "required": {
                "arnet": (choices, {"default": BUNDLED, "tooltip": "ARNet weights: bundled (this pack's, Apache-2.0), "
                                    "official (downloads arnet.pth, ~11 MB, if missing; "
                                    f"{OFFICIAL_LICENCE}) or a file in models/bokehme/."}),
                "iunet": (choices, {"default": BUNDLED, "tooltip": "IUNet weights: bundled (this pack's, Apache-2.0), "
                                    "official (downloads iunet.pth, ~3 MB, if missing; "
                                    f"{OFFICIAL_LICENCE}) or a file in models/bokehme/."}),
            }
        }

    def load(self, arnet, iunet):
        arnet_net, arnet_source = _load_choice(arnet, "arnet")
        iunet_net, iunet_source = _load_choice(iunet, "iunet")
        offload = _comfy.offload_device()
        return (BokehMeModels(arnet_net.to(offload), iunet_net.to(offload), arnet_source, iunet_source),)


class BokehMeARNet:
    """ARNet alone: low-resolution neural bokeh and the full-resolution error map."""

    DESCRIPTION = (
        "First stage of the neural renderer: ARNet renders the bokeh at a reduced size (so that the largest "
        "blur is about 10 px there) and predicts the error map (where the classical renderer is wrong). Feed "
        "its low-res bokeh to 'BokehMe IUNet' and its error map to 'BokehMe Fuse'."
    )
    CATEGORY = _comfy.CATEGORY_STAGES
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("lowres_bokeh", "error_map")
    OUTPUT_TOOLTIPS = (
        "Low-resolution neural bokeh, IMAGE in [0,1], 1/s of the input size (s = max blur radius / 10 px, >= 1).",
        "Error map at full resolution, MASK in [0,1]: 1 = use the neural result, 0 = the classical one.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": _common_inputs(),
            "optional": {
                "highlight": ("BOOLEAN", {"default": False, "advanced": True, "tooltip": HIGHLIGHT_TIP}),
                "resize_disparity": ("BOOLEAN", {"default": False, "advanced": True, "tooltip": _RESIZE_TIP}),
                **RECOVER_INPUT,
                "classical_mode": (list(core_pipeline.CLASSICAL_MODES), {"default": "layered", "advanced": True,
                                                                        "tooltip": _ERROR_MODE_TIP}),
            },
        }

    def run(self, models, image, disparity, K, focus, gamma, highlight=False, resize_disparity=False,
            recover_highlights=True, classical_mode="layered"):
        from ..bokehme_core.error_map import error_gate

        image_t, disparity_t = _inputs_bchw(image, disparity, resize_disparity)
        progress = _comfy.progress_callback(image_t.shape[0])
        bokeh_list, error_list = [], []
        with _models_on_device(models) as (arnet, _, device), torch.inference_mode():
            image_t, defocus_px = render_inputs(image_t.to(device), disparity_t.to(device), K, focus,
                                                highlight=highlight, recover=recover_highlights)
            for b in range(image_t.shape[0]):
                bokeh, error, _ = stages.arnet_stage(arnet, image_t[b : b + 1], defocus_px[b : b + 1], gamma)
                gate = error_gate(defocus_px[b : b + 1], classical_mode)
                if gate is not None:
                    error = error * gate
                bokeh_list.append(bokeh)
                error_list.append(error)
                progress(b + 1, image_t.shape[0])
        sizes = {tuple(b.shape[-2:]) for b in bokeh_list}
        if len(sizes) > 1:
            raise ValueError(
                f"the images of this batch need different ARNet sizes {sorted(sizes)} (their largest blur "
                f"differs): use the all-in-one 'BokehMe' node, or render the images one by one"
            )
        return _comfy.bchw_to_image(torch.cat(bokeh_list)), _comfy.b1hw_to_mask(torch.cat(error_list))


class BokehMeIUNet:
    """IUNet alone: iterative upsampling of the ARNet bokeh to full resolution."""

    DESCRIPTION = (
        "Second stage of the neural renderer: IUNet doubles the resolution of the ARNet bokeh step by step up to "
        "the full size, keeping sharp what is in focus. Use the same image, disparity, K, focus and gamma as "
        "for 'BokehMe ARNet'."
    )
    CATEGORY = _comfy.CATEGORY_STAGES
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("neural_bokeh",)
    OUTPUT_TOOLTIPS = ("Neural bokeh at full resolution, IMAGE in [0,1].",)

    @classmethod
    def INPUT_TYPES(cls):
        inputs = _common_inputs()
        inputs["lowres_bokeh"] = ("IMAGE", {"tooltip": "The 'lowres_bokeh' output of 'BokehMe ARNet'."})
        return {
            "required": inputs,
            "optional": {
                "dilated_defocus": (DEFOCUS_TYPE, {"tooltip": (
                    "Dilated signed defocus in px from 'BokehMe Classical Render' (where the blend masks come "
                    "from). If not connected it is computed here with the same dilation.")}),
                "highlight": ("BOOLEAN", {"default": False, "advanced": True, "tooltip": HIGHLIGHT_TIP}),
                "resize_disparity": ("BOOLEAN", {"default": False, "advanced": True, "tooltip": _RESIZE_TIP}),
                **RECOVER_INPUT,
            },
        }

    def run(self, models, image, disparity, K, focus, gamma, lowres_bokeh, dilated_defocus=None, highlight=False,
            resize_disparity=False, recover_highlights=True):
        image_t, disparity_t = _inputs_bchw(image, disparity, resize_disparity)
        batch = image_t.shape[0]
        coarse = _comfy.image_to_bchw(lowres_bokeh, "lowres_bokeh")
        if coarse.shape[0] not in (1, batch):
            raise ValueError(f"lowres_bokeh batch ({coarse.shape[0]}) must be 1 or the image batch ({batch})")
        coarse = coarse.expand(batch, -1, -1, -1)
        progress = _comfy.progress_callback(batch)
        outputs = []
        with _models_on_device(models) as (_, iunet, device), torch.inference_mode():
            image_t, defocus_px = render_inputs(image_t.to(device), disparity_t.to(device), K, focus,
                                                highlight=highlight, recover=recover_highlights)
            dilated = None if dilated_defocus is None else _check_defocus(dilated_defocus, image_t).to(device)
            for b in range(batch):
                try:
                    outputs.append(stages.iunet_stage(
                        iunet, image_t[b : b + 1], defocus_px[b : b + 1], None if dilated is None else dilated[b : b + 1],
                        coarse[b : b + 1].to(device), None, gamma, progress=_comfy.check_interrupted,
                    ))
                except ValueError as exc:
                    raise ValueError(f"BokehMe IUNet: {exc}; connect 'BokehMe ARNet' run with the same image, "
                                     f"disparity, K and focus") from exc
                progress(b + 1, batch)
        return (_comfy.bchw_to_image(torch.cat(outputs)),)


def _check_defocus(value, image_t: torch.Tensor) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.ndim != 4 or value.shape[1] != 1:
        raise TypeError(f"dilated_defocus must be a BOKEHME_DEFOCUS (B,1,H,W) tensor, got {getattr(value, 'shape', type(value))}")
    if tuple(value.shape[-2:]) != tuple(image_t.shape[-2:]) or value.shape[0] not in (1, image_t.shape[0]):
        raise ValueError(
            f"dilated_defocus {tuple(value.shape)} does not match the image {tuple(image_t.shape)}: connect the "
            f"output of 'BokehMe Classical Render' run on the same image"
        )
    return value.to(torch.float32).expand(image_t.shape[0], -1, -1, -1)


class BokehMe:
    """The whole BokehMe pipeline in one node."""

    DESCRIPTION = (
        "BokehMe (Peng et al., CVPR 2022): photo-realistic lens blur from one image and a disparity map. A "
        "classical scatter renderer and a neural renderer (ARNet + IUNet) are fused through an error map, so "
        "depth edges stay clean even with an imperfect disparity map."
    )
    CATEGORY = _comfy.CATEGORY
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE", "MASK", "MASK")
    RETURN_NAMES = ("bokeh", "error_map", "in_focus")
    OUTPUT_TOOLTIPS = (
        "The rendered bokeh, IMAGE in [0,1].",
        "Error map used for the fusion, MASK in [0,1]: 1 = neural result used, 0 = classical.",
        "What stays sharp, MASK in [0,1]: 1 where the blur radius is <= 0.5 px, 0 from 1.5 px.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "models": (MODELS_TYPE, {"tooltip": "Networks from 'BokehMe Model Loader'."}),
                **RENDER_INPUTS, **FOCUS_INPUTS, **APERTURE_INPUTS,
                "classical_mode": (list(core_pipeline.CLASSICAL_MODES), {"default": "layered", "advanced": True,
                                                                        "tooltip": CLASSICAL_MODE_TIP}),
                "highlight": ("BOOLEAN", {"default": False, "advanced": True, "tooltip": HIGHLIGHT_TIP}),
                "error_map": (list(core_pipeline.ERROR_MAP_CHOICES), {"default": "predicted", "advanced": True, "tooltip": (
                    "Fusion weights: 'predicted' = ARNet's error map (official, recommended; with the layered "
                    "classical mode restricted to where that renderer has to guess hidden background); 'analytic' = "
                    "computed from the disparity (paper Eq. 5, for the chosen classical mode), no network guess: "
                    "lower quality than 'predicted' on path-traced scenes (bench/README.md); useful with hand-checked disparity or to "
                    "see where the classical renderer fails.")}),
                "resize_disparity": ("BOOLEAN", {"default": False, "advanced": True, "tooltip": _RESIZE_TIP}),
            },
            "optional": {
                **APERTURE_MASK_INPUT,
                **LENS_INPUT,
                "tile_size": ("INT", {"default": stages.DEFAULT_TILE_SIZE, "min": 64, "max": 8192,
                                      "step": 64, "advanced": True, "tooltip": _TILE_TIP}),
                **RECOVER_INPUT,
            },
        }

    def render(self, models, image, disparity, K, focus, focus_end, gamma, aperture, blades, rotation_deg,
               anamorphic, classical_mode, highlight, error_map, resize_disparity, aperture_mask=None,
               tile_size=stages.DEFAULT_TILE_SIZE, lens=None, recover_highlights=True):
        from ..bokehme_core.preview import in_focus_mask

        image_t, disparity_t = _inputs_bchw(image, disparity, resize_disparity)
        aperture_obj = aperture_from_inputs(aperture, blades, rotation_deg, anamorphic, aperture_mask)
        lens = check_lens(lens, "BokehMe")
        defocus_of = signed_defocus if lens is None else lens.signed_defocus  # for the in-focus mask
        batch = image_t.shape[0]
        focus_values = focus_per_frame(focus, focus_end, batch)
        progress = _comfy.frame_progress(batch)
        bokeh, error, in_focus = [], [], []
        with _models_on_device(models) as (arnet, iunet, device):
            for i in range(batch):  # frame by frame: bounded memory for long batches, and interruptible
                frame, frame_disp = image_t[i : i + 1].to(device), disparity_t[i : i + 1].to(device)
                result = core_pipeline.render_bokehme(
                    frame, frame_disp, K=K, focus=focus_values[i : i + 1], gamma=gamma, arnet=arnet, iunet=iunet,
                    highlight=highlight, aperture=aperture_obj, classical_mode=classical_mode, error_map=error_map,
                    tile_size=int(tile_size), progress=progress(i), lens=lens, recover_highlights=recover_highlights,
                )
                bokeh.append(result.bokeh.cpu())
                error.append(result.error_map.cpu())
                in_focus.append(in_focus_mask(defocus_of(frame_disp, K, focus_values[i : i + 1])).cpu())
        return (
            _comfy.bchw_to_image(torch.cat(bokeh)),
            _comfy.b1hw_to_mask(torch.cat(error)),
            _comfy.b1hw_to_mask(torch.cat(in_focus)),
        )


NODE_CLASS_MAPPINGS = {
    "BokehMeModelLoader": BokehMeModelLoader,
    "BokehMeARNet": BokehMeARNet,
    "BokehMeIUNet": BokehMeIUNet,
    "BokehMe": BokehMe,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "BokehMeModelLoader": "BokehMe Model Loader",
    "BokehMeARNet": "BokehMe ARNet",
    "BokehMeIUNet": "BokehMe IUNet",
    "BokehMe": "BokehMe",
}

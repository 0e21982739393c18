"""The one place where ComfyUI layouts and services meet the core library.

ComfyUI IMAGE tensors are (B, H, W, C) float in [0, 1] and MASK tensors are (B, H, W); the core speaks
(B, C, H, W). Every node converts here, once, at its edge.

ComfyUI services (progress bar, interruption, devices, model folders) are imported lazily: inside ComfyUI
they are the real ones; outside it (tests, headless use of the node classes) progress is not shown, nothing
can be interrupted and the device is the CPU. That is the documented headless behaviour, not an error path.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

logger = logging.getLogger(__name__)

# Node menu: the everyday nodes at the top, the pipeline's single stages (for custom pipelines) and the depth
# nodes one level down. Categories only place nodes in the menu; saved workflows store node ids, not these.
CATEGORY = "image/bokeh"
CATEGORY_STAGES = "image/bokeh/stages"
CATEGORY_DEPTH = "image/bokeh/depth"


# --- layout conversion -----------------------------------------------------------------------------------

def image_to_bchw(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    """ComfyUI IMAGE (B,H,W,C) -> (B,3,H,W) float32. Alpha is dropped, grayscale is repeated to RGB."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be an IMAGE tensor, got {type(image).__name__}")
    if image.ndim == 3:  # a single image without batch dim, as some custom nodes produce
        image = image.unsqueeze(0)
    if image.ndim != 4:
        raise ValueError(f"{name} must be an IMAGE (B,H,W,C), got shape {tuple(image.shape)}")
    if image.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch: connect a node that outputs at least one image")
    c = image.shape[-1]
    if c == 4:
        image = image[..., :3]
    elif c == 1:
        image = image.expand(-1, -1, -1, 3)
    elif c != 3:
        raise ValueError(f"{name} must have 1, 3 or 4 channels (B,H,W,C), got shape {tuple(image.shape)}")
    # (B,H,W,C) -> (B,C,H,W)
    return image.permute(0, 3, 1, 2).to(torch.float32).contiguous()


def bchw_to_image(x: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) with C in {1,3} -> ComfyUI IMAGE (B,H,W,3) float32 on ComfyUI's intermediate device (the CPU
    unless ComfyUI runs with --gpu-only; the CPU outside ComfyUI), clamped to [0,1]."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    # (B,C,H,W) -> (B,H,W,C)
    return x.clamp(0, 1).permute(0, 2, 3, 1).to(intermediate_device(), torch.float32).contiguous()


def mask_to_b1hw(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """ComfyUI MASK (B,H,W) or (H,W) -> (B,1,H,W) float32."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a MASK tensor, got {type(mask).__name__}")
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise ValueError(f"{name} must be a MASK (B,H,W), got shape {tuple(mask.shape)}")
    if mask.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    return mask.unsqueeze(1).to(torch.float32).contiguous()


def b1hw_to_mask(x: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) -> ComfyUI MASK (B,H,W) float32 on ComfyUI's intermediate device (see :func:`bchw_to_image`)."""
    return x[:, 0].to(intermediate_device(), torch.float32).contiguous()


def map_to_b1hw(value: torch.Tensor, name: str) -> torch.Tensor:
    """A one-channel map given as IMAGE (B,H,W,C: the first channel is used; a gray image has three equal
    channels) or MASK (B,H,W) -> (B,1,H,W) float32."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be an IMAGE or MASK tensor, got {type(value).__name__}")
    if value.ndim == 4:
        if value.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch")
        # IMAGE (B,H,W,C) -> first channel as (B,1,H,W)
        return value[..., :1].permute(0, 3, 1, 2).to(torch.float32).contiguous()
    return mask_to_b1hw(value, name)


# --- ComfyUI services -------------------------------------------------------------------------------------

def progress_callback(total: int) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback for the core: drives ComfyUI's progress bar and raises ComfyUI's
    interruption exception when the user cancels. Outside ComfyUI it does nothing."""
    try:
        import comfy.model_management as mm
        import comfy.utils
    except ImportError:
        return lambda done, total: None
    bar = comfy.utils.ProgressBar(max(int(total), 1))

    def progress(done: int, total: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(int(done), int(total))

    return progress


def frame_progress(batch: int, units: int = 1000) -> Callable[[int], Callable[[int, int], None]]:
    """Progress for a batch rendered frame by frame: ``frame_progress(batch)(i)`` is the ``progress(done, total)``
    callback of frame ``i``. The core calls it within the frame (row bands, slabs, network passes), so the bar
    moves and Cancel stops the render inside a frame, not only between frames."""
    bar = progress_callback(batch * units)

    def for_frame(i: int) -> Callable[[int, int], None]:
        def progress(done: int, total: int) -> None:
            bar(i * units + (units * min(done, total) // total if total > 0 else 0), batch * units)

        return progress

    return for_frame


def check_interrupted() -> None:
    """Raise ComfyUI's interruption exception if the user pressed cancel (no-op outside ComfyUI)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


def torch_device() -> torch.device:
    """The device ComfyUI chose (CUDA, MPS, CPU...); the CPU outside ComfyUI."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return torch.device("cpu")
    return mm.get_torch_device()


def intermediate_device() -> torch.device:
    """Where ComfyUI keeps IMAGE / MASK values between nodes (``model_management.intermediate_device()``: the
    CPU unless --gpu-only); the CPU outside ComfyUI."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return torch.device("cpu")
    return mm.intermediate_device()


def release_memory() -> None:
    """Give cached GPU memory back after a run, as ComfyUI's own nodes do (``soft_empty_cache``); no-op
    outside ComfyUI."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.soft_empty_cache()


def load_models(modules, memory_required: int = 0) -> torch.device:
    """Make networks resident on ComfyUI's compute device through ComfyUI's own model manager and return that
    device.

    Inside ComfyUI each network is wrapped once in a ``comfy.model_patcher`` patcher (as ComfyUI wraps its
    upscale and CLIP-vision models) and loaded with ``model_management.load_models_gpu``: ComfyUI frees room
    for it first, keeps it between runs while memory allows, and moves it back to the offload device when a
    diffusion model (or anything else) needs the memory. Outside ComfyUI the networks are moved to the CPU.
    ``memory_required``: bytes of working memory the caller expects to need beside the weights.
    """
    try:
        import comfy.model_management as mm
        import comfy.model_patcher as mp
    except ImportError:
        device = torch_device()
        for module in modules:
            module.to(device)
        return device
    device = mm.get_torch_device()
    patcher_class = getattr(mp, "CoreModelPatcher", None) or mp.ModelPatcher
    patchers = []
    for module in modules:
        patcher = getattr(module, "_bokehme_patcher", None)
        if patcher is None or patcher.load_device != device:
            patcher = patcher_class(module, load_device=device, offload_device=mm.unet_offload_device())
            module._bokehme_patcher = patcher  # one patcher per network: ComfyUI recognises it as loaded
        patchers.append(patcher)
    mm.load_models_gpu(patchers, memory_required=int(memory_required))
    return device


def offload_device() -> torch.device:
    """Where weights rest between runs (ComfyUI's offload device; the CPU outside ComfyUI)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return torch.device("cpu")
    return mm.unet_offload_device()


# --- model folders ----------------------------------------------------------------------------------------

_FOLDERS = {
    # kind -> (ComfyUI folder names, sub-folder of models/ for each)
    "bokehme": ("bokehme",),
    "bokehme_depth": ("bokehme_depth", "depthanything"),
}
_DEFAULT_SUBDIR = {"bokehme": "bokehme", "bokehme_depth": "bokehme/depth", "depthanything": "depthanything"}


def model_dirs(kind: str) -> list:
    """Folders searched for model files of ``kind`` ("bokehme" or "bokehme_depth").

    Inside ComfyUI: ``models/bokehme/`` (resp. ``models/bokehme/depth/`` and ``models/depthanything/``) plus any
    path the user registered for those names in ``extra_model_paths.yaml``. Outside ComfyUI: the user cache
    dir (``bokehme_core.paths.user_cache_dir()``, resp. its ``depth/`` sub-folder).
    """
    import pathlib

    from ..bokehme_core.paths import user_cache_dir

    if kind not in _FOLDERS:
        raise ValueError(f"unknown model kind {kind!r}, expected one of {sorted(_FOLDERS)}")
    try:
        import folder_paths
    except ImportError:
        return [user_cache_dir() / ("depth" if kind == "bokehme_depth" else "")]
    dirs = []
    for name in _FOLDERS[kind]:
        default = pathlib.Path(folder_paths.models_dir) / _DEFAULT_SUBDIR[name]
        dirs.append(default)
        try:
            dirs.extend(pathlib.Path(p) for p in folder_paths.get_folder_paths(name))
        except KeyError:  # name not registered by the user or another pack: only the default folder
            pass
    unique = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def list_model_files(kind: str, exts=(".safetensors", ".pth", ".pt")) -> list:
    """Model files of ``kind`` found in :func:`model_dirs`, as sorted (name, path) pairs; names are relative
    to their folder, so they are stable across machines for saved workflows."""
    found = {}
    for d in model_dirs(kind):
        if not d.is_dir():
            continue
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.suffix.lower() in exts:
                found.setdefault(p.relative_to(d).as_posix(), p)
    return sorted(found.items())


def official_weights_path(name: str, node: str):
    """The official weights file ``name`` (a key of ``bokehme_core.weights.PROVENANCE``) in its model folders
    (:func:`model_dirs`), downloaded into the first folder with ComfyUI's progress bar if it is missing.

    ``node`` (the node's display name) starts the error message of a failed download."""
    from ..bokehme_core.weights import PROVENANCE, WeightsDownloadError, download_weights

    source = PROVENANCE[name]
    dirs = model_dirs("bokehme_depth" if source.network == "depth" else "bokehme")
    for folder in dirs:
        if (folder / source.filename).is_file():
            return folder / source.filename
    logger.info("BokehMe: %s not found in %s, downloading", source.filename, [str(d) for d in dirs])
    bar = progress_callback(100)
    try:
        if source.network == "depth":  # the depth loader verifies depth files
            from ..bokehme_core.depth import download_depth_model as download_weights
        return download_weights(name, dirs[0], progress=lambda d, t: bar(d * 100 // t if t else 0, 100))
    except WeightsDownloadError as exc:
        raise RuntimeError(f"{node}: {exc}; then run the workflow again.") from exc

"""Reading depth checkpoints safely, detecting the architecture from the keys, strict loading.

Supported (official key layouts only, ``.pth``/``.pt`` read with ``torch.load(weights_only=True)`` or the same
tensors as ``.safetensors``, fp16 or fp32, optionally wrapped as ``{"model": state_dict}``):

* Depth Anything V2 ``depth_anything_v2_vit{s,b,l}.pth`` (relative depth; not the metric-depth fine-tunes);
* MiDaS v3 ``dpt_hybrid_384.pt`` and ``dpt_large_384.pt``.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re

import torch

from ..weights import CheckpointError, WeightsDownloadError, check_state_dict, download_weights
from ..weights import read_state_dict as _read_weights
from .dpt_blocks import rename_keys

logger = logging.getLogger(__name__)

__all__ = [
    "DepthCheckpointError",
    "DepthDownloadError",
    "read_state_dict",
    "detect_architecture",
    "build_model",
    "official_key_table",
    "load_depth_model",
    "download_depth_model",
    "model_from_state_dict",
    "to_official_state_dict",
]

SUPPORTED_TEXT = (
    "supported: Depth Anything V2 depth_anything_v2_vits/vitb/vitl.pth (or the same tensors as .safetensors) "
    "and MiDaS v3 dpt_hybrid_384.pt / dpt_large_384.pt"
)


class DepthCheckpointError(CheckpointError):
    """The file is not a readable checkpoint of a supported depth network (the message says why)."""


#: downloads of depth models fail with the pack's one download error
DepthDownloadError = WeightsDownloadError


def read_state_dict(path) -> dict:
    """Read a depth checkpoint into a flat {name: tensor} dict on the CPU, safely (no pickled code): the pack's
    one reader (:func:`bokehme_core.weights.read_state_dict`) with depth-model messages.

    Raises:
        FileNotFoundError: the file does not exist.
        DepthCheckpointError: unreadable / truncated / not a state dict.
    """
    return _read_weights(path, what="depth model", error=DepthCheckpointError)


def download_depth_model(name: str, dest_dir, *, url: str | None = None, progress=None, timeout: float = 60.0):
    """Download an official depth checkpoint (a depth entry of :data:`bokehme_core.weights.PROVENANCE`, e.g.
    "depth_anything_v2_vits") into ``dest_dir`` and return its path; see
    :func:`bokehme_core.weights.download_weights` (atomic, verified by a strict load as that variant)."""

    def verify_load(path) -> str | None:
        variant = load_depth_model(path).variant
        expected = name.rsplit("_", 1)[-1]
        return None if variant == expected else f"it is the {variant} variant, expected {expected}"

    return download_weights(name, dest_dir, url=url, progress=progress, timeout=timeout, networks=("depth",),
                            verify_load=verify_load)


def _shape(sd: dict, key: str):
    t = sd.get(key)
    return tuple(t.shape) if isinstance(t, torch.Tensor) else None


def detect_architecture(state_dict: dict, name: str = "checkpoint") -> tuple:
    """(family, variant) from the official key names and shapes.

    Returns ("depth_anything_v2", "vits"|"vitb"|"vitl") or ("midas_dpt", "dpt_hybrid"|"dpt_large").
    Raises DepthCheckpointError naming what was found for anything else.
    """
    da_patch = _shape(state_dict, "pretrained.patch_embed.proj.weight")
    if da_patch is not None and "depth_head.scratch.output_conv1.weight" in state_dict:
        dims = {384: "vits", 768: "vitb", 1024: "vitl"}
        if len(da_patch) != 4 or da_patch[1:] != (3, 14, 14) or da_patch[0] not in dims:
            kind = "Depth Anything V2 Giant" if da_patch[:1] == (1536,) else "an unknown Depth Anything variant"
            raise DepthCheckpointError(
                f"{name} looks like {kind} (patch embedding {da_patch}); {SUPPORTED_TEXT}"
            )
        return "depth_anything_v2", dims[da_patch[0]]
    if "scratch.output_conv.0.weight" in state_dict:
        if "pretrained.model.patch_embed.backbone.stem.conv.weight" in state_dict:
            return "midas_dpt", "dpt_hybrid"
        vit_patch = _shape(state_dict, "pretrained.model.patch_embed.proj.weight")
        if vit_patch == (1024, 3, 16, 16) and "pretrained.model.blocks.23.norm1.weight" in state_dict:
            return "midas_dpt", "dpt_large"
        hint = "a BEiT / Swin / LeViT MiDaS v3.1 model" if any(
            ("relative_position" in k or "layers." in k or "stem_b4" in k) for k in state_dict
        ) else f"an unsupported MiDaS variant (patch embedding {vit_patch})"
        raise DepthCheckpointError(f"{name} looks like {hint}; {SUPPORTED_TEXT}")
    sample = ", ".join(list(state_dict)[:5])
    raise DepthCheckpointError(
        f"{name} is not a supported depth model (no Depth Anything V2 or MiDaS DPT keys; first keys: {sample}); "
        f"{SUPPORTED_TEXT}. Hugging Face transformers exports are not supported: use the original .pth"
    )


def build_model(family: str, variant: str, device=None):
    """An untrained module of the given architecture (random weights; ``device="meta"``: shapes only, no
    memory, instant: what the loader uses before assigning the checkpoint's tensors)."""
    if family == "depth_anything_v2":
        from .depth_anything_v2 import DepthAnythingV2 as cls
    elif family == "midas_dpt":
        from .midas_dpt import MiDaSDPT as cls
    else:
        raise ValueError(f"family must be 'depth_anything_v2' or 'midas_dpt', got {family!r}")
    if device is None:
        return cls(variant)
    with torch.device(device):
        return cls(variant)


def official_key_table(family: str, variant: str) -> list:
    """(official prefix, our prefix) pairs of the key-renaming converter."""
    if family == "depth_anything_v2":
        from .depth_anything_v2 import official_key_table as table
    elif family == "midas_dpt":
        from .midas_dpt import official_key_table as table
    else:
        raise ValueError(f"family must be 'depth_anything_v2' or 'midas_dpt', got {family!r}")
    return table(variant)


def to_official_state_dict(model) -> dict:
    """Our module's state dict renamed to the official key layout (the inverse converter)."""
    table = official_key_table(model.family, model.variant)
    return rename_keys(model.state_dict(), table, inverse=True, what=f"{model.family} module")


def load_depth_model(path, *, device="cpu", dtype: torch.dtype = torch.float32):
    """Load an official depth checkpoint strictly and return the network in eval mode.

    Args:
        path: a ``.pth`` / ``.pt`` / ``.safetensors`` file in an official key layout (see the module docstring).
        device: where to put the weights.
        dtype: torch.float32 (default) or torch.float16 / torch.bfloat16 (GPU).
    Returns:
        a :class:`~bokehme_core.depth.base.DepthModel` (``DepthAnythingV2`` or ``MiDaSDPT``): call it on
        the official preprocessed input (B,3,h,w) for the raw output (B,h,w), or use
        ``.estimate(image)`` on RGB (B,3,H,W) in [0,1] for disparity (B,1,H,W) in [0,1], 1 = near.
    Raises:
        FileNotFoundError, DepthCheckpointError (a ValueError) with the reason: unreadable file, unknown
        architecture, unexpected / missing keys (named), wrong shapes (named).
    """
    path = pathlib.Path(os.fspath(path)).expanduser()
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    if "metric" in path.name.lower():
        raise DepthCheckpointError(
            f"{path.name} looks like a metric-depth fine-tune (its head ends in a sigmoid scaled by a maximum "
            f"depth); only the relative-depth models are supported: {SUPPORTED_TEXT}"
        )
    if re.search(r"depth_anything_vit[slbg]14", path.name.lower()):
        raise DepthCheckpointError(
            f"{path.name} looks like Depth Anything V1 (same key names as V2, different network wiring): not "
            f"supported; {SUPPORTED_TEXT}"
        )
    model = model_from_state_dict(read_state_dict(path), path.name)
    logger.info("loaded %s %s from %s", model.family, model.variant, path)
    return model.to(device=device, dtype=dtype)


def model_from_state_dict(state: dict, name: str = "checkpoint"):
    """Build the network an official state dict describes and load it strictly (eval mode, float32, CPU).

    ``name`` is used in error messages. Raises DepthCheckpointError naming missing / unexpected / misshapen keys.
    """
    family, variant = detect_architecture(state, name)
    model = build_model(family, variant, device="meta")  # no random init: every tensor comes from the file
    try:
        ours = rename_keys(state, official_key_table(family, variant), what=name)
    except ValueError as exc:
        raise DepthCheckpointError(
            f"{exc} (detected {family} {variant}); is the file complete and unmodified?"
        ) from exc
    expected = model.state_dict()
    inverse = sorted(((b, a) for a, b in official_key_table(family, variant)), key=lambda p: len(p[0]), reverse=True)

    def official(key: str) -> str:
        return next((o + key[len(p):] for p, o in inverse if key.startswith(p)), key)

    check_state_dict(expected, ours, f"{name} ({family} {variant})", display_key=official,
                     error=DepthCheckpointError)
    ours = {k: v.to(torch.float32) for k, v in ours.items()}
    model.load_state_dict(ours, strict=True, assign=True)
    left_on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:  # a buffer that is not in the state dict: cannot happen for the supported architectures
        raise RuntimeError(f"internal error: tensors not loaded from the checkpoint: {left_on_meta[:5]}")
    return model.eval().requires_grad_(False)

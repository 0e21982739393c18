"""What every depth network of this package shares: the official resize rule, preprocessing and ``estimate``.

Both families predict relative inverse depth (disparity-like: larger = nearer, unknown scale and shift).
``model(x)`` is the raw network exactly like the official ``forward``; ``model.estimate(image)`` runs the
official inference pipeline (DA-V2 ``infer_image``, MiDaS ``run.py``) on an RGB batch in [0, 1] and returns
disparity at the input size.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._checks import check_choice, check_finite, check_image, check_range
from ..disparity import prepare_disparity

logger = logging.getLogger(__name__)

__all__ = ["DepthModel", "network_input_size", "resize_like_opencv_cubic"]


def resize_like_opencv_cubic(image: torch.Tensor, size: tuple) -> torch.Tensor:
    """(B,C,H,W) -> (B,C,h,w) with OpenCV ``INTER_CUBIC`` semantics (Keys cubic a=-0.75, pixel-centre
    alignment, edge replication, no antialiasing, no clamping): torch's bicubic with align_corners=False is the
    same filter (checked against OpenCV output in the tests, max difference ~5e-6)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=tuple(size), mode="bicubic", align_corners=False)


def _constrain_to_multiple(x: float, multiple: int, min_val: int = 0) -> int:
    # Round to the nearest multiple (ties to even, like numpy.round), then go up if below min_val.
    y = int(round(x / multiple) * multiple)
    if y < min_val:
        y = int(math.ceil(x / multiple) * multiple)
    return y


def network_input_size(height: int, width: int, target: int, multiple: int, method: str) -> tuple:
    """The official keep-aspect resize rule (``Resize`` of DA-V2 / MiDaS transforms), as (h, w).

    Args:
        height, width: input size in px.
        target: the processing resolution (DA-V2: 518, MiDaS DPT: 384).
        multiple: the network's size granularity (DA-V2: 14, MiDaS DPT: 32).
        method: "lower_bound" (DA-V2: the shorter side reaches at least ``target``) or "minimal" (MiDaS: scale
            by the factor closest to 1 of the two that map a side onto ``target``).
    Returns:
        (h, w): both multiples of ``multiple`` and >= ``multiple``.
    """
    check_choice(method, "method", ("lower_bound", "minimal"))
    scale_h = target / height
    scale_w = target / width
    if method == "lower_bound":
        scale = scale_w if scale_w > scale_h else scale_h
        h = _constrain_to_multiple(scale * height, multiple, min_val=target)
        w = _constrain_to_multiple(scale * width, multiple, min_val=target)
    else:
        scale = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h
        h = _constrain_to_multiple(scale * height, multiple)
        w = _constrain_to_multiple(scale * width, multiple)
    # A side that rounds to 0 (an extreme aspect ratio) cannot run: the official code would fail there.
    return max(h, multiple), max(w, multiple)


class DepthModel(nn.Module):
    """Base class: a relative inverse-depth network with the official preprocessing.

    Subclasses set the class attributes and implement ``forward(x) -> (B, h, w)``.
    """

    family: str = ""
    variant: str = ""
    patch_multiple: int = 14
    default_processing_res: int = 518
    resize_method: str = "lower_bound"
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    output_mode: str = "bilinear"
    output_align_corners: bool = True
    license: str = ""

    def network_input_size(self, height: int, width: int, processing_res: int | None = None) -> tuple:
        """(h, w) of the network input for an image of ``height`` x ``width`` (the official rule)."""
        target = self.default_processing_res if processing_res is None else processing_res
        target = int(check_range(target, "processing_res", self.patch_multiple, 8192))
        h, w = network_input_size(height, width, target, self.patch_multiple, self.resize_method)
        if max(h, w) > 16384:
            raise ValueError(
                f"the network input would be {h} x {w} px for the image {height} x {width} at processing_res "
                f"{target}: the aspect ratio is too extreme; crop the image or lower processing_res"
            )
        return h, w

    def preprocess(self, image: torch.Tensor, processing_res: int | None = None) -> torch.Tensor:
        """RGB (B,3,H,W) in [0,1] -> the official network input (B,3,h,w): bicubic resize (OpenCV INTER_CUBIC
        semantics: a=-0.75, pixel centres, no antialiasing, values not clamped), then (x - mean) / std."""
        check_image(image)
        h, w = self.network_input_size(image.shape[-2], image.shape[-1], processing_res)
        x = resize_like_opencv_cubic(image.to(torch.float32), (h, w))
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def postprocess(self, raw: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Raw output (B,h,w) -> (B,1,height,width) float32, resized the official way (DA-V2: bilinear with
        align_corners=True; MiDaS: bicubic, align_corners=False)."""
        out = raw.to(torch.float32).unsqueeze(1)
        if self.output_mode == "bilinear":
            return F.interpolate(out, size=(height, width), mode="bilinear", align_corners=True)
        return F.interpolate(out, size=(height, width), mode="bicubic", align_corners=False)

    @torch.inference_mode()
    def estimate(
        self,
        image: torch.Tensor,
        normalize: bool = True,
        processing_res: int | None = None,
        *,
        batch_stable: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Estimate disparity for an RGB batch.

        Args:
            image: (B,3,H,W) sRGB in [0,1], any size >= 1 px.
            normalize: True: disparity in [0,1] (1 = near), min-max per image (or per batch with
                ``batch_stable``) with an epsilon; False: the raw network output (relative inverse depth,
                >= 0, unknown scale) resized to H x W the official way.
            processing_res: the network's working resolution (None: the official default, 518 for DA-V2 with
                the shorter side >= it, 384 for MiDaS DPT); the input is resized keeping its aspect ratio to
                multiples of 14 (DA-V2) or 32 (DPT).
            batch_stable: with ``normalize``, one range for the whole batch (video: no flicker).
            progress: ``progress(done, total)`` called after each image.
        Returns:
            (B,1,H,W) float32 on the image's device.
        """
        check_image(image)
        batch, _, height, width = image.shape
        param = next(self.parameters())
        outputs = []
        for i in range(batch):
            x = self.preprocess(image[i : i + 1].to(param.device), processing_res).to(param.dtype)
            raw = self(x)
            outputs.append(self.postprocess(raw, height, width))
            if progress is not None:
                progress(i + 1, batch)
        out = torch.cat(outputs, dim=0).to(image.device)
        check_finite(out, "depth network output (try precision fp32)")
        if not normalize:
            return out
        return prepare_disparity(out, mode="disparity", batch_stable=batch_stable, repair=False,
                                 what="depth network output")

    def extra_repr(self) -> str:
        return f"family={self.family!r}, variant={self.variant!r}"

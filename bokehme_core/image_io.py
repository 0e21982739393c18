"""Reading and writing RGB image files as (1,3,H,W) float tensors in [0,1]."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported lazily by the functions
    import torch

__all__ = ["read_image", "write_image"]


def read_image(path) -> "torch.Tensor":
    """Read an RGB image file as (1,3,H,W) float32 in [0,1] (alpha dropped, gray repeated, 16-bit kept)."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.array(im, dtype=np.float32) / 65535.0
                array = np.repeat(array[..., None], 3, axis=2)
            else:
                array = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]


def write_image(tensor, path) -> pathlib.Path:
    """Write (1,3,H,W) or (3,H,W) in [0,1] as an 8-bit image (format from the suffix)."""
    import numpy as np
    from PIL import Image

    path = pathlib.Path(path)
    if tensor.ndim == 4:
        tensor = tensor[0]
    array = (tensor.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(array).save(path, **options)
    return path

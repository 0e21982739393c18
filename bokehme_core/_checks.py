"""Argument checks shared by the core library.

Every public function validates its inputs through these helpers so that a bad input fails early with a
message naming the argument, what was expected and what was received, instead of deep inside torch.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = [
    "check_tensor",
    "check_image",
    "check_disparity",
    "check_same_spatial",
    "check_range",
    "check_finite",
    "check_focus",
    "check_choice",
]


def _shape(t: torch.Tensor) -> str:
    return "(" + ",".join(str(s) for s in t.shape) + ")"


def check_tensor(value, name: str) -> torch.Tensor:
    """Raise ``TypeError`` unless ``value`` is a floating point tensor."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor (values in [0,1]), got dtype {value.dtype}")
    return value


def check_image(image, name: str = "image", channels: int = 3) -> torch.Tensor:
    """Check an image tensor of shape (B, C, H, W), B >= 1, H, W >= 1."""
    check_tensor(image, name)
    if image.ndim != 4:
        raise ValueError(f"{name} must be (B,{channels},H,W), got {image.ndim} dims {_shape(image)}")
    if image.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch {_shape(image)}: pass at least one image")
    if image.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels (B,{channels},H,W), got {_shape(image)}")
    if image.shape[2] == 0 or image.shape[3] == 0:
        raise ValueError(f"{name} has an empty spatial size {_shape(image)}")
    return image


def check_disparity(disparity, name: str = "disparity") -> torch.Tensor:
    """Check a one-channel map of shape (B, 1, H, W)."""
    return check_image(disparity, name, channels=1)


def check_same_spatial(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str, batch: str = "broadcast") -> None:
    """Check that ``b`` matches ``a`` in H, W and (unless broadcastable) in batch size.

    ``batch="broadcast"`` accepts a batch of 1 on either side; ``batch="equal"`` requires the same batch size.
    """
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(
            f"{name_b} must be (B,{b.shape[1]},H,W) matching {name_a} {_shape(a)} in H and W, got {_shape(b)}; "
            f"resize one of them first"
        )
    ba, bb = a.shape[0], b.shape[0]
    if ba != bb and not (batch == "broadcast" and (ba == 1 or bb == 1)):
        raise ValueError(
            f"{name_b} batch size {bb} does not match {name_a} batch size {ba}: pass one map for all "
            f"images or one per image"
        )


def check_range(value: float, name: str, lo: float | None = None, hi: float | None = None) -> float:
    """Check that a python number is finite and within [lo, hi]."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ValueError(f"{name} must be in [{lo_s}, {hi_s}], got {value:g}")
    return value


def check_finite(t: torch.Tensor, name: str) -> torch.Tensor:
    """Raise if ``t`` holds NaN or inf (use :func:`bokehme_core.repair_nonfinite` to repair disparity)."""
    if not torch.isfinite(t).all():
        n = int((~torch.isfinite(t)).sum())
        raise ValueError(
            f"{name} holds {n} NaN/inf values; repair it first "
            f"(bokehme_core.repair_nonfinite, or the 'repair' option of the disparity nodes)"
        )
    return t


def check_focus(focus, batch: int, name: str = "focus") -> torch.Tensor:
    """Return focus as a float tensor of shape (B,) with values in [0, 1].

    Accepts a python number, a sequence of numbers, or a tensor of shape () / (B,) / (B,1,1,1).
    """
    if isinstance(focus, torch.Tensor):
        f = focus.detach().to(torch.float32).flatten()
    elif isinstance(focus, Sequence) and not isinstance(focus, (str, bytes)):
        f = torch.tensor([check_range(v, name) for v in focus], dtype=torch.float32)
    else:
        f = torch.tensor([check_range(focus, name)], dtype=torch.float32)
    if f.numel() == 1:
        f = f.expand(batch)
    if f.numel() != batch:
        raise ValueError(f"{name} must be one value or one per image ({batch}), got {f.numel()} values")
    if not torch.isfinite(f).all():
        raise ValueError(f"{name} must be finite, got {f.tolist()}")
    if (f < 0).any() or (f > 1).any():
        raise ValueError(f"{name} must be a disparity in [0, 1] (1 = near), got {f.tolist()}")
    return f.contiguous()


def check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_instance(value, name: str, expected: type, example: str, hint: str = "") -> None:
    """None or an instance of ``expected``; else TypeError naming the argument, the type (with an ``example``
    of how to build one), the actual type and an optional ``hint``."""
    if value is not None and not isinstance(value, expected):
        raise TypeError(f"{name} must be a bokehme_core.{expected.__name__} ({example}) or None, got "
                        f"{type(value).__name__}{hint}")

"""Fusion of the classical and neural renderings (paper Eq. 1)."""

from __future__ import annotations

import torch

from ._checks import check_disparity, check_image, check_same_spatial

__all__ = ["fuse"]


def fuse(classical: torch.Tensor, neural: torch.Tensor, error_map: torch.Tensor) -> torch.Tensor:
    """``classical * (1 - E) + neural * E``.

    Args:
        classical: (B, 3, H, W) classical bokeh.
        neural: (B, 3, H, W) neural bokeh, same size.
        error_map: (B or 1, 1, H, W) in [0, 1]; 1 = trust the neural rendering. Values outside [0, 1]
            raise (clamp them yourself if that is what you mean).

    Returns:
        (B, 3, H, W); not clamped (callers clamp the final output).
    """
    check_image(classical, "classical")
    check_image(neural, "neural")
    check_disparity(error_map, "error_map")
    if classical.shape != neural.shape:
        raise ValueError(
            f"neural must match classical {tuple(classical.shape)}, got {tuple(neural.shape)}; "
            f"resize one of them first"
        )
    check_same_spatial(classical, error_map, "classical", "error_map")
    lo, hi = float(error_map.min()), float(error_map.max())
    if not (lo >= -1e-6 and hi <= 1 + 1e-6):
        raise ValueError(f"error_map must be in [0, 1], got values in [{lo:g}, {hi:g}]")
    error_map = error_map.to(classical.dtype)
    return classical * (1.0 - error_map) + neural * error_map

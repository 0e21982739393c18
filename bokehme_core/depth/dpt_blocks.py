"""Pieces shared by the DPT decoders of Depth Anything V2 and MiDaS v3 (DPT), and the key-renaming converter.

Ranftl et al., "Vision Transformers for Dense Prediction", ICCV 2021 (https://github.com/isl-org/DPT,
https://github.com/isl-org/MiDaS). Written from the paper and the documented behaviour of the official
code; the official checkpoints load into these modules through :func:`rename_keys` with a prefix table.

The decoder ("scratch" upstream) takes four feature maps at 1/4, 1/8, 1/16 and 1/32 of the network input
(for DA-V2: of the 14-px patch grid times 4, 2, 1, 1/2), projects each to ``features`` channels with a 3x3
conv ("layer_rn") and fuses them coarse to fine with residual conv units and bilinear (align_corners=True)
upsampling ("refinenet").
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ResidualConvUnit",
    "FusionBlock",
    "FusionDecoder",
    "decoder_key_table",
    "rename_keys",
]


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convs (bias), no normalisation. Shape-preserving."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(x))
        out = self.conv2(F.relu(out))
        return out + x


class FusionBlock(nn.Module):
    """One fusion step: add the residual-refined skip features, refine, upsample, 1x1 conv.

    ``forward(path, skip=None, size=None)``: ``path`` (B,C,h,w) from the coarser level (or the coarsest
    features themselves), ``skip`` (B,C,h,w) features of this level; the result is resized bilinearly with
    align_corners=True to ``size`` (or twice the size when ``size`` is None) and projected by ``out_conv``.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.residual_skip = ResidualConvUnit(features)  # upstream: resConfUnit1 (applied to the skip input)
        self.residual_main = ResidualConvUnit(features)  # upstream: resConfUnit2
        self.out_conv = nn.Conv2d(features, features, 1, bias=True)

    def forward(self, path: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        out = path
        if skip is not None:
            out = out + self.residual_skip(skip)
        out = self.residual_main(out)
        if size is None:
            out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(out)


class FusionDecoder(nn.Module):
    """The DPT decoder: 3x3 projections of the four levels, then four fusion blocks, coarse to fine.

    Input: four maps (B, in_channels[i], h_i, w_i), finest first. Output: (B, features, 2*h_0, 2*w_0).
    """

    def __init__(self, in_channels: Sequence[int], features: int) -> None:
        super().__init__()
        self.layer_rn = nn.ModuleList(nn.Conv2d(c, features, 3, padding=1, bias=False) for c in in_channels)
        self.fusion = nn.ModuleList(FusionBlock(features) for _ in range(4))  # index 0 = finest (refinenet1)

    def forward(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        rn = [conv(x) for conv, x in zip(self.layer_rn, layers)]
        path = self.fusion[3](rn[3], size=rn[2].shape[2:])
        path = self.fusion[2](path, rn[2], size=rn[1].shape[2:])
        path = self.fusion[1](path, rn[1], size=rn[0].shape[2:])
        return self.fusion[0](path, rn[0])


def decoder_key_table(official_prefix: str, our_prefix: str) -> list:
    """(official prefix, our prefix) pairs for the decoder: ``scratch.layer{i}_rn`` and ``scratch.refinenet{i}``."""
    table = []
    for i in range(4):
        table.append((f"{official_prefix}layer{i + 1}_rn.", f"{our_prefix}layer_rn.{i}."))
        ref = f"{official_prefix}refinenet{i + 1}."
        ours = f"{our_prefix}fusion.{i}."
        table.append((ref + "resConfUnit1.", ours + "residual_skip."))
        table.append((ref + "resConfUnit2.", ours + "residual_main."))
        table.append((ref + "out_conv.", ours + "out_conv."))
    return table


def rename_keys(state_dict: dict, table: Sequence, *, inverse: bool = False, what: str = "checkpoint") -> dict:
    """Rename the keys of ``state_dict`` with a prefix table (longest matching prefix wins).

    ``table``: (official prefix, our prefix) pairs; ``inverse=True`` maps our names back to the official ones.
    A key that matches no prefix is an error naming the keys (a file of another model or a corrupted one).
    """
    pairs = [(b, a) for a, b in table] if inverse else [(a, b) for a, b in table]
    pairs.sort(key=lambda p: len(p[0]), reverse=True)
    out = {}
    unknown = []
    for key, value in state_dict.items():
        for src, dst in pairs:
            if key.startswith(src):
                out[dst + key[len(src):]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:8]) + (f" ... ({len(unknown)} in all)" if len(unknown) > 8 else "")
        raise ValueError(f"{what} has unexpected keys for this architecture: {shown}")
    return out

"""MiDaS v3 DPT (relative inverse depth): DPT-Hybrid (ViT-B/16 on a ResNet-50 stem) and DPT-Large (ViT-L/16).

Ranftl et al., "Vision Transformers for Dense Prediction", ICCV 2021, and "Towards Robust Monocular Depth
Estimation", TPAMI 2022; https://github.com/isl-org/MiDaS (MIT). The official ``dpt_hybrid_384.pt`` and
``dpt_large_384.pt`` load strictly through :func:`official_key_table`. Backbones are timm's
``vit_base_r50_s16_384`` / ``vit_large_patch16_384`` (the same networks the official code builds with timm,
including the unused ImageNet classifier whose weights the official files carry).

Official behaviour reproduced here (``midas/dpt_depth.py``, ``backbones/vit.py``, ``backbones/utils.py``):

* position embeddings resized to the h/16 x w/16 grid bilinearly (align_corners=False), class token kept;
* features: outputs of blocks (0, 1, 8, 11)-hooks, i.e. for the hybrid the two ResNet stage outputs
  (256 ch at 1/4, 512 ch at 1/8) and the tokens after ViT blocks 8 and 11; for Large the tokens after
  blocks 5, 11, 17, 23 (not LayerNorm-ed);
* readout "project": each token concatenated with the class token, Linear(2D -> D) + GELU;
* reassemble: 1x1 conv, then x4 / x2 transposed convs (Large levels 1-2), nothing (level 3), a stride-2 3x3
  conv (level 4); the DPT fusion decoder; output head: 3x3 conv, bilinear x2 (align_corners=True), 3x3 conv,
  ReLU, 1x1 conv, ReLU; output (B, h, w).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import DepthModel
from .dpt_blocks import FusionDecoder, decoder_key_table

__all__ = ["MiDaSDPT", "MIDAS_CONFIGS", "official_key_table"]

#: variant -> (timm model, embed dim, hooks, reassemble channels)
MIDAS_CONFIGS = {
    "dpt_hybrid": ("vit_base_r50_s16_384", 768, (0, 1, 8, 11), (256, 512, 768, 768)),
    "dpt_large": ("vit_large_patch16_384", 1024, (5, 11, 17, 23), (256, 512, 1024, 1024)),
}


class Reassemble(nn.Module):
    """Token sequences -> feature maps: readout projection, 1x1 conv, resampling (x4, x2, x1, x0.5).

    ``first_level`` is 2 for the hybrid, whose two finest levels are ResNet feature maps used as they are.
    """

    def __init__(self, embed_dim: int, channels, first_level: int) -> None:
        super().__init__()
        self.first_level = first_level
        self.readout_projects = nn.ModuleDict()
        self.projects = nn.ModuleDict()
        self.resample = nn.ModuleDict()
        for level in range(first_level, 4):
            key = str(level)
            self.readout_projects[key] = nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.GELU())
            self.projects[key] = nn.Conv2d(embed_dim, channels[level], 1)
            if level == 0:
                self.resample[key] = nn.ConvTranspose2d(channels[0], channels[0], kernel_size=4, stride=4)
            elif level == 1:
                self.resample[key] = nn.ConvTranspose2d(channels[1], channels[1], kernel_size=2, stride=2)
            elif level == 3:
                self.resample[key] = nn.Conv2d(channels[3], channels[3], kernel_size=3, stride=2, padding=1)

    def forward(self, level: int, tokens: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
        key = str(level)
        patches = tokens[:, 1:]
        readout = tokens[:, :1].expand_as(patches)
        x = self.readout_projects[key](torch.cat([patches, readout], dim=-1))
        x = x.transpose(1, 2).reshape(x.shape[0], -1, grid_h, grid_w)
        x = self.projects[key](x)
        if key in self.resample:
            x = self.resample[key](x)
        return x


class MiDaSDPT(DepthModel):
    """MiDaS v3 DPT ("dpt_hybrid" or "dpt_large").

    ``forward(x)``: x (B,3,h,w) normalised with mean = std = 0.5, h and w multiples of 32 -> (B,h,w) relative
    inverse depth >= 0 (the official ``DPTDepthModel.forward``). See :meth:`DepthModel.estimate`.
    """

    family = "midas_dpt"
    patch_multiple = 32
    default_processing_res = 384
    resize_method = "minimal"
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    output_mode = "bicubic"
    output_align_corners = False
    license = "MIT"

    def __init__(self, variant: str = "dpt_hybrid") -> None:
        super().__init__()
        if variant not in MIDAS_CONFIGS:
            raise ValueError(f"variant must be one of {sorted(MIDAS_CONFIGS)}, got {variant!r}")
        import timm  # lazy: only when a model is built

        timm_name, embed_dim, self.hooks, channels = MIDAS_CONFIGS[variant]
        self.variant = variant
        self.hybrid = variant == "dpt_hybrid"
        # num_classes=1000: the official files carry the (unused) ImageNet classifier of the timm model.
        self.backbone = timm.create_model(timm_name, pretrained=False, img_size=384, num_classes=1000)
        self.reassemble = Reassemble(embed_dim, channels, first_level=2 if self.hybrid else 0)
        self.decoder = FusionDecoder(channels, 256)
        self.output_head = nn.Sequential(
            nn.Conv2d(256, 128, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(128, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, 1),
            nn.ReLU(),
        )

    def _position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        pos = self.backbone.pos_embed
        side = int(round((pos.shape[1] - 1) ** 0.5))
        grid = pos[0, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat([pos[:, :1], grid], dim=1)

    def features(self, x: torch.Tensor) -> list:
        """The four feature maps (finest first) the decoder reads."""
        bb = self.backbone
        batch, _, height, width = x.shape
        grid_h, grid_w = height // 16, width // 16
        levels = []
        if self.hybrid:
            resnet = bb.patch_embed.backbone
            y = resnet.stem(x)
            for s, stage in enumerate(resnet.stages):
                y = stage(y)
                if s < 2:
                    levels.append(y)  # ResNet stage outputs: 1/4 (256 ch), 1/8 (512 ch)
            y = resnet.norm(y)  # identity for this non-pre-activation ResNet; kept for fidelity with timm
            tokens = bb.patch_embed.proj(y).flatten(2).transpose(1, 2)
        else:
            tokens = bb.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([bb.cls_token.expand(batch, -1, -1), tokens], dim=1)
        tokens = tokens + self._position_embedding(grid_h, grid_w)
        hooked = self.hooks[len(levels):]
        for i, block in enumerate(bb.blocks):
            tokens = block(tokens)
            if i in hooked:
                levels.append(self.reassemble(len(levels), tokens, grid_h, grid_w))
        return levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % 32 or width % 32:
            raise ValueError(
                f"x must be (B,3,h,w) with h and w multiples of 32 (the official preprocessing), got "
                f"{tuple(x.shape)}; use estimate() or preprocess() for images of any size"
            )
        return self.output_head(self.decoder(self.features(x))).squeeze(1)


def official_key_table(variant: str) -> list:
    """(official prefix, our prefix) pairs mapping ``dpt_{hybrid,large}_384.pt`` keys onto :class:`MiDaSDPT`."""
    first = 2 if variant == "dpt_hybrid" else 0
    table = [("pretrained.model.", "backbone."), ("scratch.output_conv.", "output_head.")]
    for level in range(first, 4):
        post = f"pretrained.act_postprocess{level + 1}."
        table.append((post + "0.project.0.", f"reassemble.readout_projects.{level}.0."))
        table.append((post + "3.", f"reassemble.projects.{level}."))
        if level != 2:
            table.append((post + "4.", f"reassemble.resample.{level}."))
    return table + decoder_key_table("scratch.", "decoder.")

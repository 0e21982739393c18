"""Depth Anything V2 (relative depth): a DINOv2 ViT (timm) and a DPT head written here.

Yang et al., "Depth Anything V2", NeurIPS 2024, https://github.com/DepthAnything/Depth-Anything-V2
(code and Small weights Apache-2.0; Base/Large weights CC-BY-NC-4.0). The official checkpoints
``depth_anything_v2_vit{s,b,l}.pth`` load strictly through :data:`key table <official_key_table>`.

Official behaviour reproduced here (``depth_anything_v2/dpt.py``, ``dinov2.py``):

* backbone: DINOv2 ViT-S/B/L with patch 14, layer scale, trained at 518 px (37 x 37 position grid);
  features = LayerNorm-ed tokens after blocks (2, 5, 8, 11) for vits/vitb and (4, 11, 17, 23) for vitl;
  the class token is dropped (``use_clstoken=False``);
* position embeddings for another grid size: bicubic interpolation by the *scale factor*
  ``(grid + 0.1) / 37`` (not by target size), no antialiasing, skipped for a square 37 x 37 input;
* head: 1x1 projections to ``out_channels``, resampling x4 / x2 / x1 / x0.5 (transposed convs, a stride-2
  conv), DPT fusion, ``output_conv1``, bilinear (align_corners=True) resize to the 14 x grid size,
  ``output_conv2`` (3x3 conv, ReLU, 1x1 conv, ReLU), ReLU; output (B, h, w).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..provenance import WeightsSource, hf_url
from .base import DepthModel
from .dpt_blocks import FusionDecoder, decoder_key_table

__all__ = ["DepthAnythingV2", "DA_V2_CONFIGS", "PRETRAINED", "official_key_table"]

#: variant -> (timm model, embed dim, depth, intermediate blocks, head features, head out_channels)
DA_V2_CONFIGS = {
    "vits": ("vit_small_patch14_dinov2", 384, 12, (2, 5, 8, 11), 64, (48, 96, 192, 384)),
    "vitb": ("vit_base_patch14_dinov2", 768, 12, (2, 5, 8, 11), 128, (96, 192, 384, 768)),
    "vitl": ("vit_large_patch14_dinov2", 1024, 24, (4, 11, 17, 23), 256, (256, 512, 1024, 1024)),
}

_HOME = "https://github.com/DepthAnything/Depth-Anything-V2"
_NON_COMMERCIAL = "CC-BY-NC-4.0 (non-commercial use only)"
#: where the official weights of each variant come from (gathered by :data:`bokehme_core.weights.PROVENANCE`)
PRETRAINED = {
    f"depth_anything_v2_{variant}": WeightsSource(
        f"Depth Anything V2 {size}",
        hf_url(f"depth-anything/Depth-Anything-V2-{size}", f"depth_anything_v2_{variant}.pth"),
        f"depth_anything_v2_{variant}.pth", licence, "depth", None, _HOME)
    for variant, size, licence in (("vits", "Small", "Apache-2.0"), ("vitb", "Base", _NON_COMMERCIAL),
                                   ("vitl", "Large", _NON_COMMERCIAL))
}



class DepthAnythingV2Head(nn.Module):
    """DPT head of DA-V2: token maps (B, D, gh, gw) x 4 -> relative inverse depth (B, 1, 14*gh, 14*gw)."""

    def __init__(self, embed_dim: int, features: int, out_channels) -> None:
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(embed_dim, c, 1) for c in out_channels)
        self.resample = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.decoder = FusionDecoder(out_channels, features)
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, 1),
            nn.ReLU(),
        )

    def forward(self, token_maps, grid_h: int, grid_w: int) -> torch.Tensor:
        layers = [resample(project(t)) for t, project, resample in zip(token_maps, self.projects, self.resample)]
        out = self.output_conv1(self.decoder(layers))
        out = F.interpolate(out, size=(grid_h * 14, grid_w * 14), mode="bilinear", align_corners=True)
        return self.output_conv2(out)


class DepthAnythingV2(DepthModel):
    """Depth Anything V2 ("vits", "vitb" or "vitl").

    ``forward(x)``: x (B,3,h,w) normalised with ImageNet mean/std, h and w multiples of 14 ->
    (B,h,w) relative inverse depth >= 0 (the official ``forward``). See :meth:`DepthModel.estimate`.
    """

    family = "depth_anything_v2"
    patch_multiple = 14
    default_processing_res = 518
    resize_method = "lower_bound"
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    output_mode = "bilinear"
    output_align_corners = True

    def __init__(self, variant: str = "vits") -> None:
        super().__init__()
        if variant not in DA_V2_CONFIGS:
            raise ValueError(f"variant must be one of {sorted(DA_V2_CONFIGS)}, got {variant!r}")
        import timm  # lazy: only when a model is built

        timm_name, embed_dim, _, self.intermediate_blocks, features, out_channels = DA_V2_CONFIGS[variant]
        self.variant = variant
        self.license = PRETRAINED[f"depth_anything_v2_{variant}"].licence
        self.backbone = timm.create_model(timm_name, pretrained=False, img_size=518, num_classes=0)
        # DINOv2's masked-token embedding: unused at inference, kept so that the official file loads strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.head = DepthAnythingV2Head(embed_dim, features, out_channels)
        self.grid_size = 37  # 518 / 14: the grid the position embeddings were trained at

    def _position_embedding(self, grid_h: int, grid_w: int, n_patches: int) -> torch.Tensor:
        pos = self.backbone.pos_embed
        n_trained = pos.shape[1] - 1
        if n_patches == n_trained and grid_h == grid_w:
            return pos
        dtype = pos.dtype
        pos = pos.float()
        dim = pos.shape[-1]
        side = int(math.sqrt(n_trained))
        # official: scale factors (grid + 0.1) / side, bicubic, no antialias; the factor (not the target size)
        # defines the sampling positions.
        scale_h = (grid_h + 0.1) / math.sqrt(n_trained)
        scale_w = (grid_w + 0.1) / math.sqrt(n_trained)
        grid = pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=(scale_h, scale_w), mode="bicubic", antialias=False)
        if grid.shape[-2:] != (grid_h, grid_w):
            raise RuntimeError(f"position grid interpolated to {tuple(grid.shape[-2:])}, expected {(grid_h, grid_w)}")
        grid = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat([pos[:, :1], grid], dim=1).to(dtype)

    def token_features(self, x: torch.Tensor) -> list:
        """The four LayerNorm-ed patch-token maps (B, D, h/14, w/14) the head reads."""
        bb = self.backbone
        batch, _, height, width = x.shape
        grid_h, grid_w = height // 14, width // 14
        tokens = bb.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([bb.cls_token.expand(batch, -1, -1), tokens], dim=1)
        tokens = tokens + self._position_embedding(grid_h, grid_w, tokens.shape[1] - 1)
        maps = []
        for i, block in enumerate(bb.blocks):
            tokens = block(tokens)
            if i in self.intermediate_blocks:
                patch = bb.norm(tokens)[:, 1:]
                maps.append(patch.transpose(1, 2).reshape(batch, -1, grid_h, grid_w))
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % 14 or width % 14:
            raise ValueError(
                f"x must be (B,3,h,w) with h and w multiples of 14 (the official preprocessing), got "
                f"{tuple(x.shape)}; use estimate() or preprocess() for images of any size"
            )
        grid_h, grid_w = height // 14, width // 14
        depth = self.head(self.token_features(x), grid_h, grid_w)
        return F.relu(depth).squeeze(1)


def official_key_table(variant: str) -> list:
    """(official prefix, our prefix) pairs mapping ``depth_anything_v2_vit*.pth`` keys onto :class:`DepthAnythingV2`."""
    table = [
        ("pretrained.mask_token", "mask_token"),
        ("pretrained.", "backbone."),
        ("depth_head.projects.", "head.projects."),
        ("depth_head.resize_layers.", "head.resample."),
        ("depth_head.scratch.output_conv1.", "head.output_conv1."),
        ("depth_head.scratch.output_conv2.", "head.output_conv2."),
    ]
    return table + decoder_key_table("depth_head.scratch.", "head.decoder.")

"""IUNet, the iterative upsampling network of BokehMe.

Peng, Cao, Lu, Xian, Chen, "BokehMe: When Neural Rendering Meets Classical Rendering", CVPR 2022, section 3.2;
official code and checkpoints: https://github.com/JuewenPeng/BokehMe (``checkpoints/iunet.pth``).
Re-implemented from the documented behaviour; state-dict keys and shapes are the official ones.
"""

from __future__ import annotations

import torch

from ..provenance import WeightsSource
from .blocks import BOKEHME_LICENCE, BOKEHME_REPO, ShuffleConvNet, half_tile, resize_bilinear

#: where the official IUNet weights come from (gathered by :data:`bokehme_core.weights.PROVENANCE`)
PRETRAINED = {
    "iunet": WeightsSource("BokehMe IUNet (official)", f"{BOKEHME_REPO}/raw/main/checkpoints/iunet.pth", "iunet.pth",
                           BOKEHME_LICENCE, "iunet",
                           "6df927797a1657ba700410d43a9434f98268fe5888553d30ebb9f1fd7130a02d", BOKEHME_REPO),
}

__all__ = ["IUNet", "SPARSE_TILE_SIZE", "SPARSE_CELL"]

#: largest computed run (full-resolution px) of :meth:`IUNet.forward_sparse`
SPARSE_TILE_SIZE = 1024
#: skipping granularity (full-resolution px) of :meth:`IUNet.forward_sparse`: used cells of a row are computed
#: together, in runs of up to :data:`SPARSE_TILE_SIZE` px (see :meth:`ShuffleConvNet.run_body_sparse`). Few,
#: large calls: on a loaded CPU every network call costs far more than its pixels (1080p: 3-5 calls)
SPARSE_CELL = 256


class IUNet(ShuffleConvNet):
    """Iterative Upsampling Network: refines a coarse bokeh rendering at twice its resolution.

    Architecture (official sizes are the defaults): image (3) + defocus (1) -> space-to-depth by 2 (16) +
    coarse bokeh resized to the half resolution (bilinear, align_corners=False; 3) + gamma channel = 20 ->
    conv 3x3 to ``middle_channels`` (ELU) -> ``num_blocks`` residual blocks -> conv 3x3 to 12 ->
    depth-to-space (3 channels, linear) -> bilinear back to the input size.
    The official network (``middle_channels=64, num_blocks=3``) has 240,076 parameters.

    Args:
        middle_channels: body width (official 64).
        num_blocks: residual blocks (official 3).
    """

    in_channels = 20
    out_channels = 3
    display_name = "IUNet"

    def __init__(self, middle_channels: int = 64, num_blocks: int = 3) -> None:
        super().__init__(middle_channels, num_blocks)

    def forward(
        self,
        image: torch.Tensor,
        defocus: torch.Tensor,
        bokeh_coarse: torch.Tensor,
        gamma_norm,
        tile_size: int | None = None,
    ) -> torch.Tensor:
        """Refine ``bokeh_coarse`` at the resolution of ``image``.

        Args:
            image: (B, 3, h, w), sRGB in [0, 1] (may exceed 1 after the highlight boost); h, w >= 2.
            defocus: (B, 1, h, w), signed defocus in units of 10 px at this resolution, clamped to [-1, 1]
                by the pipeline; positive = nearer than focus.
            bokeh_coarse: (B, 3, hc, wc), the previous (coarser) bokeh, any size (resized to (h//2, w//2)).
            gamma_norm: ``(gamma - 1) / 4`` in [0, 1]: a float or a (B,) tensor.
            tile_size: run the body in tiles of this many full-resolution pixels (exact); None = one pass.

        Returns:
            bokeh (B, 3, h, w), linear network output (not clamped).
        """
        size = image.shape[-2:]
        x = self.front_end(image, defocus)
        bokeh_coarse = resize_bilinear(bokeh_coarse.to(x.dtype), x.shape[-2:], align_corners=False)
        x = torch.cat((x, bokeh_coarse, self.gamma_channel(gamma_norm, x)), dim=1)
        return self.back_end(self.run_body(x, half_tile(tile_size)), size)

    def forward_sparse(
        self,
        image: torch.Tensor,
        defocus: torch.Tensor,
        bokeh_coarse: torch.Tensor,
        gamma_norm,
        needed: torch.Tensor,
        tile_size: int = SPARSE_TILE_SIZE,
        cell: int | None = None,
    ) -> tuple:
        """:meth:`forward` evaluated only where its output is used.

        Args:
            image, defocus, bokeh_coarse, gamma_norm: as for :meth:`forward`.
            needed: (B or 1, 1, h, w) bool: pixels whose refinement is used downstream.
            tile_size: largest computed run, in full-resolution pixels.
            cell: skipping granularity, in full-resolution pixels (at most ``tile_size``); None =
                :data:`SPARSE_CELL`.

        Returns:
            ``(bokeh, exact)``: bokeh (B, 3, h, w) equal to :meth:`forward` (up to float rounding) wherever the
            (1, 1, h, w) bool ``exact`` is True, a superset of ``needed``; elsewhere undefined (zeros).
        """
        size = image.shape[-2:]
        x = self.front_end(image, defocus)
        bokeh_coarse = resize_bilinear(bokeh_coarse.to(x.dtype), x.shape[-2:], align_corners=False)
        x = torch.cat((x, bokeh_coarse, self.gamma_channel(gamma_norm, x)), dim=1)
        return self.body_where_needed(x, needed, size, tile_size, SPARSE_CELL if cell is None else cell)

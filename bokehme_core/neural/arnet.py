"""ARNet, the adaptive rendering network of BokehMe.

Peng, Cao, Lu, Xian, Chen, "BokehMe: When Neural Rendering Meets Classical Rendering", CVPR 2022, section 3.2;
official code and checkpoints: https://github.com/JuewenPeng/BokehMe (``checkpoints/arnet.pth``).
Re-implemented from the documented behaviour; state-dict keys and shapes are the official ones.
"""

from __future__ import annotations

import torch

from ..provenance import WeightsSource
from .blocks import BOKEHME_LICENCE, BOKEHME_REPO, ShuffleConvNet, half_tile

#: where the official ARNet weights come from (gathered by :data:`bokehme_core.weights.PROVENANCE`)
PRETRAINED = {
    "arnet": WeightsSource("BokehMe ARNet (official)", f"{BOKEHME_REPO}/raw/main/checkpoints/arnet.pth", "arnet.pth",
                           BOKEHME_LICENCE, "arnet", None, BOKEHME_REPO),
}

__all__ = ["ARNet", "ARNET_SPARSE_CELL", "ARNET_SPARSE_TILE"]

#: :meth:`ARNet.forward_sparse`: cells (working-resolution px) of the skipping grid; used cells of a row are
#: merged into runs of up to :data:`ARNET_SPARSE_TILE` px, each computed with the exact halo (few, large calls:
#: on a loaded CPU every network call costs far more than its pixels)
ARNET_SPARSE_CELL = 128
ARNET_SPARSE_TILE = 2048


class ARNet(ShuffleConvNet):
    """Adaptive Rendering Network: renders bokeh and an error map at low resolution.

    Architecture (official sizes are the defaults): image (3) + defocus (1) -> space-to-depth by 2 (16) +
    gamma channel = 17 -> conv 3x3 to ``middle_channels`` (ELU) -> ``num_blocks`` residual blocks ->
    conv 3x3 to 16 -> depth-to-space (4 channels) -> bilinear back to the input size. Channels 0-2 are the
    bokeh (linear, not clamped), channel 3 through a sigmoid is the error map.
    The official network (``middle_channels=128, num_blocks=3``) has 923,664 parameters.

    Args:
        middle_channels: body width (official 128).
        num_blocks: residual blocks (official 3).
    """

    in_channels = 17
    out_channels = 4
    display_name = "ARNet"

    def __init__(self, middle_channels: int = 128, num_blocks: int = 3) -> None:
        super().__init__(middle_channels, num_blocks)

    def forward(
        self,
        image: torch.Tensor,
        defocus: torch.Tensor,
        gamma_norm,
        tile_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Render at the (already reduced) input resolution.

        Args:
            image: (B, 3, h, w), sRGB in [0, 1] (may exceed 1 after the highlight boost); h, w >= 2.
            defocus: (B, 1, h, w), signed defocus in units of 10 px at this resolution (official inputs lie
                in [-1, 1] after adaptive resizing); positive = nearer than focus.
            gamma_norm: ``(gamma - 1) / 4`` in [0, 1]: a float or a (B,) tensor.
            tile_size: run the body in tiles of this many full-resolution pixels (exact, see
                :meth:`ShuffleConvNet.run_body`); None = one pass.

        Returns:
            bokeh (B, 3, h, w), linear network output (not clamped), and error map (B, 1, h, w) in (0, 1).
        """
        size = image.shape[-2:]
        x = self.front_end(image, defocus)
        x = torch.cat((x, self.gamma_channel(gamma_norm, x)), dim=1)
        x = self.back_end(self.run_body(x, half_tile(tile_size)), size)
        return x[:, :3], torch.sigmoid(x[:, 3:4])

    def forward_sparse(
        self,
        image: torch.Tensor,
        defocus: torch.Tensor,
        gamma_norm,
        needed: torch.Tensor,
        tile_size: int = ARNET_SPARSE_TILE,
        cell: int | None = None,
    ) -> tuple:
        """:meth:`forward` evaluated only where its outputs are used.

        Args:
            image, defocus, gamma_norm: as for :meth:`forward`.
            needed: (B or 1, 1, h, w) bool: pixels whose bokeh or error is used downstream.
            tile_size: largest computed run, in px of this (working) resolution.
            cell: skipping granularity, in px of this resolution (see :meth:`ShuffleConvNet.run_body_sparse`);
                None = :data:`ARNET_SPARSE_CELL`.

        Returns:
            ``(bokeh, error, exact)``: bokeh (B, 3, h, w) and error map (B, 1, h, w) equal to :meth:`forward`
            (up to float rounding) wherever the (1, 1, h, w) bool ``exact`` is True, a superset of ``needed``;
            elsewhere undefined (bokeh 0, error 0.5).
        """
        size = image.shape[-2:]
        x = self.front_end(image, defocus)
        x = torch.cat((x, self.gamma_channel(gamma_norm, x)), dim=1)
        out, exact = self.body_where_needed(x, needed, size, tile_size, ARNET_SPARSE_CELL if cell is None else cell)
        return out[:, :3], torch.sigmoid(out[:, 3:4]), exact

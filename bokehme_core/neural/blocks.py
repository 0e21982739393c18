"""Building blocks shared by ARNet and IUNet (Peng et al., CVPR 2022; https://github.com/JuewenPeng/BokehMe).

Both networks have the same body: a 2x space-to-depth front end, a 3x3 convolution, a stack of residual
blocks of two 3x3 convolutions, and a 3x3 convolution followed by a 2x depth-to-space back end. All
convolutions are 3x3, stride 1, zero padding 1, with bias and ELU(alpha=1) after every convolution except the
last one. There are no normalisation layers.

The module names (``conv0.conv``, ``block_stack.blocks.<i>.<j>.conv``, ``conv1.conv``) are the ones of the
official checkpoints, so their state dicts load strictly.

The convolution body is purely local (receptive field: one pixel per convolution at half resolution), so
it can run tile by tile with an exact halo: see :meth:`ShuffleConvNet.run_body`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvELU", "BlockStack", "ShuffleConvNet", "NetConfig", "resize_bilinear", "SHUFFLE", "BOKEHME_REPO",
           "BOKEHME_LICENCE"]

#: the authors' repository (code and the official ARNet / IUNet checkpoints)
BOKEHME_REPO = "https://github.com/JuewenPeng/BokehMe"
#: The authors' repository carries an MIT ``LICENSE`` and a ``LICENSE.md`` that restricts the software to
#: non-commercial purposes; the pack treats the official weights as non-commercial.
BOKEHME_LICENCE = "BokehMe licence: non-commercial use only (upstream LICENSE.md)"

#: The space-to-depth factor of both networks.
SHUFFLE = 2


def resize_bilinear(x: torch.Tensor, size: tuple, align_corners: bool = True) -> torch.Tensor:
    """Bilinear resize of a (B, C, H, W) tensor to ``size`` = (h, w); returns ``x`` itself if it already has
    that size (a same-size bilinear resize is the identity with either corner convention)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


class ConvELU(nn.Module):
    """3x3 convolution (stride 1, zero padding 1, bias), optionally followed by ELU(alpha=1).

    The convolution is the attribute ``conv`` (state-dict keys ``conv.weight``, ``conv.bias``).
    """

    def __init__(self, in_channels: int, out_channels: int, activation: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=True)
        self.activation = nn.ELU(alpha=1.0) if activation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.activation is None:
            return x
        if not torch.is_grad_enabled():  # inference: the convolution's fresh output is overwritten (same values)
            return F.elu(x, alpha=1.0, inplace=True)
        return self.activation(x)


class BlockStack(nn.Module):
    """``num_blocks`` residual blocks with distinct sources: ``x = ELU(conv(ELU(conv(x)))) + x``.

    State-dict keys: ``blocks.<i>.0.conv.*`` and ``blocks.<i>.1.conv.*``.
    """

    def __init__(self, channels: int, num_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(ConvELU(channels, channels), ConvELU(channels, channels)) for _ in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            # inference: add in place into the block's fresh output (same values, one allocation less)
            x = block(x).add_(x) if not torch.is_grad_enabled() else block(x) + x
        return x


@dataclass(frozen=True)
class NetConfig:
    """Architecture size of ARNet / IUNet; everything else is fixed.

    Attributes:
        middle_channels: width of the body (official: ARNet 128, IUNet 64).
        num_blocks: number of residual blocks (official: 3).
    """

    middle_channels: int
    num_blocks: int

    @property
    def num_convs(self) -> int:
        """Number of 3x3 convolutions in the body (conv0, 2 per block, conv1)."""
        return 2 * self.num_blocks + 2


_BLOCK_KEY = re.compile(r"^block_stack\.blocks\.(\d+)\.")


class ShuffleConvNet(nn.Module):
    """The body shared by ARNet and IUNet (see the module docstring).

    Subclasses fix ``in_channels`` (channels of the half-resolution input of ``conv0``) and
    ``out_channels`` (channels at full resolution after depth-to-space).
    """

    #: channels entering conv0 at half resolution (set by subclasses)
    in_channels: int = 0
    #: channels after depth-to-space (set by subclasses)
    out_channels: int = 0
    #: the name used in error messages
    display_name: str = "network"

    def __init__(self, middle_channels: int, num_blocks: int) -> None:
        super().__init__()
        if int(middle_channels) < 1:
            raise ValueError(f"middle_channels must be >= 1, got {middle_channels}")
        if int(num_blocks) < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        self.config = NetConfig(int(middle_channels), int(num_blocks))
        self.conv0 = ConvELU(self.in_channels, self.config.middle_channels)
        self.block_stack = BlockStack(self.config.middle_channels, self.config.num_blocks)
        self.conv1 = ConvELU(self.config.middle_channels, self.out_channels * SHUFFLE**2, activation=False)

    # --- architecture inference -------------------------------------------------------------------------

    @classmethod
    def config_from_state_dict(cls, state_dict: dict) -> NetConfig:
        """Infer :class:`NetConfig` from tensor shapes (``conv0.conv.weight`` gives the width, the
        ``block_stack.blocks.<i>`` keys the number of blocks). Raises ``ValueError`` naming what is wrong."""
        weight = state_dict.get("conv0.conv.weight")
        if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
            keys = sorted(state_dict)[:5]
            raise ValueError(
                f"not a BokehMe {cls.display_name} state dict: no 4-D 'conv0.conv.weight' tensor "
                f"(first keys: {keys})"
            )
        in_channels = int(weight.shape[1])
        if in_channels != cls.in_channels:
            hint = {17: "an ARNet checkpoint: use load_arnet", 20: "an IUNet checkpoint: use load_iunet"}.get(
                in_channels, "not a BokehMe network"
            )
            raise ValueError(
                f"not a BokehMe {cls.display_name} checkpoint: conv0 takes {in_channels} input channels, "
                f"{cls.display_name} takes {cls.in_channels} (this looks like {hint})"
            )
        indices = {int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))}
        num_blocks = max(indices) + 1 if indices else 0
        return NetConfig(int(weight.shape[0]), num_blocks)

    # --- forward pieces ---------------------------------------------------------------------------------

    @staticmethod
    def front_end(image: torch.Tensor, defocus: torch.Tensor) -> torch.Tensor:
        """Concatenate image and defocus, resize (bilinear, align_corners=True) to the largest even size
        not above (h, w) and space-to-depth by 2 (channel order c*4 + 2*i + j).

        Returns (B, 16, h//2, w//2).
        """
        x = torch.cat((image, defocus), dim=1)
        h, w = x.shape[-2:]
        x = resize_bilinear(x, (h // SHUFFLE * SHUFFLE, w // SHUFFLE * SHUFFLE))
        return F.pixel_unshuffle(x, SHUFFLE)

    @staticmethod
    def gamma_channel(gamma_norm, like: torch.Tensor) -> torch.Tensor:
        """A constant (B, 1, h, w) channel holding ``gamma_norm`` (a float or a (B,) tensor)."""
        g = torch.as_tensor(gamma_norm, dtype=like.dtype, device=like.device).reshape(-1, 1, 1, 1)
        return g.expand(like.shape[0], 1, like.shape[2], like.shape[3])

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """conv0 -> residual blocks -> conv1, all at half resolution: (B, in, h, w) -> (B, 4*out, h, w)."""
        return self.conv1(self.block_stack(self.conv0(x)))

    def run_body(self, x: torch.Tensor, tile_size: int | None = None) -> torch.Tensor:
        """:meth:`body`, optionally tile by tile.

        Args:
            x: (B, in_channels, h, w), the half-resolution input of conv0.
            tile_size: tile edge in half-resolution pixels, or None for one pass. Each tile is computed with
                a halo of ``num_convs`` pixels (one per 3x3 convolution), so the result equals the one-pass
                result up to float rounding: a pixel depends only on inputs within that distance, and at the
                image border the tile sees the same zero padding as the whole image.

        Returns:
            (B, 4 * out_channels, h, w).
        """
        h, w = x.shape[-2:]
        if tile_size is None or (h <= tile_size and w <= tile_size):
            return self.body(x)
        halo = self.config.num_convs
        out = x.new_empty((x.shape[0], self.out_channels * SHUFFLE**2, h, w))
        # equal tiles (no thin remainder strips: convolutions on slivers are several times slower per pixel)
        rows, cols = _split(h, tile_size), _split(w, tile_size)
        for y0, y1 in rows:
            for x0, x1 in cols:
                ya, yb = max(y0 - halo, 0), min(y1 + halo, h)
                xa, xb = max(x0 - halo, 0), min(x1 + halo, w)
                tile = self.body(x[:, :, ya:yb, xa:xb].contiguous())
                out[:, :, y0:y1, x0:x1] = tile[:, :, y0 - ya : y0 - ya + (y1 - y0), x0 - xa : x0 - xa + (x1 - x0)]
        return out

    def run_body_sparse(self, x: torch.Tensor, needed: torch.Tensor, tile_size: int, cell: int | None = None) -> tuple:
        """:meth:`body` only where a ``needed`` pixel lies (exact there, as :meth:`run_body`).

        The half-resolution grid is cut into cells of about ``cell`` px (None = ``tile_size``); each row of
        cells is computed as runs of consecutive cells holding a needed pixel, at most ``tile_size`` px wide,
        each with the exact halo. Small cells skip more; merging them into runs keeps the halo cost low.

        Args:
            x: (B, in_channels, h, w), the half-resolution input of conv0.
            needed: (h, w) bool, pixels whose output is used (one mask for the whole batch).
            tile_size: largest run edge in half-resolution pixels; each computed run has the exact halo.
            cell: skipping granularity in half-resolution pixels (at most ``tile_size``); None = ``tile_size``.

        Returns:
            ``(out, computed)``: (B, 4 * out_channels, h, w) with zeros in skipped cells, and the (h, w) bool
            mask of the computed pixels (a superset of ``needed``).
        """
        h, w = x.shape[-2:]
        tile_size = max(int(tile_size), 1)
        cell = tile_size if cell is None else max(min(int(cell), tile_size), 1)
        halo = self.config.num_convs
        out = x.new_zeros((x.shape[0], self.out_channels * SHUFFLE**2, h, w))
        computed = torch.zeros((h, w), dtype=torch.bool, device=x.device)
        rows, cols = _split(h, cell), _split(w, cell)
        per_cell = _cells_any(needed, rows, cols).tolist()  # one reduction, not a device sync per cell
        max_run = max(tile_size // cell, 1)
        for (y0, y1), used_cells in zip(rows, per_cell):
            j = 0
            while j < len(cols):
                if not used_cells[j]:
                    j += 1
                    continue
                k = j  # extend the run over the following used cells, up to tile_size px
                while k + 1 < len(cols) and used_cells[k + 1] and k + 1 - j < max_run:
                    k += 1
                x0, x1 = cols[j][0], cols[k][1]
                ya, yb = max(y0 - halo, 0), min(y1 + halo, h)
                xa, xb = max(x0 - halo, 0), min(x1 + halo, w)
                out[:, :, y0:y1, x0:x1] = self._body_trimmed(  # contiguous: a strided view is convolved slowly
                    x[:, :, ya:yb, xa:xb].contiguous(), (y0 - ya, yb - y1, x0 - xa, xb - x1))
                computed[y0:y1, x0:x1] = True
                j = k + 1
        return out, computed

    def _body_trimmed(self, tile: torch.Tensor, halos: tuple) -> torch.Tensor:
        """:meth:`body` of a tile, cropped by ``halos`` = (top, bottom, left, right) px. Along an axis whose two
        sides both carry the full halo (``num_convs`` px: the tile is inside the image there) the convolutions
        pad nothing, so each computes only what the later ones read (one pixel less per side and layer); along
        the other axes they zero-pad as for the whole image and the halos are cropped at the end (no copy for
        one-sided padding). Same values as ``body(tile)`` cropped, at a fraction of the halo's cost."""
        halo = self.config.num_convs
        valid = (halos[0] >= halo and halos[1] >= halo, halos[2] >= halo and halos[3] >= halo)  # rows, columns
        padding = (int(not valid[0]), int(not valid[1]))

        def conv(layer: ConvELU, x: torch.Tensor) -> torch.Tensor:
            y = F.conv2d(x, layer.conv.weight, layer.conv.bias, padding=padding)
            return F.elu(y, alpha=1.0, inplace=True) if layer.activation is not None else y

        def crop(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
            h, w = x.shape[-2:]
            return x[:, :, top : h - bottom, left : w - right]

        x = conv(self.conv0, tile)
        skip_rows, skip_cols = 2 * int(valid[0]), 2 * int(valid[1])  # what two valid convolutions lose per side
        for block in self.block_stack.blocks:
            x = conv(block[1], conv(block[0], x)).add_(crop(x, skip_rows, skip_rows, skip_cols, skip_cols))
        x = conv(self.conv1, x)
        rows = (0, 0) if valid[0] else halos[:2]
        cols = (0, 0) if valid[1] else halos[2:]
        return crop(x, *rows, *cols)

    def body_where_needed(self, x: torch.Tensor, needed: torch.Tensor, size: tuple, tile_size: int,
                          cell: int | None = None) -> tuple:
        """:meth:`body` + :meth:`back_end` evaluated only where the output is used (the sparse forward of both
        networks).

        Args:
            x: (B, in_channels, h2, w2), the half-resolution input of conv0 (after the front end).
            needed: (B or 1, 1, h, w) bool: output pixels whose value is used.
            size: (h, w), the output size.
            tile_size, cell: as :meth:`run_body_sparse`, in full-resolution px.

        Returns:
            ``(out, exact)``: (B, out_channels, h, w) equal to the dense ``back_end(body(x), size)`` (up to float
            rounding) wherever the (1, 1, h, w) bool ``exact`` is True, a superset of ``needed``; zeros where
            nothing was computed.
        """
        half = x.shape[-2:]
        # a needed output pixel reads the body output within 1 px (back-end resize of odd sizes): pool the mask
        # to the half resolution, then grow it by 2 px
        needed_half = F.adaptive_max_pool2d(needed.any(dim=0, keepdim=True).to(x.dtype), half)
        needed_half = F.max_pool2d(needed_half, 5, stride=1, padding=2)[0, 0] > 0
        body, computed = self.run_body_sparse(x, needed_half, half_tile(tile_size), half_tile(cell))
        out = self.back_end(body, size)
        # exact where every body pixel the output reads was computed: upsample the cell mask, shrink it by 2 px
        skipped = F.interpolate((~computed)[None, None].to(x.dtype), size=size, mode="nearest")
        exact = F.max_pool2d(skipped, 5, stride=1, padding=2) == 0
        return out, exact

    def back_end(self, x: torch.Tensor, size: tuple) -> torch.Tensor:
        """Depth-to-space by 2, then bilinear (align_corners=True) to ``size`` = (h, w)."""
        return resize_bilinear(F.pixel_shuffle(x, SHUFFLE), size)

    def extra_repr(self) -> str:
        return f"middle_channels={self.config.middle_channels}, num_blocks={self.config.num_blocks}"


def _cells_any(mask: torch.Tensor, rows: list, cols: list) -> torch.Tensor:
    """(len(rows), len(cols)) CPU bool tensor: whether each cell ``mask[y0:y1, x0:x1]`` of an (h, w) bool mask
    holds a True pixel (from a summed-area table: one pass over the mask)."""
    table = F.pad(mask.to(torch.int32).cumsum(0).cumsum(1), (1, 0, 1, 0)).cpu()
    ys = torch.tensor([0] + [y1 for _, y1 in rows])
    xs = torch.tensor([0] + [x1 for _, x1 in cols])
    corners = table[ys][:, xs]
    return (corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]) > 0


def _split(length: int, tile_size: int) -> list:
    """Split ``range(length)`` into ``ceil(length / tile_size)`` nearly equal (start, stop) intervals."""
    count = -(-length // tile_size)
    bounds = [round(i * length / count) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def half_tile(tile_size: int | None) -> int | None:
    """Full-resolution tile edge (px) -> half-resolution tile edge used by :meth:`ShuffleConvNet.run_body`."""
    if tile_size is None:
        return None
    return max(int(tile_size) // SHUFFLE, 1)

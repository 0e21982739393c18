"""The torch backend of the classical renderer: every cell, on CPU or CUDA tensors (the reference the others
agree with, and the fallback of every cell another backend lacks).

The backend's declaration (read by :mod:`.table`): :data:`NAME`, :func:`available`, :data:`CELLS`, :data:`DILATE`.
The kernels live in :mod:`.exact` (exact, plain), :mod:`.fast` (fast, plain), :mod:`.lens_kernels` (exact and
fast with a lens shape) and :mod:`.layered` (layered, plain and shaped); the dilation in :mod:`.dilate`.
"""

from __future__ import annotations

import torch

from .common import Cell
from .dilate import dilate_defocus
from .exact import scatter_exact
from .fast import scatter_fast
from .layered import scatter_layered, scatter_layered_lens
from .lens_kernels import scatter_exact_lens, scatter_fast_lens

__all__ = ["NAME", "available", "CELLS", "DILATE"]

NAME = "torch"
#: what :func:`available` needs, for the table's error message
NEEDS = "nothing (always available)"


def available(device: torch.device | str | None = None) -> bool:
    """Always True: torch runs wherever the tensors are."""
    return True


#: the cells this backend runs (mode, lens shape, apertures): see :mod:`.table`
CELLS = (
    Cell(NAME, "exact", "plain", scatter_exact),
    Cell(NAME, "exact", "shaped", scatter_exact_lens),
    Cell(NAME, "fast", "plain", scatter_fast),
    Cell(NAME, "fast", "shaped", scatter_fast_lens),
    Cell(NAME, "layered", "plain", scatter_layered),
    Cell(NAME, "layered", "shaped", scatter_layered_lens),
)
#: the official dilated defocus
DILATE = dilate_defocus

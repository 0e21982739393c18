"""THE kernel table of the classical renderer: which kernel renders (mode, lens shape, aperture) on which backend.

Rows: the modes ``exact``, ``fast``, ``layered``; columns: the lens kinds ``plain`` (no lens shape) and ``shaped``
(cat's eye, swirl or ring: per-source kernels); colour fringing is three renders over these cells
(:func:`bokehme_core.render_classical`). Each backend module declares what it runs, and nothing else decides:

=========  =====================  ==============================================================================
backend    module                 cells (kernel; apertures when not all)
=========  =====================  ==============================================================================
torch      :mod:`.torch_backend`  every cell, CPU or CUDA: exact :mod:`.exact` / :mod:`.lens_kernels`, fast
                                  :mod:`.fast` / :mod:`.lens_kernels`, layered :mod:`.layered`; dilation
                                  :mod:`.dilate`
numba      :mod:`.numba_backend`  CPU, ``numba`` installed: exact plain / shaped (circle, polygon), fast and
                                  layered plain / shaped (:mod:`.numba_backend`, :mod:`.lens_numba`,
                                  :mod:`.layered_numba`); its own dilation
cupy       :mod:`.cupy_backend`   CUDA, ``cupy`` installed: exact plain (circle, polygon)
=========  =====================  ==============================================================================

A backend module states ``NAME``, ``available(device)``, ``NEEDS`` (for the error message), ``CELLS`` (a tuple of
:class:`.common.Cell`: backend, mode, lens kind, kernel, apertures) and ``DILATE`` (its dilated defocus, or None).
:func:`lookup` walks the backends ``backend="auto"`` tries on the device (:data:`AUTO`: CPU numba then torch,
CUDA cupy then torch) and returns the first available one's cell; a forced backend is tried alone. No cell: one
ValueError naming the mode, the lens, the aperture, the device and why each backend tried cannot run it. To add
a backend: write its module with those five names, add it to :data:`BACKENDS` (and to :data:`AUTO` where it
should be chosen automatically) and to ``BACKENDS`` of :mod:`bokehme_core.scatter`; tests/core/test_table.py
walks every cell by signature.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

from . import cupy_backend, numba_backend, torch_backend
from .common import LENS_KINDS, Cell

__all__ = ["BACKENDS", "AUTO", "MODES", "cells", "lens_kind", "lookup", "dilation"]

logger = logging.getLogger("bokehme_core.scatter")

MODES = ("exact", "fast", "layered")
#: backend name -> its module (the declaration: NAME, available, NEEDS, CELLS, DILATE)
BACKENDS = {"torch": torch_backend, "numba": numba_backend, "cupy": cupy_backend}
#: the backends ``backend="auto"`` tries, in order, per device type (other devices: torch)
AUTO = {"cpu": ("numba", "torch"), "cuda": ("cupy", "torch")}

_LOGGED: set = set()


def cells() -> list[Cell]:
    """Every cell of every backend (available here or not), in table order."""
    return [cell for module in BACKENDS.values() for cell in module.CELLS]


def lens_kind(lens) -> str:
    """The lens column of the table: ``"plain"`` for None or a lens shape without cat's eye, swirl and ring,
    else ``"shaped"``."""
    return "plain" if lens is None or lens.shapes_neutral else "shaped"


def _candidates(backend: str, device: torch.device) -> tuple:
    return AUTO.get(device.type, ("torch",)) if backend == "auto" else (backend,)


def _find(module, mode: str, kind: str, aperture_kind: str) -> Cell | None:
    for cell in module.CELLS:
        if cell.mode == mode and cell.lens == kind and aperture_kind in cell.apertures:
            return cell
    return None


def lookup(mode: str, lens, aperture, device: torch.device | str, backend: str = "auto") -> Cell:
    """The cell that renders ``mode`` with ``lens`` (a :class:`bokehme_core.aperture.LensShape` or None) and
    ``aperture`` on ``device`` with ``backend`` ("auto" or a name of :data:`BACKENDS`); raises ValueError when
    no backend tried has it."""
    device = torch.device(device)
    kind = lens_kind(lens)
    tried = _candidates(backend, device)
    reasons = []
    for name in tried:
        module = BACKENDS[name]
        if not module.available(device):
            reasons.append(f"backend={name!r} needs {module.NEEDS}, which it does not have here")
            continue
        cell = _find(module, mode, kind, aperture.kind)
        if cell is not None:
            if backend == "auto":
                _log_choice(cell, reasons, mode, kind, aperture, device)
            return cell
        reasons.append(f"backend={name!r} has no {mode} kernel for a {kind} lens with a {aperture.kind} aperture")
    lens_text = "none" if lens is None else f"{kind} {lens!r}"
    raise ValueError(f"render_classical has no kernel for mode={mode!r}, lens={lens_text}, "
                     f"aperture={aperture.kind!r} on device {device} with backend={backend!r}: "
                     f"{'; '.join(reasons)}; use backend='auto' or 'torch'")


def dilation(device: torch.device | str, backend: str = "auto") -> Callable:
    """The dilated-defocus function for ``device`` and ``backend``: the first available backend tried (as in
    :func:`lookup`) that has its own, else the torch one."""
    device = torch.device(device)
    for name in _candidates(backend, device):
        module = BACKENDS[name]
        if module.DILATE is not None and module.available(device):
            return module.DILATE
    return torch_backend.DILATE


def _log_choice(cell: Cell, reasons: list, mode: str, kind: str, aperture, device: torch.device) -> None:
    """Say once per process which CPU backend ``auto`` picked, and how to get the compiled one."""
    if device.type != "cpu":
        return
    if cell.backend == "numba":
        _log_once("render_classical: CPU backend numba (compiled kernels; the first call on a machine compiles)")
    elif not numba_backend.available(device):
        _log_once("render_classical: CPU backend torch; 'pip install numba' makes the classical renderer 10x+ "
                  "faster on CPU", level=logging.WARNING)
    elif reasons:
        _log_once(f"render_classical: CPU backend torch for {mode} mode, {kind} lens, {aperture.kind} aperture "
                  f"(no numba kernel for it)")


def _log_once(message: str, level: int = logging.INFO) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        logger.log(level, message)

"""The numba runtime of the classical renderer: what every compiled (numba) kernel family shares.

Used by the numba backend (:mod:`.numba_backend`, :mod:`.lens_numba`, :mod:`.layered_numba`) and by the analytic
error map (:mod:`bokehme_core.error_map`). ``numba`` is an optional dependency, imported lazily by
:func:`available` and by the first compiled call; importing ``bokehme_core`` never imports it.

* :func:`available`: whether numba imports;
* :func:`logged_first_calls`: numba dispatchers wrapped to log their first call (compiled or loaded from the
  on-disk cache; a cache written under another import name of the package is dropped and recompiled);
* :func:`numba_threads`: the thread count for a ``with`` block;
* :func:`band_rows` / :func:`run_rows`: a row-gather kernel called over bands of target rows, progress between
  calls (:data:`ROWS_PER_CALL`, :data:`BAND_PAIRS`);
* :func:`per_image_cpu`: the batch loop (:func:`.common.per_image`) on contiguous float32 CPU tensors.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time

import numpy as np
import torch

from .common import entry_writes, per_image

__all__ = ["available", "logged_first_calls", "numba_threads", "band_rows", "run_rows", "row_max", "per_image_cpu",
           "check_exact_aperture", "numba_entry_writes", "ROWS_PER_CALL", "BAND_PAIRS"]

logger = logging.getLogger(__name__)

#: most target rows per kernel call (progress is reported between calls; see :func:`band_rows`)
ROWS_PER_CALL = 64
#: most (source, kernel row) pairs one kernel call visits (:func:`band_rows`)
BAND_PAIRS = 1 << 24


def logged_first_calls(kernels: dict, family: str) -> dict:
    """Wrap numba dispatchers so that the first call of each logs once, at INFO, how long it took and whether
    the machine code was compiled or loaded from numba's on-disk cache.

    A cache entry written while this package was imported under another name (``bokehme_core`` from the CLI or
    the tests, ``<pack>.bokehme_core`` inside ComfyUI) refers to that name and cannot be loaded
    (ImportError): the kernel is then compiled without the disk cache, once per process, with a warning."""

    def wrap(name, dispatcher):
        state = {"first": True}

        def run(*args):
            try:
                return dispatcher(*args)
            except ImportError as exc:
                if not _drop_disk_cache(dispatcher):
                    raise
                logger.warning("numba %s kernel '%s': its on-disk cache was written under another import name "
                               "of this package (%s); compiling it for this process", family, name, exc)
                return dispatcher(*args)

        def call(*args):
            if not state["first"]:
                return run(*args)
            state["first"] = False
            start = time.perf_counter()
            result = run(*args)
            stats = getattr(dispatcher, "stats", None)
            compiled = bool(getattr(stats, "cache_misses", None)) if stats is not None else True
            logger.info("numba %s kernel '%s' ready in %.1f s (%s)", family, name, time.perf_counter() - start,
                        "compiled and cached on disk" if compiled else "loaded from the on-disk cache")
            return result

        return call

    return {name: wrap(name, dispatcher) for name, dispatcher in kernels.items()}


def _drop_disk_cache(dispatcher) -> bool:
    """Make ``dispatcher`` and every compiled function of its module (the helpers it calls) compile without
    numba's on-disk cache from now on; False if that is not possible."""
    import sys

    try:
        from numba.core.caching import NullCache
        from numba.core.dispatcher import Dispatcher
    except ImportError:
        return False
    module = sys.modules.get(getattr(getattr(dispatcher, "py_func", None), "__module__", ""), None)
    targets = [dispatcher] + ([v for v in vars(module).values() if isinstance(v, Dispatcher)] if module else [])
    for target in targets:
        if hasattr(target, "_cache"):
            target._cache = NullCache()
    return hasattr(dispatcher, "_cache")


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """True when ``numba`` imports (the kernels are compiled on first use, not here)."""
    try:
        import numba  # noqa: F401
    except Exception as err:  # ImportError, or a numba/numpy version mismatch raised at import
        logger.debug("Numba backend unavailable: %s", err)
        return False
    return True


@contextlib.contextmanager
def numba_threads():
    """Run the ``with`` block with ``min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)`` numba threads;
    the previous setting comes back on exit, also when the block raises (a cancelled render)."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def band_rows(width: int, win_y: int, multiple: int = 1) -> int:
    """Target rows per kernel call for a ``width``-pixel image whose kernels reach ``win_y`` rows: at most
    :data:`ROWS_PER_CALL`, fewer when one call would visit more than :data:`BAND_PAIRS` (source, kernel row)
    pairs, a multiple of ``multiple`` (the lens kernel's row blocks) and at least ``multiple``. Progress is
    reported between calls, so this bounds the work between two reports; the rows are independent, so the
    result does not depend on it."""
    per_row = max(1, int(width) * (2 * max(int(win_y), 0) + 1))
    rows = min(ROWS_PER_CALL, BAND_PAIRS // per_row)
    return max(multiple, rows - rows % multiple)


def row_max(values: torch.Tensor) -> np.ndarray:
    """(H,) the largest value of each row of (H, W) ``values`` (rows that reach nothing are skipped whole)."""
    return values.amax(dim=1).contiguous().numpy()


def run_rows(kernel, H: int, args_before: tuple, args_after: tuple, progress, offset: int, total: int,
             band: int = ROWS_PER_CALL) -> None:
    """Call ``kernel(row_lo, row_hi, *args_before... )`` over all target rows in bands of ``band`` rows
    (:func:`band_rows`), reporting ``progress(offset + row_hi, total)`` after each."""
    for row_lo in range(0, H, band):
        row_hi = min(row_lo + band, H)
        kernel(row_lo, row_hi, *args_before, *args_after)
        if progress is not None:
            progress(offset + row_hi, total)


def per_image_cpu(image: torch.Tensor, defocus_px: torch.Tensor, one, progress):
    """:func:`.common.per_image` with each image and defocus map as contiguous float32 CPU tensors."""

    def on_cpu(img, dfc, sub):
        return one(img.detach().to("cpu", torch.float32).contiguous(),
                   dfc.detach().to("cpu", torch.float32).contiguous(), sub)

    return per_image(image, defocus_px, on_cpu, progress)


def check_exact_aperture(aperture) -> None:
    """The numba exact kernels (plain and lens) handle circle and polygon apertures only."""
    if aperture.kind not in ("circle", "polygon"):
        raise ValueError(f"the numba exact kernel handles circle and polygon apertures, got kind "
                         f"{aperture.kind!r}; use backend='torch' for mask apertures")


def numba_entry_writes(left_flat: torch.Tensor, right_flat: torch.Tensor, height_flat: torch.Tensor) -> tuple:
    """:func:`.common.entry_writes` as the compiled kernels read them: ``(entry_cols (N, 4) int32, entry_coef
    (N, 4) float32)`` numpy arrays, columns relative to the source (:func:`._numba_kernels.splat_table_row`)."""
    cols, coef = entry_writes(left_flat, right_flat, height_flat)
    return cols.to(torch.int32).numpy(), coef.contiguous().numpy()

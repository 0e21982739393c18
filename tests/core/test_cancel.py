"""Cancelling a classical render from its progress callback: ``progress(done, total)`` is called within a frame
(row bands, chunks, slabs) in every mode and backend, an exception raised by it propagates out at once, leaves the
numba thread setting as it was, and reporting progress never changes the output."""

from __future__ import annotations

import pytest
import torch
from helpers import scatter_scene

from bokehme_core import Aperture, render_classical
from bokehme_core.aperture import LensShape
from bokehme_core.scatter import common

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODES = ("exact", "fast", "layered")
LENSES = {"plain": None, "lens": LensShape(cat_eye=0.6, ring=0.4)}


class Cancelled(Exception):
    pass


def _backends():
    try:
        import numba  # noqa: F401
    except ImportError:
        return ("torch",)
    return ("torch", "numba")


def _record(fail_at=None):
    calls = []

    def progress(done, total):
        calls.append((done, total))
        if fail_at is not None and len(calls) >= fail_at:
            raise Cancelled(f"cancelled at call {len(calls)}")

    return calls, progress


@pytest.fixture
def small_steps(monkeypatch):
    """Tiny work budgets between two reports, so a test frame has the many reports a 4K frame has."""
    monkeypatch.setattr(common, "HEARTBEAT_PAIRS", 64)
    from bokehme_core.scatter import numba_runtime

    monkeypatch.setattr(numba_runtime, "BAND_PAIRS", 1)


@pytest.mark.parametrize("lens", list(LENSES))
@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("mode", MODES)
def test_raising_callback_stops_the_render_within_the_frame(mode, backend, lens, small_steps):
    image, defocus = scatter_scene(40, 48, seed=3, kmax=9.0)
    options = dict(mode=mode, backend=backend, aperture=Aperture.polygon(6), lens=LENSES[lens], gamma=2.0)
    calls, progress = _record()
    expected = render_classical(image, defocus, progress=progress, **options)
    # one frame (one image) reports many times: the work between two reports is a small part of it
    assert len(calls) >= 8, calls
    assert calls[-1][0] == calls[-1][1] and all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))
    threads = _numba_threads()
    for fail_at in (1, 3):
        cancelled, progress = _record(fail_at)
        with pytest.raises(Cancelled, match=f"cancelled at call {fail_at}"):
            render_classical(image, defocus, progress=progress, **options)
        assert len(cancelled) == fail_at  # nothing swallowed it and nothing ran on to report again
        assert _numba_threads() == threads
    # nothing left behind: the next render is the same
    assert torch.equal(render_classical(image, defocus, **options).bokeh, expected.bokeh)


@pytest.mark.parametrize("lens", list(LENSES))
@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("mode", MODES)
def test_progress_does_not_change_the_output(mode, backend, lens, small_steps):
    image, defocus = scatter_scene(33, 29, seed=4, kmax=7.0)
    image = torch.cat([image, image.flip(-1)])
    options = dict(mode=mode, backend=backend, lens=LENSES[lens])
    calls, progress = _record()
    with_progress = render_classical(image, defocus, progress=progress, **options)
    assert calls and calls[-1][0] == calls[-1][1]
    without = render_classical(image, defocus, **options)
    assert torch.equal(with_progress.bokeh, without.bokeh)
    assert torch.equal(with_progress.dilated_defocus, without.dilated_defocus)


def test_numba_bands_bound_the_work_between_reports():
    """A 4K frame at a large radius reports after at most BAND_PAIRS (source, kernel row) pairs (a few more
    with the lens kernel's 8-row blocks), and a frame of the benchmark sizes keeps the 64-row bands."""
    pytest.importorskip("numba")
    from bokehme_core.scatter.numba_runtime import BAND_PAIRS, ROWS_PER_CALL, band_rows

    for win_y in (1, 20, 81, 300):
        rows = band_rows(3840, win_y, multiple=1)
        assert rows * 3840 * (2 * win_y + 1) <= BAND_PAIRS
    assert band_rows(3840, 2001, multiple=1) == 1
    assert band_rows(3840, 2001, multiple=8) == 8 and band_rows(3840, 26) == ROWS_PER_CALL


def _numba_threads():
    try:
        import numba
    except ImportError:
        return None
    return numba.get_num_threads()

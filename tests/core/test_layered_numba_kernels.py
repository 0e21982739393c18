"""Tests of the compiled layered-mode kernels (bokehme_core/scatter/_layered_numba_kernels.py): each pass against
the torch code it replaces (bokehme_core/scatter/layered.py, backend="torch")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bokehme_core import Aperture, signed_defocus
from bokehme_core.scatter.layered import _distance_to, _push_pull, hidden_layer, scatter_layered
from bokehme_core.scatter.layered_numba import hidden_layer_numba, scatter_layered_numba
from bokehme_core.scatter.numba_backend import available as numba_available

pytestmark = pytest.mark.skipif(not numba_available(), reason="no numba")


def _scene(height, width, seed, blocks=6):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, height, width, generator=gen) ** 2
    disparity = torch.rand(1, 1, blocks, blocks, generator=gen)
    disparity = torch.nn.functional.interpolate(disparity, size=(height, width), mode="nearest")
    return image, disparity


# ---- passes against the torch code ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 3), (37, 53), (64, 64)])
def test_distance_grid_equals_scipy_edt(shape):
    from bokehme_core.scatter import _layered_numba_kernels as k

    gen = torch.Generator().manual_seed(shape[0] * 100 + shape[1])
    grid = torch.zeros(5, *shape)
    grid[4] = (torch.rand(shape, generator=gen) > 0.93).float()
    grid[4].view(-1)[0] = 1.0  # at least one covered cell
    dist = np.empty(shape, dtype=np.float32)
    k.distance_grid(grid.numpy(), 3, dist)
    torch.testing.assert_close(torch.from_numpy(dist), _distance_to(grid[4] > 0) * 3, atol=0, rtol=0)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (5, 7), (33, 47)])
def test_push_pull_matches_the_torch_pyramid(shape):
    from bokehme_core.scatter import _layered_numba_kernels as k

    gen = torch.Generator().manual_seed(shape[0] + shape[1])
    grid = torch.rand(5, *shape, generator=gen)
    grid[4] *= (torch.rand(shape, generator=gen) > 0.6).float()
    grid[4].view(-1)[0] = 0.5
    filled = np.empty((4, *shape), dtype=np.float32)
    k.push_pull(grid.numpy(), np.float32(0.25), filled)
    torch.testing.assert_close(torch.from_numpy(filled), _push_pull(grid), atol=1e-5, rtol=1e-5)


def test_hidden_samples_match_the_torch_search():
    image, disparity = _scene(48, 64, seed=1)
    defocus = signed_defocus(disparity, 9.0, 0.2)[0, 0]
    colour = image[0]
    n_slabs = 10
    step = float(defocus.max() - defocus.min()) / (n_slabs - 1)
    pos = ((defocus.flatten() - float(defocus.min())) / step).clamp(0, n_slabs - 1)
    lower = pos.floor().clamp(max=n_slabs - 2).long()
    pix, c, d = hidden_layer(colour, defocus, lower, n_slabs, step)
    npix, nc, nd = hidden_layer_numba(colour, defocus, lower, n_slabs, step)
    order = torch.argsort(pix)
    assert pix.numel() > 0
    torch.testing.assert_close(npix, pix[order], atol=0, rtol=0)
    torch.testing.assert_close(nc, c[:, order], atol=1e-5, rtol=0)
    torch.testing.assert_close(nd, d[order], atol=1e-4, rtol=0)


# ---- the whole compiled slab loop ---------------------------------------------------------------------------
@pytest.mark.parametrize("aperture", [Aperture.circle(), Aperture.polygon(6), Aperture.circle(anamorphic=1.5)],
                         ids=["circle", "hexagon", "anamorphic"])
@pytest.mark.parametrize("K", [12.0, 130.0], ids=["table-radii", "scaled-radii"])
def test_numba_slab_loop_matches_the_torch_backend(aperture, K):
    # K = 130: radii above the row tables (48 px), whose unit-mass weight depends on the slab
    image, disparity = _scene(40, 56, seed=2)
    defocus = signed_defocus(disparity, K, 0.4)
    a = scatter_layered(image, defocus, aperture)
    b = scatter_layered_numba(image, defocus, aperture)
    torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)


def test_numba_slab_loop_does_not_depend_on_the_thread_count():
    import numba

    image, disparity = _scene(64, 72, seed=3)
    defocus = signed_defocus(disparity, 14.0, 0.6)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = scatter_layered_numba(image, defocus, Aperture.circle())
        torch.set_num_threads(max(2, min(threads, numba.config.NUMBA_NUM_THREADS)))
        more = scatter_layered_numba(image, defocus, Aperture.circle())
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, more)


def test_progress_over_rows_reaches_total():
    calls = []
    image, disparity = _scene(24, 20, seed=4)
    scatter_layered_numba(image, signed_defocus(disparity, 6.0, 0.5), Aperture.circle(),
                          progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1]
    assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))

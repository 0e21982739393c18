"""Tests of the occlusion-aware layered mode (bokehme_core/scatter/layered.py, render_classical(mode="layered"))."""

from __future__ import annotations

import pytest
import torch

from bokehme_core import Aperture, render_classical, signed_defocus
from bokehme_core.scatter.fast import scatter_fast
from bokehme_core.scatter.layered import hidden_layer, scatter_layered
from bokehme_core.scatter.layered_numba import scatter_layered_numba
from bokehme_core.scatter.numba_backend import available as numba_available

BACKENDS = ["torch", pytest.param("numba", marks=pytest.mark.skipif(not numba_available(), reason="no numba"))]

#: the layered cells without a lens shape, per backend
LAYERED = {"torch": scatter_layered, "numba": scatter_layered_numba}


def _image(height=32, width=40, seed=0):
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _square_scene(height=40, width=48):
    """Disparity 1 inside a centred square, 0 around it."""
    disparity = torch.zeros(1, 1, height, width)
    disparity[..., 12:28, 16:32] = 1.0
    return disparity


# ---- smoke, shapes, batch -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_shape_dtype_and_finite(backend):
    image = _image()
    disparity = torch.rand(1, 1, 32, 40, generator=torch.Generator().manual_seed(1))
    out = render_classical(image, signed_defocus(disparity, 8.0, 0.4), gamma=2.2, mode="layered", backend=backend)
    assert out.bokeh.shape == (1, 3, 32, 40) and out.bokeh.dtype == torch.float32
    assert bool(torch.isfinite(out.bokeh).all())
    assert out.dilated_defocus.shape == (1, 1, 32, 40)


def test_backends_agree():
    if not numba_available():
        pytest.skip("no numba")
    image = _image(seed=3)
    disparity = torch.rand(1, 1, 32, 40, generator=torch.Generator().manual_seed(4))
    defocus = signed_defocus(disparity, 6.0, 0.5)
    a = render_classical(image, defocus, gamma=2.2, mode="layered", backend="torch").bokeh
    b = render_classical(image, defocus, gamma=2.2, mode="layered", backend="numba").bokeh
    torch.testing.assert_close(a, b, atol=2e-5, rtol=0)


def test_batch_split_invariance_and_shared_defocus():
    image = torch.cat([_image(seed=5), _image(seed=6)])
    disparity = torch.rand(2, 1, 32, 40, generator=torch.Generator().manual_seed(7))
    defocus = signed_defocus(disparity, 6.0, torch.tensor([0.2, 0.7]))
    both = render_classical(image, defocus, mode="layered", gamma=2.0).bokeh
    first = render_classical(image[:1], defocus[:1], mode="layered", gamma=2.0).bokeh
    second = render_classical(image[1:], defocus[1:], mode="layered", gamma=2.0).bokeh
    torch.testing.assert_close(both, torch.cat([first, second]), atol=1e-6, rtol=0)
    shared = render_classical(image, defocus[:1], mode="layered").bokeh
    torch.testing.assert_close(shared[1:], render_classical(image[1:], defocus[:1], mode="layered").bokeh,
                               atol=1e-6, rtol=0)


# ---- properties ----------------------------------------------------------------------------------------------
def test_K_zero_returns_the_image():
    image = _image(seed=8)
    disparity = torch.rand(1, 1, 32, 40, generator=torch.Generator().manual_seed(9))
    out = render_classical(image, signed_defocus(disparity, 0.0, 0.5), gamma=2.2, mode="layered").bokeh
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("aperture", [Aperture.circle(), Aperture.polygon(6), Aperture.circle(anamorphic=1.5)],
                         ids=["circle", "hexagon", "anamorphic"])
def test_single_slab_equals_plain_scatter(backend, aperture):
    # one radius everywhere: a single slab, so the layered mode is the plain (fast) normalised scatter
    image = _image(seed=10)
    defocus = torch.full((1, 1, 32, 40), 3.7)
    layered = LAYERED[backend](image, defocus, aperture, pad=False)
    plain = scatter_fast(image, defocus, aperture)
    torch.testing.assert_close(layered, plain, atol=1e-4, rtol=0)
    # several radii inside one slab (slab_px large): the energy-preserving splat normalised by its coverage
    varying = 3.0 + torch.rand(1, 1, 32, 40, generator=torch.Generator().manual_seed(11))
    one_slab = LAYERED[backend](image, varying, aperture, pad=False, slab_px=10.0)
    splat = scatter_fast(image, varying, aperture, coverage=torch.ones(1, 1, 32, 40))
    torch.testing.assert_close(one_slab, splat[:, :3] / splat[:, 3:], atol=1e-4, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_image_stays_constant(backend):
    disparity = torch.rand(1, 1, 36, 44, generator=torch.Generator().manual_seed(12))
    disparity[..., 10:20, 10:30] = 1.0
    image = torch.full((1, 3, 36, 44), 0.35)
    out = render_classical(image, signed_defocus(disparity, 10.0, 0.3), gamma=2.2, mode="layered",
                           backend=backend).bokeh
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("radius", [0.0, 2.5, 9.3, 55.0])
def test_energy_preserving_splat_keeps_energy(backend, radius):
    from bokehme_core.scatter.numba_backend import scatter_fast_numba

    scatter = scatter_fast if backend == "torch" else scatter_fast_numba
    gen = torch.Generator().manual_seed(13)
    coverage = torch.zeros(1, 1, 150, 150)
    coverage[..., 65:85, 60:90] = torch.rand(1, 1, 20, 30, generator=gen)
    colour = torch.rand(1, 3, 150, 150, generator=gen) * coverage
    defocus = torch.full((1, 1, 150, 150), radius)
    defocus[..., 75:, :] *= -0.9
    for aperture in (Aperture.circle(), Aperture.polygon(5)):
        splat = scatter(colour, defocus, aperture, coverage=coverage)
        assert splat.shape == (1, 4, 150, 150)
        assert float(splat[0, 3].sum()) == pytest.approx(float(coverage.sum()), rel=1e-4)
        assert float(splat[0, :3].sum()) == pytest.approx(float(colour.sum()), rel=1e-4)


def test_layered_keeps_energy_of_isolated_lights():
    # dark scene, a few point lights at different depths: the light is spread, not lost or gained
    image = torch.zeros(1, 3, 64, 64)
    disparity = torch.full((1, 1, 64, 64), 0.5)
    for (y, x, d) in [(20, 20, 0.0), (40, 44, 1.0), (20, 44, 0.8)]:
        image[..., y, x] = 1.0
        disparity[..., y - 1:y + 2, x - 1:x + 2] = d
    out = scatter_layered(image, signed_defocus(disparity, 12.0, 0.5), Aperture.circle())
    assert float(out.sum()) == pytest.approx(float(image.sum()), rel=0.02)


def test_sharp_near_square_over_blurred_background_has_no_halo():
    # in-focus bright square (disparity 1, focus 1) in front of a dark textured, blurred background:
    # the exact scatter spreads the background over the square's edge (halo), the layered mode does not
    disparity = _square_scene()
    image = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(14)) * 0.2
    image[..., 12:28, 16:32] = 1.0
    defocus = signed_defocus(disparity, 8.0, 1.0)
    exact = render_classical(image, defocus, mode="exact").bokeh
    layered = render_classical(image, defocus, mode="layered").bokeh
    square = (slice(None), slice(None), slice(12, 28), slice(16, 32))
    assert float(exact[square].min()) < 0.8  # the official renderer halos
    assert float(layered[square].min()) > 0.99
    # just outside the square the background stays background (no bright rim)
    assert float(layered[..., 12:28, 33:36].max()) < 0.35


def test_blurred_foreground_shows_filled_background():
    # blurred bright square (r = 6 px) over an in-focus uniform background: at the square's edge the lens
    # shows half foreground, half (hidden) background; without the fill the foreground colour takes over
    disparity = _square_scene()
    image = torch.full((1, 3, 40, 48), 0.2)
    image[..., 12:28, 16:32] = 1.0
    defocus = signed_defocus(disparity, 6.0, 0.0)
    filled = scatter_layered(image, defocus, Aperture.circle())
    unfilled = scatter_layered(image, defocus, Aperture.circle(), fill=False)
    edge = filled[0, 0, 20, 16]  # first foreground column (the edge lies at x = 15.5)
    assert float(edge) == pytest.approx(0.6, abs=0.06)
    assert float(unfilled[0, 0, 20, 16]) > 0.95
    # as with a real lens the profile is symmetric about the edge: value(15.5 + s) - 0.6 = 0.6 - value(15.5 - s)
    inside, outside = filled[0, 0, 20, 16:21], filled[0, 0, 20, 11:16].flip(0)
    torch.testing.assert_close(inside - 0.6, 0.6 - outside, atol=0.01, rtol=0)


def test_hidden_layer_extends_the_farther_colour():
    # background colour 0.25 everywhere behind a square: the hidden samples behind the square carry it
    colour = torch.full((3, 40, 48), 0.25)
    colour[:, 12:28, 16:32] = 1.0
    defocus = 6.0 * _square_scene()[0, 0]
    n_slabs = 7
    lower = (defocus.flatten() / 1.0).floor().clamp(max=n_slabs - 2).long()
    pix, hidden_colour, hidden_d = hidden_layer(colour, defocus, lower, n_slabs, 1.0)
    assert pix.numel() > 0
    torch.testing.assert_close(hidden_colour, torch.full_like(hidden_colour, 0.25), atol=1e-5, rtol=0)
    assert float(hidden_d.abs().max()) < 1e-5
    ys, xs = pix // 48, pix % 48
    assert bool(((ys >= 12) & (ys < 28) & (xs >= 16) & (xs < 32)).all())  # only behind the square


def test_flip_equivariance():
    image = _image(seed=15)
    disparity = torch.rand(1, 1, 32, 40, generator=torch.Generator().manual_seed(16))
    defocus = signed_defocus(disparity, 7.0, 0.3)
    out = render_classical(image, defocus, mode="layered", gamma=2.2).bokeh
    flipped = render_classical(image.flip(-1), defocus.flip(-1), mode="layered", gamma=2.2).bokeh
    # equal up to the push-pull grid's alignment (the fill's pyramid pads odd sizes on one side)
    assert float((flipped.flip(-1) - out).abs().mean()) < 1e-3
    torch.testing.assert_close(flipped.flip(-1), out, atol=0.02, rtol=0)


def test_mask_aperture_and_highlight_flow_through():
    mask = torch.zeros(9, 9)
    mask[2:7, 2:7] = 1.0
    image = _image(seed=17)
    disparity = torch.rand(1, 1, 32, 40, generator=torch.Generator().manual_seed(18))
    defocus = signed_defocus(disparity, 8.0, 0.5)
    out = render_classical(image, defocus, mode="layered", aperture=Aperture.from_mask(mask), highlight=True,
                           K=8.0, gamma=2.2).bokeh
    assert out.shape == (1, 3, 32, 40) and bool(torch.isfinite(out).all())


def test_progress_reaches_total():
    calls = []
    disparity = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(19))
    render_classical(_image(16, 16), signed_defocus(disparity, 5.0, 0.5), mode="layered",
                     progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1]


# ---- exceptions ----------------------------------------------------------------------------------------------
def test_bad_inputs():
    image = _image(8, 8)
    defocus = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="mode must be one of 'exact', 'fast', 'layered', got 'layer'"):
        render_classical(image, defocus, mode="layer")
    with pytest.raises(ValueError, match=r"defocus_px must be within \[-2000, 2000\] pixels"):
        render_classical(image, defocus + 3000, mode="layered")
    with pytest.raises(ValueError, match=r"gamma must be in \[1, 5\]"):
        render_classical(image, defocus, mode="layered", gamma=0.5)
    with pytest.raises(ValueError, match="highlight=True needs K"):
        render_classical(image, defocus, mode="layered", highlight=True)
    with pytest.raises(ValueError, match="NaN"):
        render_classical(image, torch.full((1, 1, 8, 8), float("nan")), mode="layered")
    with pytest.raises(ValueError, match="defocus_px batch size 2 must be 1 or match image batch size 1"):
        render_classical(image, torch.zeros(2, 1, 8, 8), mode="layered")
    with pytest.raises(ValueError, match=r"slab_px must be in"):
        scatter_layered(image, defocus, Aperture.circle(), slab_px=0.0)
    with pytest.raises(ValueError, match=r"max_slabs must be in"):
        scatter_layered(image, defocus, Aperture.circle(), max_slabs=0)

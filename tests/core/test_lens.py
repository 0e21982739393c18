"""Tests for lens character (bokehme_core.aperture.LensShape and its kernels, bokehme_core.Lens): neutral == today,
shapes, energy, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bokehme_core import Aperture, render_classical, render_inputs, signed_defocus
from bokehme_core.aperture import LensShape, clip_area_ratio
from bokehme_core.lens import LENS_RANGES, Lens
from bokehme_core.defocus import lift_highlights
from bokehme_core.scatter.fast import scatter_fast
from helpers import scatter_scene
from scatter_reference import render_reference


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _numba():
    pytest.importorskip("numba")


def _scene(h, w, seed=0, kmax=6.0):
    return scatter_scene(h, w, seed=seed, kmax=kmax, lights=(4, 5))


def _point(h, w, y, x, radius):
    image = torch.zeros(1, 3, h, w)
    image[:, :, y, x] = 1.0
    return image, torch.full((1, 1, h, w), float(radius))


def _moments(weights: torch.Tensor):
    """Centroid, eigenvalues (ascending) and eigenvectors of the second moments of a 2-D weight map."""
    h, w = weights.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    m = weights.double().clamp(min=0)
    total = m.sum()
    cy, cx = (m * yy).sum() / total, (m * xx).sum() / total
    cov = torch.tensor([[(m * (xx - cx) ** 2).sum(), (m * (xx - cx) * (yy - cy)).sum()],
                        [(m * (xx - cx) * (yy - cy)).sum(), (m * (yy - cy) ** 2).sum()]]) / total
    values, vectors = torch.linalg.eigh(cov)
    return (float(cx), float(cy)), values, vectors


LENSES = [LensShape(cat_eye=0.8), LensShape(ring=0.7), LensShape(cat_eye=0.5, swirl=0.6, ring=0.5)]
APERTURES = [Aperture.circle(), Aperture.polygon(5, rotation=0.3), Aperture.circle(anamorphic=0.6)]


def _lens_splat(backend: str):
    """The fast lens kernel of ``backend`` (the one the layered cells splat every slab with)."""
    if backend == "torch":
        from bokehme_core.scatter.lens_kernels import scatter_fast_lens

        return scatter_fast_lens
    from bokehme_core.scatter.lens_numba import scatter_fast_lens_numba

    return scatter_fast_lens_numba


# --- neutral == today, bit for bit ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode, backend", [("exact", "torch"), ("fast", "torch"), ("exact", "numba"),
                                           ("fast", "numba")])
def test_neutral_lens_is_bit_identical(mode, backend):
    if backend == "numba":
        _numba()
    image, defocus = _scene(12, 15, seed=1)
    plain = render_classical(image, defocus, gamma=2.0, mode=mode, backend=backend, aperture=Aperture.polygon(6))
    for lens in (LensShape(), Lens(highlight_threshold=0.5, focus_range=0.0).shape):
        out = render_classical(image, defocus, gamma=2.0, mode=mode, backend=backend, aperture=Aperture.polygon(6),
                               lens=lens)
        assert torch.equal(out.bokeh, plain.bokeh) and torch.equal(out.dilated_defocus, plain.dilated_defocus)


def test_neutral_focus_options_are_bit_identical():
    disparity = torch.rand(2, 1, 7, 9, generator=torch.Generator().manual_seed(2))
    plain = signed_defocus(disparity, 37.0, [0.3, 0.6])
    assert torch.equal(Lens().signed_defocus(disparity, 37.0, [0.3, 0.6]), plain)
    image = torch.rand(2, 3, 7, 9, generator=torch.Generator().manual_seed(3))
    lifted, defocus = render_inputs(image, disparity, 37.0, [0.3, 0.6], **Lens().pre_render)
    assert torch.equal(defocus, plain) and lifted is image


def test_neutral_highlight_lift_returns_the_image():
    image = torch.rand(1, 3, 5, 5)
    assert lift_highlights(image, 0.5, 1.0) is image
    assert Lens().lift_highlights(image) is image


# --- bad options ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, value", [("cat_eye", 1.5), ("swirl", -0.1), ("ring", 2.0), ("fringe", 0.3),
                                         ("highlight_threshold", 1.2), ("highlight_gain", 0.5),
                                         ("highlight_gain", 60.0), ("focus_range", -0.2), ("near_scale", 11.0),
                                         ("far_scale", -1.0)])
def test_out_of_range_options_name_the_option_and_range(name, value):
    lo, hi = LENS_RANGES[name]
    with pytest.raises(ValueError, match=rf"{name} must be in \[{lo:g}, {hi:g}\], got {value:g}"):
        Lens(**{name: value})
    if name in ("cat_eye", "swirl", "ring", "fringe"):
        with pytest.raises(ValueError, match=rf"{name} must be in \[{lo:g}, {hi:g}\], got {value:g}"):
            LensShape(**{name: value})
    else:  # a pre-render option: an argument of render_inputs, not of the lens shape
        image = torch.rand(1, 3, 4, 4)
        with pytest.raises(ValueError, match=rf"{name} must be in \[{lo:g}, {hi:g}\], got {value:g}"):
            render_inputs(image, torch.rand(1, 1, 4, 4), 10.0, 0.5, **{name: value})
        with pytest.raises(TypeError, match=name):
            LensShape(**{name: value})


def test_bad_option_types_and_lens_argument():
    with pytest.raises(TypeError, match=r"cat_eye must be a number, got 'a lot'"):
        LensShape(cat_eye="a lot")
    with pytest.raises(ValueError, match=r"ring must be finite"):
        Lens(ring=float("nan"))
    image, defocus = _scene(6, 6)
    with pytest.raises(TypeError, match=r"lens must be a bokehme_core.LensShape \(LensShape\(cat_eye=0.5, ring=0.3, "
                                        r"\.\.\.\)\) or None, got dict$"):
        render_classical(image, defocus, lens={"cat_eye": 0.5})
    with pytest.raises(TypeError, match=r"got Lens \(a whole lens character: pass lens.shape here and "
                                        r"\*\*lens.pre_render to render_inputs\)"):
        render_classical(image, defocus, lens=Lens(cat_eye=0.5))
    with pytest.raises(ValueError, match=r"focus_range must be in \[0, 1\], got 1.5"):
        signed_defocus(torch.rand(1, 1, 4, 4), 10.0, 0.5, focus_range=1.5)
    with pytest.raises(ValueError, match=r"highlight_gain must be in \[1, 50\], got 0"):
        lift_highlights(torch.rand(1, 3, 4, 4), 0.9, 0.0)


def test_lens_is_hashable_and_frozen():
    assert LensShape(cat_eye=0.5) == LensShape(cat_eye=0.5) and hash(LensShape(ring=0.2)) == hash(LensShape(ring=0.2))
    assert LensShape().is_neutral and LensShape().shapes_neutral and not LensShape(fringe=0.05).is_neutral
    assert Lens(cat_eye=0.5) == Lens(cat_eye=0.5) and hash(Lens(near_scale=2.0)) == hash(Lens(near_scale=2.0))
    assert Lens().is_neutral and not Lens(far_scale=2.0).is_neutral and not Lens(ring=0.1).is_neutral
    with pytest.raises(Exception):
        LensShape().ring = 0.5
    with pytest.raises(Exception):
        Lens().ring = 0.5


def test_lens_splits_into_shape_and_pre_render_options():
    from bokehme_core.defocus import PRE_RENDER_DEFAULTS

    lens = Lens(cat_eye=0.1, swirl=0.2, ring=0.3, fringe=0.04, highlight_threshold=0.8, highlight_gain=2.0,
                focus_range=0.1, near_scale=0.5, far_scale=1.5)
    assert lens.shape == LensShape(cat_eye=0.1, swirl=0.2, ring=0.3, fringe=0.04)
    assert lens.pre_render == dict(highlight_threshold=0.8, highlight_gain=2.0, focus_range=0.1, near_scale=0.5,
                                   far_scale=1.5)
    # one set of defaults: the Lens fields, render_inputs / lift_highlights and the Lens node agree
    assert Lens().pre_render == PRE_RENDER_DEFAULTS
    assert not hasattr(lens, "scatter_only")


# --- cat's eye and swirl ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("aperture", [Aperture.circle(), Aperture.polygon(6), Aperture.circle(anamorphic=0.7)])
def test_cat_eye_is_none_at_the_centre(aperture):
    lens = LensShape(cat_eye=1.0, swirl=0.5)
    centre = lens.kernel(aperture, 9.0, 20, 15, 31, 41, normalize=False)
    torch.testing.assert_close(centre, aperture.kernel(9.0, normalize=False), rtol=1e-6, atol=0)


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_cat_eye_point_light_near_a_corner_is_a_lemon_pointing_at_the_centre(mode):
    _numba()
    h, w, y, x = 61, 81, 49, 66  # toward the bottom-right corner (rho ~ 0.66), 9 px from the borders
    image, defocus = _point(h, w, y, x, 6.0)
    out = render_classical(image, defocus, mode=mode, backend="numba", lens=LensShape(cat_eye=0.8)).bokeh[0, 0]
    (cx, cy), values, vectors = _moments(out)
    assert abs(cx - x) < 0.2 and abs(cy - y) < 0.2  # the lemon stays centred on its light
    ratio = math.sqrt(float(values[1] / values[0]))
    assert ratio >= 1.3
    to_centre = torch.tensor([(w - 1) / 2 - x, (h - 1) / 2 - y], dtype=torch.float64)
    narrow = vectors[:, 0]
    assert abs(float(narrow @ to_centre / to_centre.norm())) > 0.95  # the narrow axis points at the centre
    plain = render_classical(image, defocus, mode=mode, backend="numba").bokeh[0, 0]
    _, plain_values, _ = _moments(plain)
    assert math.sqrt(float(plain_values[1] / plain_values[0])) < 1.02


def test_cat_eye_grows_from_the_centre_and_swirl_turns_the_lemons():
    lens = LensShape(cat_eye=0.8)
    ratios = []
    for x in (30, 40, 50, 58):  # along the middle row, from the centre outwards
        (_, _), values, vectors = _moments(lens.kernel(Aperture.circle(), 10.0, x, 20, 41, 61))
        ratios.append(math.sqrt(float(values[1] / values[0])))
    assert ratios[0] < 1.01 and all(b > a for a, b in zip(ratios, ratios[1:]))
    _, _, vectors = _moments(LensShape(cat_eye=0.8, swirl=1.0).kernel(Aperture.circle(), 10.0, 58, 20, 41, 61))
    angle = math.degrees(math.atan2(abs(float(vectors[1, 0])), abs(float(vectors[0, 0]))))
    assert 30 < angle < 60  # the narrow axis leans ~45 degrees away from the (horizontal) radius


def test_lens_fields_are_smooth_and_tiles_match_the_frame():
    lens = LensShape(cat_eye=0.9, swirl=0.4)
    sx, sy = lens.clip_vectors(Aperture.circle(), 40, 60)
    assert float(sx.diff(dim=1).abs().max()) < 0.03 and float(sy.diff(dim=0).abs().max()) < 0.03
    tx, ty = lens.clip_vectors(Aperture.circle(), 10, 20, frame=(15, 30, 40, 60))
    assert torch.equal(tx, sx[15:25, 30:50]) and torch.equal(ty, sy[15:25, 30:50])


# --- energy --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("aperture", [Aperture.circle(), Aperture.polygon(5, rotation=0.3),
                                      Aperture.circle(anamorphic=0.6)])
@pytest.mark.parametrize("lens", LENSES, ids=["cat", "ring", "all"])
def test_each_source_kernel_keeps_the_plain_energy(aperture, lens):
    for radius in (4.0, 11.0):
        plain = float(aperture.kernel(radius, normalize=False).sum())
        for x, y in ((5, 5), (40, 10), (20, 28)):
            mass = float(lens.kernel(aperture, radius, x, y, 31, 41, normalize=False).sum())
            assert abs(mass / plain - 1) < (0.05 if radius < 8 else 0.03), (radius, x, y, mass / plain)


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_bokeh_ball_energy_is_kept(mode):
    _numba()
    image, defocus = _point(61, 81, 44, 58, 6.0)  # away from the borders (their normalisation differs)
    image = image * 0.5 + 0.1
    plain = float((render_classical(image, defocus, mode=mode, backend="numba").bokeh - 0.1).sum())
    for lens in LENSES:
        out = render_classical(image, defocus, mode=mode, backend="numba", lens=lens).bokeh
        assert abs(float((out - 0.1).sum()) / plain - 1) < 0.02


def test_clip_area_ratio_matches_the_closed_form_and_the_tables():
    c = torch.tensor([0.0, 0.4, 1.0, 1.6])
    half = c / 2
    closed = (2 * torch.acos(half) - half * 2 * torch.sqrt(1 - half * half)) / math.pi
    got = clip_area_ratio(Aperture.circle(), half * math.cos(0.3), half * math.sin(0.3))
    torch.testing.assert_close(got, closed.float(), atol=1e-6, rtol=0)
    poly = clip_area_ratio(Aperture.polygon(64), half * math.cos(0.3), half * math.sin(0.3))
    torch.testing.assert_close(poly, closed.float(), atol=0.01, rtol=0)


# --- ring -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_ring_rim_is_brighter_than_the_inside(mode):
    _numba()
    image, defocus = _point(41, 41, 20, 20, 12.0)
    out = render_classical(image, defocus, mode=mode, backend="numba", lens=LensShape(ring=0.8)).bokeh[0, 0]
    yy, xx = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    dist = torch.hypot(yy - 20, xx - 20)
    inside = float(out[dist < 6].mean())
    rim = float(out[(dist > 10) & (dist < 11.5)].mean())
    assert rim > 2.0 * inside
    plain = render_classical(image, defocus, mode=mode, backend="numba").bokeh[0, 0]
    assert float(plain[(dist > 10) & (dist < 11.5)].mean()) < 1.1 * float(plain[dist < 6].mean())


# --- fringe ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_fringe_changes_red_and_blue_radii_by_the_fraction(sign):
    _numba()
    image, defocus = _point(45, 45, 22, 22, 10.0 * sign)
    out = render_classical(image, defocus, mode="fast", backend="numba", lens=LensShape(fringe=0.1)).bokeh[0]
    yy, xx = torch.meshgrid(torch.arange(45.0), torch.arange(45.0), indexing="ij")
    dist2 = (yy - 22) ** 2 + (xx - 22) ** 2
    rms = [float(((out[c] * dist2).sum() / out[c].sum()).sqrt()) for c in range(3)]
    red, blue = rms[0] / rms[1], rms[2] / rms[1]
    if sign > 0:  # in front of the focus: red larger, blue smaller
        assert abs(red - 1.1) < 0.015 and abs(blue - 0.9) < 0.015
    else:
        assert abs(red - 0.9) < 0.015 and abs(blue - 1.1) < 0.015
    plain = render_classical(image, defocus, mode="fast", backend="numba").bokeh[0]
    torch.testing.assert_close(out[1], plain[1], atol=0, rtol=0)  # green is the plain render


# --- highlights and focus range -------------------------------------------------------------------------------

def test_lift_highlights_lifts_clipped_lights_in_linear_light():
    image = torch.tensor([1.0, 0.95, 0.5, 0.2]).view(1, 1, 1, 4).expand(1, 3, 1, 4).clone()
    image[:, 2, 0, 0] = 0.5  # a coloured clipped light: ratios in linear light kept
    out = lift_highlights(image, threshold=0.9, gain=4.0, softness=0.0)
    linear = lambda v: torch.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)  # noqa: E731
    torch.testing.assert_close(linear(out[:, :, 0, :2]), 4.0 * linear(image[:, :, 0, :2]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[:, :, 0, 2:], image[:, :, 0, 2:], rtol=1e-6, atol=1e-6)  # below: unchanged
    lens = Lens(highlight_gain=4.0, highlight_threshold=0.9)
    image4, defocus = _scene(8, 8, seed=3)
    # render_classical renders what it is given: the lift happens before it, once
    assert torch.equal(render_classical(image4, defocus, lens=lens.shape).bokeh, render_classical(image4, defocus).bokeh)
    assert torch.equal(lens.lift_highlights(image4), lift_highlights(image4, 0.9, 4.0))


def test_focus_range_keeps_the_band_sharp_and_scales_near_and_far():
    disparity = torch.linspace(0, 1, 101).view(1, 1, 1, -1)
    d = signed_defocus(disparity, 40.0, 0.5, focus_range=0.2, near_scale=2.0, far_scale=0.5)
    e = disparity - 0.5
    band = e.abs() <= 0.1 - 1e-6
    assert bool((d[band] == 0).all())
    near, far = e > 0.1 + 1e-6, e < -0.1 - 1e-6
    torch.testing.assert_close(d[near], 80.0 * (e[near] - 0.1))
    torch.testing.assert_close(d[far], 20.0 * (e[far] + 0.1))
    assert float(d.diff().min()) >= 0  # continuous and monotone: no jump at the band edges
    image = torch.rand(1, 3, 1, 101)
    out = render_classical(image, d.expand(1, 1, 1, 101).contiguous(), mode="fast").bokeh
    sharp = band.expand(1, 3, 1, 101).clone()
    sharp[..., 35:66] &= True
    assert float((out - image)[:, :, :, 45:56].abs().max()) < 3e-3  # well inside the band: only the kernel leak


# --- backends and modes agree ----------------------------------------------------------------------------------

@pytest.mark.parametrize("aperture", APERTURES, ids=["circle", "pentagon", "ana0.6"])
@pytest.mark.parametrize("lens", LENSES, ids=["cat", "ring", "all"])
def test_numba_equals_torch_and_exact_matches_the_loop_reference(aperture, lens):
    _numba()
    image, defocus = _scene(10, 12, seed=4, kmax=4.5)
    outs = {}
    for mode in ("exact", "fast"):
        for backend in ("torch", "numba"):
            outs[mode, backend] = render_classical(image, defocus, aperture=aperture, mode=mode, backend=backend,
                                                   lens=lens).bokeh
    torch.testing.assert_close(outs["exact", "numba"], outs["exact", "torch"], atol=1e-5, rtol=0)
    torch.testing.assert_close(outs["fast", "numba"], outs["fast", "torch"], atol=1e-5, rtol=0)
    reference, _ = render_reference(image, defocus, aperture, lens)
    np.testing.assert_allclose(outs["exact", "torch"].numpy(), reference, atol=5e-5, rtol=0)
    psnr = -10 * math.log10(float(((outs["fast", "numba"] - outs["exact", "numba"]) ** 2).mean()))
    assert psnr > 27.0  # the box model of the clipped rows (see bench/README.md for the full-size numbers)


@pytest.mark.parametrize("aperture", [Aperture.circle(), Aperture.polygon(6, rotation=0.2)], ids=["circle", "hexagon"])
def test_fast_lens_numba_equals_torch_away_from_the_borders(aperture):
    """Sources far from the borders take the numba fast kernel's unclamped writes (the 10x12 scenes above only
    the clamped ones); both agree with torch."""
    _numba()
    image, defocus = _scene(40, 72, seed=13, kmax=5.0)
    for lens in (LensShape(cat_eye=0.9, swirl=0.4, ring=0.7), LensShape(ring=0.5), LensShape(cat_eye=0.6)):
        outs = [render_classical(image, defocus, aperture=aperture, mode="fast", backend=backend, lens=lens).bokeh
                for backend in ("torch", "numba")]
        torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=0)


def test_fast_lens_numba_does_not_depend_on_the_thread_count():
    _numba()
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    image, defocus = _scene(37, 45, seed=14, kmax=6.0)
    lens = LensShape(cat_eye=0.8, swirl=0.3, ring=0.6)
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            outs.append(render_classical(image, defocus, mode="fast", backend="numba", lens=lens).bokeh)
        finally:
            torch.set_num_threads(1)
    assert torch.equal(outs[0], outs[1])


def test_fast_lens_numba_at_the_largest_table_radius_of_a_squeezed_aperture():
    """With this squeeze the largest table level has a run in its padding row (the numba kernel reads such
    sources clamped, as scaled rows): still the torch arithmetic."""
    _numba()
    aperture = Aperture.circle(anamorphic=1.45499)
    image, _ = _scene(30, 40, seed=15)
    defocus = torch.full((1, 1, 30, 40), 48.05)
    defocus[..., :, :5] = 20.0  # and table radii next to them
    lens = LensShape(cat_eye=0.8, ring=0.6)
    outs = [render_classical(image, defocus, aperture=aperture, mode="fast", backend=backend, lens=lens).bokeh
            for backend in ("torch", "numba")]
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=0)


def test_mask_aperture_with_lens_in_every_mode_and_big_radii():
    _numba()
    yy, xx = np.mgrid[:21, :21] - 10.0
    star = ((np.hypot(xx, yy) < 4 + 6 * np.abs(np.cos(2.5 * np.arctan2(yy, xx)))) * 1.0).astype(np.float32)
    aperture = Aperture.from_mask(star)
    image, defocus = _scene(9, 11, seed=5, kmax=5.0)
    lens = LensShape(cat_eye=0.7, ring=0.4)
    exact = render_classical(image, defocus, aperture=aperture, lens=lens).bokeh
    reference, _ = render_reference(image, defocus, aperture, lens)
    np.testing.assert_allclose(exact.numpy(), reference, atol=5e-5, rtol=0)
    fast_t = render_classical(image, defocus, aperture=aperture, lens=lens, mode="fast", backend="torch").bokeh
    fast_n = render_classical(image, defocus, aperture=aperture, lens=lens, mode="fast", backend="numba").bokeh
    torch.testing.assert_close(fast_n, fast_t, atol=1e-5, rtol=0)
    big = defocus * 14  # radii above the fast tables (scaled rows)
    fast_t = render_classical(image, big, lens=lens, mode="fast", backend="torch").bokeh
    fast_n = render_classical(image, big, lens=lens, mode="fast", backend="numba").bokeh
    torch.testing.assert_close(fast_n, fast_t, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_constant_image_stays_constant_with_lens(mode):
    _, defocus = _scene(14, 15, seed=6, kmax=7.0)
    image = torch.full((1, 3, 14, 15), 0.3)
    out = render_classical(image, defocus, gamma=2.2, mode=mode, lens=LensShape(cat_eye=1, swirl=1, ring=1)).bokeh
    torch.testing.assert_close(out, image, atol=2e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_cuda_lens_matches_cpu(mode):
    image, defocus = _scene(21, 25, seed=7, kmax=6.0)
    lens = LensShape(cat_eye=0.8, ring=0.5, swirl=0.3)
    for aperture in (Aperture.circle(), Aperture.polygon(6)):
        cpu = render_classical(image, defocus, mode=mode, aperture=aperture, lens=lens, backend="torch")
        gpu = render_classical(image.cuda(), defocus.cuda(), mode=mode, aperture=aperture, lens=lens)
        torch.testing.assert_close(gpu.bokeh.cpu(), cpu.bokeh, atol=5e-5, rtol=0)


# --- layered mode (occlusion-aware) with a lens ------------------------------------------------------------------

LAYERED_BACKENDS = ["torch", pytest.param("numba", marks=pytest.mark.skipif(
    not __import__("bokehme_core.scatter.numba_backend", fromlist=["available"]).available(), reason="no numba"))]


@pytest.mark.parametrize("backend", LAYERED_BACKENDS)
def test_layered_with_a_neutral_lens_is_layered_without(backend):
    image, defocus = _scene(14, 17, seed=8, kmax=5.0)
    plain = render_classical(image, defocus, gamma=2.2, mode="layered", backend=backend).bokeh
    for lens in (LensShape(), Lens(highlight_threshold=0.5).shape):
        out = render_classical(image, defocus, gamma=2.2, mode="layered", backend=backend, lens=lens).bokeh
        assert torch.equal(out, plain)


@pytest.mark.parametrize("backend", LAYERED_BACKENDS)
@pytest.mark.parametrize("radius", [4.0, 9.5, 60.0])
def test_lens_coverage_splat_keeps_energy(backend, radius):
    """The energy-preserving splat of the layered mode (coverage=) with lens kernels: unit mass per source."""
    scatter = _lens_splat(backend)
    gen = torch.Generator().manual_seed(21)
    size = 170 if radius > 40 else 90
    coverage = torch.zeros(1, 1, size, size)
    coverage[..., size // 2 - 6:size // 2 + 6, size // 2 - 9:size // 2 + 9] = torch.rand(1, 1, 12, 18, generator=gen)
    colour = torch.rand(1, 3, size, size, generator=gen) * coverage
    defocus = torch.full((1, 1, size, size), radius)
    for lens in (LensShape(cat_eye=0.8), LensShape(ring=0.7), LensShape(cat_eye=0.6, swirl=0.5, ring=0.5)):
        # the top-left quarter of a frame (rho ~ 0.5 at the sources: the fields follow the frame, not the tile);
        # every source is normalised by the mass of its own box segments, and all kernels lie inside the tile
        splat = scatter(colour, defocus, Aperture.circle(), lens, coverage=coverage, frame=(0, 0, 2 * size, 2 * size))
        assert splat.shape == (1, 4, size, size) and bool(torch.isfinite(splat).all())
        assert float(splat[0, 3].double().sum()) == pytest.approx(float(coverage.sum()), rel=1e-4)
        assert float(splat[0, :3].double().sum()) == pytest.approx(float(colour.sum()), rel=1e-4)


#: frame positions (y, x) of a 600 x 900 frame: the centre, half way to the bottom-right corner (rho 0.5) and near
#: it (rho 0.9, 30 px from both borders)
MASS_FRAME = (600, 900)
MASS_POSITIONS = {"centre": (300, 450), "half": (449, 674), "corner": (570, 870)}
MASS_RADII = (1.5, 2.0, 3.0, 4.0, 6.0, 10.0, 20.0)
MASS_LENSES = [LensShape(cat_eye=0.8), LensShape(cat_eye=0.8, ring=0.6), LensShape(cat_eye=0.8, swirl=0.5, ring=0.6)]
MASS_BACKENDS = ["torch", pytest.param("numba", marks=pytest.mark.skipif(
    not __import__("bokehme_core.scatter.numba_backend", fromlist=["available"]).available(), reason="no numba"))]


def _point_in_frame(radius: float, position: str, channels: int):
    """A unit point source of ``radius`` at the centre of a tile placed so that it sits at ``position`` of the
    :data:`MASS_FRAME` frame: (image (1, channels, n, n), defocus, frame)."""
    n = 2 * int(radius) + 24
    c = n // 2
    y, x = MASS_POSITIONS[position]
    image = torch.zeros(1, channels, n, n)
    image[..., c, c] = 1.0
    return image, torch.full((1, 1, n, n), radius), (y - c, x - c, *MASS_FRAME)


@pytest.mark.parametrize("backend", MASS_BACKENDS)
@pytest.mark.parametrize("aperture", [Aperture.circle(), Aperture.polygon(6, rotation=0.2)], ids=["circle", "hexagon"])
@pytest.mark.parametrize("lens", MASS_LENSES, ids=["cat", "cat+ring", "cat+swirl+ring"])
def test_fast_lens_kernel_keeps_unit_mass_at_every_radius_and_position(backend, aperture, lens):
    """The energy-preserving splat (coverage=): every source's fast lens kernel holds exactly its coverage, also a
    lemon only a few pixels wide near a corner (each source is normalised by the mass of its own box segments)."""
    scatter = _lens_splat(backend)
    for radius in MASS_RADII:
        for position in MASS_POSITIONS:
            coverage, defocus, frame = _point_in_frame(radius, position, 1)
            colour = 0.5 * coverage.expand(1, 3, -1, -1)
            splat = scatter(colour, defocus, aperture, lens, coverage=coverage, frame=frame)
            mass = float(splat[0, 3].double().sum())
            assert abs(mass - 1) < 1e-4, (radius, position, mass)
            assert float(splat[0, :3].double().sum()) == pytest.approx(1.5, rel=1e-4)


@pytest.mark.parametrize("backend", MASS_BACKENDS)
@pytest.mark.parametrize("aperture", [Aperture.circle(), Aperture.polygon(6, rotation=0.2)], ids=["circle", "hexagon"])
def test_fast_lens_kernel_keeps_the_plain_kernels_energy(backend, aperture):
    """Without coverage (the normalised render) each source's fast lens kernel carries the plain fast kernel's
    energy ``mass / (r^2 + 0.2)`` (raw sums of one point source), table radii and scaled rows alike."""
    from bokehme_core.scatter.common import source_mass
    from bokehme_core.scatter.lens_kernels import fast_tables

    scatter = _lens_splat(backend)
    lens = LensShape(cat_eye=0.8, swirl=0.5, ring=0.6)
    for radius in MASS_RADII + (60.0,):
        # the plain kernel's mass; above the tables source_mass interpolates (< 1e-3)
        plain = float(source_mass(torch.tensor([radius]), aperture, fast_tables(aperture, radius)["shape"])[0])
        tolerance = 1e-4 if radius < 48 else 1e-3
        for position in MASS_POSITIONS:
            image, defocus, frame = _point_in_frame(radius, position, 3)
            out = scatter(image, defocus, aperture, lens, raw=True, frame=frame)
            energy = float(out[0, 0].double().sum()) * (radius * radius + 0.2) / plain
            assert abs(energy - 1) < tolerance, (radius, position, energy)


def test_lens_coverage_splat_backends_agree_and_skip_empty_sources():
    _numba()
    gen = torch.Generator().manual_seed(22)
    coverage = (torch.rand(1, 1, 20, 24, generator=gen) > 0.5).float() * torch.rand(1, 1, 20, 24, generator=gen)
    colour = torch.rand(1, 3, 20, 24, generator=gen) * coverage
    defocus = 5 * torch.randn(1, 1, 20, 24, generator=gen)
    lens = LensShape(cat_eye=0.7, swirl=0.3, ring=0.5)
    frame = (3, 5, 40, 50)
    a = _lens_splat("torch")(colour, defocus, Aperture.polygon(6), lens, coverage=coverage, frame=frame)
    b = _lens_splat("numba")(colour, defocus, Aperture.polygon(6), lens, coverage=coverage, frame=frame)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    empty = _lens_splat("numba")(colour, defocus, Aperture.circle(), lens, coverage=torch.zeros_like(coverage))
    assert float(empty.abs().max()) == 0.0


@pytest.mark.parametrize("backend", LAYERED_BACKENDS)
def test_layered_with_ring_and_cat_eye_keeps_the_energy_of_a_point_light(backend):
    # an isolated point light near a corner, out of focus, on a dim uniform background
    image, defocus = _point(61, 81, 50, 66, 6.0)
    image = image * 0.5 + 0.1
    plain = render_classical(image, defocus, mode="layered", backend=backend).bokeh
    assert abs(float((plain - 0.1).sum()) / 1.5 - 1) < 0.02  # 0.5 in each of 3 channels
    for lens in (LensShape(ring=0.8), LensShape(cat_eye=0.8), LensShape(cat_eye=0.8, swirl=0.5, ring=0.6)):
        out = render_classical(image, defocus, mode="layered", backend=backend, lens=lens).bokeh
        assert bool(torch.isfinite(out).all())
        assert abs(float((out - 0.1).sum()) / 1.5 - 1) < 0.03
        assert not torch.equal(out, plain)
    # the shape is the lens's: the cat's eye squeezes the ball toward the frame centre in layered mode too
    lemon = render_classical(image, defocus, mode="layered", backend=backend, lens=LensShape(cat_eye=0.8)).bokeh[0, 0]
    (_, _), values, _ = _moments(lemon - 0.1)
    assert math.sqrt(float(values[1] / values[0])) >= 1.3


def test_layered_with_a_lens_torch_and_numba_agree():
    _numba()
    image, defocus = _scene(16, 20, seed=9, kmax=5.0)
    lens = LensShape(cat_eye=0.6, ring=0.4, swirl=0.2)
    a = render_classical(image, defocus, gamma=2.2, mode="layered", backend="torch", lens=lens).bokeh
    b = render_classical(image, defocus, gamma=2.2, mode="layered", backend="numba", lens=lens).bokeh
    torch.testing.assert_close(a, b, atol=2e-5, rtol=0)


# --- the shared inputs and the full pipeline ---------------------------------------------------------------------

def test_render_inputs_with_a_lens():
    from bokehme_core import render_inputs

    image, _ = _scene(6, 7, seed=10)
    disparity = torch.rand(1, 1, 6, 7, generator=torch.Generator().manual_seed(11))
    plain = render_inputs(image, disparity, 20.0, 0.4, highlight=True)
    neutral = render_inputs(image, disparity, 20.0, 0.4, highlight=True, **Lens().pre_render)
    assert all(torch.equal(a, b) for a, b in zip(plain, neutral))
    lens = Lens(focus_range=0.2, near_scale=2.0, highlight_gain=3.0, highlight_threshold=0.8)
    lifted, defocus = render_inputs(image, disparity, 20.0, 0.4, **lens.pre_render)
    assert torch.equal(defocus, lens.signed_defocus(disparity, 20.0, 0.4))
    assert torch.equal(lifted, lift_highlights(image, 0.8, 3.0))
    with pytest.raises(TypeError, match="lens"):  # the pre-render part goes in as its options
        render_inputs(image, disparity, 20.0, 0.4, lens=lens)


def test_render_bokehme_with_a_lens():
    from bokehme_core import render_bokehme, render_inputs
    from bokehme_core.neural.arnet import ARNet
    from bokehme_core.neural.iunet import IUNet

    torch.manual_seed(0)
    arnet, iunet = ARNet(8, 1).eval(), IUNet(8, 1).eval()
    gen = torch.Generator().manual_seed(12)
    image, disparity = torch.rand(1, 3, 24, 32, generator=gen), torch.rand(1, 1, 24, 32, generator=gen)
    options = dict(K=6.0, focus=0.5, arnet=arnet, iunet=iunet, classical_mode="fast")
    plain = render_bokehme(image, disparity, **options)
    neutral = render_bokehme(image, disparity, lens=Lens(), **options)
    assert torch.equal(plain.bokeh, neutral.bokeh)
    lens = Lens(cat_eye=0.5, ring=0.6, focus_range=0.2, highlight_gain=3.0, highlight_threshold=0.9)
    out = render_bokehme(image, disparity, lens=lens, **options)
    assert bool(torch.isfinite(out.bokeh).all()) and not torch.equal(out.bokeh, plain.bokeh)
    lifted, defocus = render_inputs(image, disparity, 6.0, 0.5, **lens.pre_render)  # the lift is applied once
    expected = render_classical(lifted, defocus, gamma=4.0, mode="fast", lens=lens.shape).bokeh
    torch.testing.assert_close(out.classical, expected.clamp(0, 1), atol=1e-6, rtol=0)

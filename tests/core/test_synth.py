"""Tests of the ground-truth thin-lens renderer and the procedural scene generator (small sizes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bokehme_core.synth.lens import Layer, aperture_samples, composite_in_focus, render_layers, render_layers_torch
from bokehme_core.synth.scene import augment_disparity, make_scene, sample_render_params, visible_disparity


def _plane(color: torch.Tensor, disparity: float) -> Layer:
    b, _, h, w = color.shape
    return Layer(color=color, alpha=torch.ones(b, 1, h, w), disparity=torch.full((b, 1, h, w), disparity))


def _random_image(h=24, w=24, seed=0) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---- aperture -------------------------------------------------------------------------------------------------
def test_aperture_samples_inside_unit_disk_and_symmetric():
    pts = aperture_samples(6.0)
    assert pts.shape[1] == 2 and pts.shape[0] > 100
    assert float(pts.norm(dim=1).max()) <= 1.0 + 1e-6
    # circle lattice is symmetric: the mean is the centre
    torch.testing.assert_close(pts.mean(0), torch.zeros(2), atol=1e-6, rtol=0)
    assert aperture_samples(0.0).shape == (1, 2)


def test_polygon_aperture_vertex_up_convention():
    # Hexagon with rotation pi/2: vertices straight up and down (y = -1 / +1 at x = 0), flat sides left/right
    # at x = +-cos(30 deg).
    pts = aperture_samples(20.0, shape="polygon", blades=6, rotation=math.pi / 2)
    on_axis = pts[pts[:, 0].abs() < 1e-6]
    assert float(on_axis[:, 1].min()) == pytest.approx(-1.0, abs=1e-6)
    assert float(on_axis[:, 1].max()) == pytest.approx(1.0, abs=1e-6)
    assert float(pts[:, 0].abs().max()) <= math.cos(math.pi / 6) + 1e-6
    # area ratio hexagon / circle = (3 sqrt(3) / 2) / pi
    ratio = pts.shape[0] / aperture_samples(20.0).shape[0]
    assert ratio == pytest.approx(3 * math.sqrt(3) / 2 / math.pi, rel=0.03)


# ---- renderer properties --------------------------------------------------------------------------------------
def test_in_focus_plane_is_unchanged():
    image = _random_image()
    out = render_layers([_plane(image, 0.4)], K=20.0, focus=0.4, gamma=2.2)
    # compared in linear light: bilinear sampling at exact pixel centres carries ~1e-7 float noise, which
    # the 1/gamma power magnifies for near-black pixels
    torch.testing.assert_close(out.pow(2.2), image.pow(2.2), atol=1e-5, rtol=0)


def test_K_zero_is_the_in_focus_composite():
    scene = make_scene(24, 24, seed=3)
    out = render_layers(scene.layers, K=0.0, focus=0.5, gamma=1.0)
    torch.testing.assert_close(out, composite_in_focus(scene.layers), atol=1e-5, rtol=0)


def test_single_plane_is_disk_convolution():
    # Constant defocus of exactly 3 px with 1 px lattice spacing: every sample is an integer shift, so the
    # result equals the convolution with the lattice disk (reflection padding at the border).
    image = _random_image(20, 20, seed=1)
    radius = 3.0
    out = render_layers([_plane(image, 0.0)], K=radius / 0.5, focus=0.5, gamma=1.0)
    pts = aperture_samples(radius)
    offsets = (pts * radius).round().long()
    kernel = torch.zeros(7, 7)
    for dx, dy in offsets.tolist():
        kernel[dy + 3, dx + 3] += 1.0
    kernel /= kernel.sum()
    padded = F.pad(image, (3, 3, 3, 3), mode="reflect")
    expected = F.conv2d(padded, kernel.view(1, 1, 7, 7).repeat(3, 1, 1, 1), groups=3)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_energy_conservation_point_light():
    # A point light blurred by a plane behind focus keeps its energy (in linear light) and spreads into a
    # disk of the blur radius.
    image = torch.zeros(1, 3, 31, 31)
    image[..., 15, 15] = 1.0
    out = render_layers([_plane(image, 0.0)], K=5.0, focus=1.0, gamma=1.0)
    assert float(out.sum()) == pytest.approx(3.0, rel=1e-4)
    support = out[0, 0] > 1e-6
    ys, xs = torch.nonzero(support, as_tuple=True)
    assert int(ys.max() - ys.min()) == 10 and int(xs.max() - xs.min()) == 10


def test_gamma_brightens_highlights_but_keeps_constant_images():
    flat = torch.full((1, 3, 16, 16), 0.3)
    out = render_layers([_plane(flat, 0.0)], K=8.0, focus=1.0, gamma=4.0)
    torch.testing.assert_close(out, flat, atol=1e-5, rtol=0)
    image = torch.zeros(1, 3, 21, 21)
    image[..., 10, 10] = 1.0
    low = render_layers([_plane(image, 0.0)], K=3.0, focus=1.0, gamma=1.0)
    high = render_layers([_plane(image, 0.0)], K=3.0, focus=1.0, gamma=3.0)
    assert float(high[0, 0, 10, 12]) > float(low[0, 0, 10, 12])


def test_partial_occlusion_sees_behind_blurred_foreground():
    # In-focus background (red), blurred opaque foreground square (green) in front. Inside the square near
    # its edge, rays pass beside the blurred foreground and see the background: red leaks in. A renderer
    # without the hidden background layer could not show this; here it must.
    h = w = 32
    background = _plane(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, h, w).clone(), 0.0)
    alpha = torch.zeros(1, 1, h, w)
    alpha[..., 8:24, 8:24] = 1.0
    front = Layer(
        color=torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, h, w).clone(),
        alpha=alpha,
        disparity=torch.ones(1, 1, h, w),
    )
    out = render_layers([background, front], K=4.0, focus=0.0, gamma=1.0)
    assert float(out[0, 0, 16, 9]) > 0.2  # red seen through the blurred edge, inside the square
    assert float(out[0, 0, 16, 16]) < 1e-4  # centre fully covered
    assert float(out[0, 1, 16, 6]) > 0.05  # green blurred outward over the background
    total = out.sum(dim=1)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-4, rtol=0)


def test_batch_matches_single():
    a, b = _random_image(12, 12, 2), _random_image(12, 12, 3)
    both = render_layers([_plane(torch.cat([a, b]), 0.2)], K=6.0, focus=torch.tensor([0.2, 0.8]), gamma=2.2)
    single = render_layers([_plane(b, 0.2)], K=6.0, focus=0.8, gamma=2.2)
    torch.testing.assert_close(both[1:], single, atol=1e-5, rtol=0)
    torch.testing.assert_close(both[:1].pow(2.2), a.pow(2.2), atol=1e-5, rtol=0)  # in focus, linear light


def test_renderer_bad_inputs():
    with pytest.raises(ValueError, match="layers must hold at least one Layer"):
        render_layers([], K=1.0, focus=0.5)
    layer = _plane(_random_image(8, 8), 0.5)
    with pytest.raises(ValueError, match=r"gamma must be in \[1, 5\], got 7"):
        render_layers([layer], K=1.0, focus=0.5, gamma=7.0)
    with pytest.raises(ValueError, match=r"K must be in \[0, 2000\]"):
        render_layers([layer], K=-2.0, focus=0.5)
    with pytest.raises(ValueError, match="shape must be one of 'circle', 'polygon'"):
        aperture_samples(3.0, shape="heart")


# ---- compiled renderer == torch reference ------------------------------------------------------------------
def _needs_numba():
    from bokehme_core.scatter.numba_backend import available

    if not available():
        pytest.skip("numba is not installed")


def _assert_same_render(layers, K, focus, gamma, **kw):
    reference = render_layers_torch(layers, K, focus, gamma, **kw)
    compiled = render_layers(layers, K, focus, gamma, backend="numba", **kw)
    assert compiled.shape == reference.shape and compiled.dtype == reference.dtype
    # linear light: float32 rounding of the reference's sample coordinates (grid_sample's normalisation)
    torch.testing.assert_close(compiled.pow(gamma), reference.pow(gamma), atol=2e-6, rtol=0)
    torch.testing.assert_close(compiled, reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "seed, size, K, focus, gamma",
    [(0, 24, 10.0, 0.3, 2.2), (3, 28, 12.0, 0.9, 1.0), (5, 20, 8.0, 0.05, 4.0), (11, 24, 6.0, 0.6, 3.1)],
)
def test_numba_matches_torch_reference_on_scenes(seed, size, K, focus, gamma):
    # procedural scenes: slanted background, partial coverage at edges, thin strands, objects at the border
    _needs_numba()
    _assert_same_render(make_scene(size, size, seed).layers, K, focus, gamma)


def test_numba_matches_torch_reference_slanted_polygon_border_batch():
    _needs_numba()
    gen = torch.Generator().manual_seed(4)
    h, w = 18, 22
    yy = torch.linspace(0, 1, h).view(1, 1, h, 1).expand(2, 1, h, w)
    background = Layer(color=torch.rand(2, 3, h, w, generator=gen), alpha=torch.ones(2, 1, h, w),
                       disparity=(0.1 + 0.3 * yy).contiguous())  # slanted: radius resampled where rays land
    alpha = torch.zeros(2, 1, h, w)
    alpha[..., 4:12, 6:17] = torch.rand(2, 1, 8, 11, generator=gen)
    front = Layer(color=torch.rand(2, 3, h, w, generator=gen) * 1.5, alpha=alpha,  # emitters above 1
                  disparity=torch.full((2, 1, h, w), 0.9))
    for kw in ({"shape": "polygon", "blades": 5, "rotation": 0.3}, {"background_padding": "border"},
               {"spacing_px": 0.7}):
        _assert_same_render([background, front], 9.0, torch.tensor([0.2, 0.95]), 2.2, **kw)


def test_numba_renderer_progress_and_choices():
    _needs_numba()
    scene = make_scene(24, 24, seed=2)
    calls = []
    render_layers(scene.layers, K=5.0, focus=0.5, backend="numba", progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == calls[-1][1] and [d for d, _ in calls] == sorted(d for d, _ in calls)
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'torch', 'numba'"):
        render_layers(scene.layers, K=5.0, focus=0.5, backend="cuda")
    with pytest.raises(ValueError, match=r"gamma must be in \[1, 5\], got 7"):
        render_layers(scene.layers, K=1.0, focus=0.5, gamma=7.0, backend="numba")


# ---- scene generator ------------------------------------------------------------------------------------------
def test_make_scene_deterministic_and_well_formed():
    first = make_scene(40, 48, seed=11)
    again = make_scene(40, 48, seed=11)
    other = make_scene(40, 48, seed=12)
    torch.testing.assert_close(first.image, again.image)
    torch.testing.assert_close(first.disparity, again.disparity)
    assert not torch.equal(first.image, other.image)
    assert first.image.shape == (1, 3, 40, 48) and first.disparity.shape == (1, 1, 40, 48)
    assert float(first.image.min()) >= 0 and float(first.image.max()) <= 1
    assert float(first.disparity.min()) == pytest.approx(0.0, abs=1e-6)
    assert float(first.disparity.max()) == pytest.approx(1.0, abs=1e-6)
    assert len(first.layers) >= 3
    assert bool((first.layers[0].alpha == 1).all())
    torch.testing.assert_close(visible_disparity(first.layers), first.disparity)


def test_scene_has_partial_coverage_edges():
    scene = make_scene(48, 48, seed=5)
    fractional = sum(int(((l.alpha > 0.01) & (l.alpha < 0.99)).sum()) for l in scene.layers[1:])
    assert fractional > 0


def test_make_scene_hdr_lights_change_only_the_lights():
    plain = make_scene(40, 40, seed=6)
    bright = make_scene(40, 40, seed=6, hdr_lights=1.0)
    assert len(plain.layers) == len(bright.layers)
    torch.testing.assert_close(bright.disparity, plain.disparity, atol=0, rtol=0)
    for a, b in zip(plain.layers, bright.layers):
        torch.testing.assert_close(b.alpha, a.alpha, atol=0, rtol=0)
        assert bool((b.color >= a.color - 1e-6).all())  # lights only get brighter
    assert float(bright.layers[0].color.max()) > 1.05 >= float(plain.layers[0].color.max())
    assert float(bright.image.max()) <= 1.0  # the photo clips them
    torch.testing.assert_close(make_scene(40, 40, seed=6, hdr_lights=0.0).image, plain.image, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"hdr_lights must be a probability in \[0, 1\], got 2"):
        make_scene(16, 16, seed=0, hdr_lights=2.0)


def test_make_scene_rejects_tiny_size():
    with pytest.raises(ValueError, match="scene size must be at least 8x8, got 4x32"):
        make_scene(4, 32, seed=0)


def test_augment_disparity_range_shape_and_determinism():
    scene = make_scene(32, 32, seed=2)
    outs = [augment_disparity(scene.disparity, np.random.default_rng(s), probability=1.0) for s in range(6)]
    for out in outs:
        assert out.shape == scene.disparity.shape
        assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert any(not torch.equal(o, scene.disparity) for o in outs)
    again = augment_disparity(scene.disparity, np.random.default_rng(0), probability=1.0)
    torch.testing.assert_close(outs[0], again)
    unchanged = augment_disparity(scene.disparity, np.random.default_rng(0), probability=0.0)
    assert torch.equal(unchanged, scene.disparity)


def test_augment_disparity_predicted_map_degradations():
    # over many draws: 8-bit quantised maps, softened edges (values strictly between the two layers), and
    # near sides that grew (dilation / the predicted-map recipe) or moved (shift / warp)
    disparity = torch.zeros(1, 1, 32, 32)
    disparity[..., 8:24, 8:24] = 0.8
    outs = [augment_disparity(disparity, np.random.default_rng(s), probability=1.0) for s in range(40)]
    quantised = [o for o in outs if torch.equal(o, torch.round(o * 255) / 255)]
    assert 0.3 * len(outs) < len(quantised) < len(outs)
    assert any(bool(((o > 0.05) & (o < 0.75)).any()) for o in outs)  # blurred edges
    assert any(float((o > 0.4).sum()) > 16 * 16 + 16 for o in outs)  # the near side grew
    assert any(float((o > 0.4).sum()) < 16 * 16 - 16 for o in outs)  # ... or shrank
    moved = [o for o in outs if abs(float((o > 0.4).sum()) - 256) <= 32 and not bool((o[..., 8:24, 8:24] > 0.4).all())]
    assert moved  # a shift or warp: about the same area, other pixels


def test_sample_render_params_ranges():
    rng = np.random.default_rng(0)
    params = [sample_render_params(rng) for _ in range(200)]
    assert all(4.0 <= p.K <= 12.0 and 0.05 <= p.focus <= 1.0 and 1.0 <= p.gamma <= 5.0 for p in params)
    assert 0.25 < sum(p.gamma == 2.2 for p in params) / len(params) < 0.55

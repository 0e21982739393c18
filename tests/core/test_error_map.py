"""Tests of the analytic error map (paper Eq. 2 / Eq. 5)."""

from __future__ import annotations

import math

import pytest
import torch

from bokehme_core.error_map import analytic_error_map, pairwise_error


def _two_layer(height: int = 24, width: int = 48, near_left: bool = True) -> torch.Tensor:
    """Left half disparity 1 (near), right half 0 (far), or the mirror image."""
    d = torch.zeros(1, 1, height, width)
    if near_left:
        d[..., : width // 2] = 1.0
    else:
        d[..., width // 2 :] = 1.0
    return d


# ---- smoke, shapes, batch -------------------------------------------------------------------------------
def test_shape_dtype_range():
    d = torch.rand(2, 1, 20, 30, generator=torch.Generator().manual_seed(1))
    e = analytic_error_map(d, 6.0, 0.2)
    assert e.shape == (2, 1, 20, 30) and e.dtype == torch.float32
    assert float(e.min()) >= 0.0 and float(e.max()) <= 1.0
    assert float(e.max()) > 0.5


def test_batch_split_and_per_image_focus():
    d = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    both = analytic_error_map(d, 5.0, torch.tensor([0.1, 0.8]))
    first = analytic_error_map(d[:1], 5.0, 0.1)
    second = analytic_error_map(d[1:], 5.0, 0.8)
    torch.testing.assert_close(both, torch.cat([first, second]))


def test_float64_keeps_dtype():
    e = analytic_error_map(_two_layer().double(), 4.0, 0.0)
    assert e.dtype == torch.float64


# ---- properties ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["eq5", "eq2"])
def test_zero_for_constant_disparity(variant):
    d = torch.full((1, 1, 12, 12), 0.7)
    assert float(analytic_error_map(d, 20.0, 0.0, variant=variant).abs().max()) == 0.0


def test_zero_for_K_zero():
    assert float(analytic_error_map(_two_layer(), 0.0, 0.0).max()) == 0.0


# Paper Fig. 6: background at disparity 0, foreground at 0.2, refocused at d_f: (beta, edge value at alpha = 0).
_FIG6 = [(0.0, 0.0, 1.0), (0.2, 0.0, 1.0), (0.5, 0.6, 0.79), (1.0, 0.8, 0.065)]


@pytest.mark.parametrize("focus, beta, edge", _FIG6)
def test_paper_fig6_beta_and_edge_value(focus, beta, edge):
    K = 20.0
    r_back = torch.tensor([K * (0.0 - focus)])
    r_front = torch.tensor([K * (0.2 - focus)])
    # beta from absolute radii (Eq. 4)
    got_beta = float(torch.minimum(r_back.abs(), r_front.abs()) / torch.maximum(r_back.abs(), r_front.abs()))
    assert got_beta == pytest.approx(beta, abs=1e-6)
    # Eq. 5 at alpha = 0 (on the edge): 0.5 + 0.5 tanh(10 (2/3 - beta)), the paper's 1.0 / 1.0 / 0.79 / 0.065
    at_edge = float(pairwise_error(0.0, r_back, r_front))
    assert at_edge == pytest.approx(edge, abs=0.006)
    assert at_edge == pytest.approx(0.5 + 0.5 * math.tanh(10 * (2 / 3 - beta)), abs=1e-6)
    assert float(pairwise_error(0.0, r_front, r_back)) == at_edge  # symmetric
    # Eq. 2: hard indicator, 1 where beta < 2/3
    assert float(pairwise_error(0.0, r_back, r_front, variant="eq2")) == (1.0 if beta < 2 / 3 else 0.0)


@pytest.mark.parametrize("focus, beta, edge", _FIG6)
def test_paper_fig6_map_band_ends_at_the_larger_radius(focus, beta, edge):
    # Two-layer map (foreground 0.2 on the left, background 0 on the right), K = 20: the band reaches
    # max(|r_front|, |r_back|) px from the edge on both sides and is zero beyond it; the pixels beside the
    # edge (alpha = 1 / largest) carry the Eq. 5 value.
    K, width = 20.0, 64
    d = torch.zeros(1, 1, 8, width)
    d[..., : width // 2] = 0.2
    e = analytic_error_map(d, K, focus, max_work_radius=32)[0, 0, 4]
    largest = K * max(abs(0.2 - focus), abs(focus))
    edge_col = width // 2  # first background column; its nearest foreground pixel is 1 px away
    expected = (1 - (1 / largest) ** 4) * (0.5 + 0.5 * math.tanh(10 * (2 / 3 - beta)))
    assert float(e[edge_col]) == pytest.approx(expected, abs=1e-5)
    assert float(e[edge_col - 1]) == pytest.approx(expected, abs=1e-5)
    reach = int(math.ceil(largest))
    assert float(e[: edge_col - 1 - reach].max()) == 0.0
    assert float(e[edge_col + reach :].max()) == 0.0
    assert float(e[edge_col + reach - 2]) > 0.0


def test_sharp_subject_over_blurred_background_is_an_error_region():
    # The portrait case (near half in focus, far half blurred; beta = 0): the old signed-radius map gave 0.
    e = analytic_error_map(_two_layer(), 8.0, 1.0, max_work_radius=16)[0, 0, 12]
    assert float(e[23]) > 0.95 and float(e[24]) > 0.95
    assert float(e[: 24 - 9].max()) == 0.0 and float(e[24 + 8 :].max()) == 0.0


def test_equal_radii_on_both_sides_of_the_focal_plane_give_zero():
    # |r| equal (beta = 1): no error by definition, the same as a constant disparity.
    assert float(analytic_error_map(_two_layer(), 8.0, 0.5).max()) == 0.0


def test_band_around_blurred_foreground_on_both_sides():
    # Near half blurred (r = 6 px, in front of focus), far half in focus: E is high on both sides of the
    # edge, within the blur radius, and zero beyond it.
    e = analytic_error_map(_two_layer(), 6.0, 0.0, max_work_radius=16)[0, 0, 12]
    edge = 24  # first far column
    assert float(e[edge - 1]) > 0.95 and float(e[edge]) > 0.95
    assert float(e[edge - 5]) > 0.3 and float(e[edge + 4]) > 0.3
    assert float(e[: edge - 7].max()) == 0.0 and float(e[edge + 6 :].max()) == 0.0
    # Eq. 5 along a line: max(0, 1 - (dist/6)^4) * (0.5 + 0.5 tanh(10 * 2/3)), since beta = 0.
    expected = (1 - (3 / 6) ** 4) * (0.5 + 0.5 * math.tanh(10 * 2 / 3))
    assert float(e[edge + 2]) == pytest.approx(expected, abs=1e-5)


def test_mirror_symmetry():
    left = analytic_error_map(_two_layer(near_left=True), 5.0, 0.2, max_work_radius=16)
    right = analytic_error_map(_two_layer(near_left=False), 5.0, 0.2, max_work_radius=16)
    torch.testing.assert_close(left.flip(-1), right)
    transposed = analytic_error_map(_two_layer().transpose(-1, -2).contiguous(), 5.0, 0.2, max_work_radius=16)
    torch.testing.assert_close(transposed, left.transpose(-1, -2))


def test_eq2_is_hard_and_covers_eq5_band():
    d = _two_layer()
    hard = analytic_error_map(d, 6.0, 0.0, variant="eq2", max_work_radius=16)
    soft = analytic_error_map(d, 6.0, 0.0, variant="eq5", max_work_radius=16)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    assert bool(((soft > 0) <= (hard > 0)).all())


def test_similar_radii_in_front_give_little_error():
    # Both layers in front of the focus plane with radii 6 and 5.4 (beta = 0.9 > 2/3): small error,
    # (0.5 + 0.5 tanh(10 (2/3 - 0.9))) ~ 0.0094 at most.
    d = torch.full((1, 1, 16, 32), 1.0)
    d[..., 16:] = 0.95
    e = analytic_error_map(d, 6.0 / 0.5, 0.5, max_work_radius=16)
    assert 0.0 < float(e.max()) < 0.01


def test_large_K_downscaled_path_matches_full_resolution_roughly():
    d = _two_layer(64, 96)
    exact = analytic_error_map(d, 20.0, 0.0, max_work_radius=32)
    fast = analytic_error_map(d, 20.0, 0.0, max_work_radius=8)
    assert (exact - fast).abs().mean() < 0.05


def test_pairwise_error_symmetric_and_bounded():
    g = torch.Generator().manual_seed(3)
    rp = torch.randn(1000, generator=g) * 5
    rq = torch.randn(1000, generator=g) * 5
    dist = torch.rand(1000, generator=g) * 6
    a = pairwise_error(dist, rp, rq)
    torch.testing.assert_close(a, pairwise_error(dist, rq, rp))
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_progress_callback_reaches_total():
    calls = []
    analytic_error_map(_two_layer(), 4.0, 0.0, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1]


# ---- exceptions ----------------------------------------------------------------------------------------------
def test_bad_inputs():
    d = _two_layer()
    with pytest.raises(ValueError, match=r"disparity must have 1 channels \(B,1,H,W\)"):
        analytic_error_map(torch.zeros(1, 3, 4, 4), 5.0, 0.5)
    with pytest.raises(ValueError, match=r"disparity must be in \[0, 1\]"):
        analytic_error_map(d * 2, 5.0, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        analytic_error_map(torch.full((1, 1, 4, 4), float("nan")), 5.0, 0.5)
    with pytest.raises(ValueError, match=r"K must be in \[0, 2000\], got -1"):
        analytic_error_map(d, -1.0, 0.5)
    with pytest.raises(ValueError, match=r"focus must be a disparity in \[0, 1\]"):
        analytic_error_map(d, 5.0, torch.tensor([1.5]))
    with pytest.raises(ValueError, match="variant must be one of 'eq5', 'eq2', got 'eq3'"):
        analytic_error_map(d, 5.0, 0.5, variant="eq3")
    with pytest.raises(ValueError, match=r"delta2 must be in"):
        analytic_error_map(d, 5.0, 0.5, delta2=2.0)
    with pytest.raises(TypeError, match="max_work_radius must be an int"):
        analytic_error_map(d, 5.0, 0.5, max_work_radius=4.5)
    with pytest.raises(TypeError, match="disparity must be a floating point tensor"):
        analytic_error_map(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 5.0, 0.5)


# ---- the layered renderer's map, the numba backend, the map from defocus ---------------------------------
def _portrait(height: int = 24, width: int = 48) -> torch.Tensor:
    """Left half a near subject (disparity 0.8), right half background (0)."""
    d = torch.zeros(1, 1, height, width)
    d[..., : width // 2] = 0.8
    return d


def test_layered_map_is_zero_for_a_sharp_subject_over_a_blurred_background():
    d = _portrait()
    scatter = analytic_error_map(d, 10.0, 0.8)  # focus on the subject: the portrait case
    layered = analytic_error_map(d, 10.0, 0.8, renderer="layered")
    assert float(scatter.max()) > 0.9  # the scatter renderer halos there (paper Fig. 6)
    assert float(layered.max()) == 0.0  # the layered renderer hides the background behind the subject


def test_layered_map_keeps_a_blurred_foreground_over_a_sharp_background():
    d = _portrait()
    scatter = analytic_error_map(d, 10.0, 0.0)  # focus on the background: the foreground is blurred
    layered = analytic_error_map(d, 10.0, 0.0, renderer="layered")
    assert float(layered.max()) > 0.9
    torch.testing.assert_close(layered, scatter)  # every pair there has the blurred side in front


def test_layered_map_between_two_blurred_sides_marks_only_a_nearer_more_blurred_side():
    d = _portrait()
    # focus 0.6: subject (0.8) blurred 2 px, background (0) 6 px: the farther side is the more blurred one
    assert float(analytic_error_map(d, 10.0, 0.6, renderer="layered").max()) == 0.0
    # focus 0.2: subject blurred 6 px, background 2 px: nearer and more blurred
    assert float(analytic_error_map(d, 10.0, 0.2, renderer="layered").max()) > 0.5


def test_pairwise_front_only():
    r_near, r_far = torch.tensor([6.0, 1.0]), torch.tensor([-1.0, -6.0])
    plain = pairwise_error(1.0, r_near, r_far)
    front = pairwise_error(1.0, r_near, r_far, front_only=True)
    assert float(plain[0]) > 0.5 and float(plain[1]) > 0.5
    assert float(front[0]) == pytest.approx(float(plain[0]))  # nearer side (6 px) more blurred: kept
    assert float(front[1]) == 0.0  # nearer side (1 px) less blurred than the far one (6 px): dropped
    torch.testing.assert_close(pairwise_error(1.0, r_far, r_near, front_only=True), front)  # symmetric


@pytest.mark.parametrize("renderer", ["scatter", "layered"])
@pytest.mark.parametrize("variant", ["eq5", "eq2"])
@pytest.mark.parametrize("K", [6.0, 40.0])
def test_numba_backend_equals_torch(renderer, variant, K):
    pytest.importorskip("numba")
    g = torch.Generator().manual_seed(3)
    d = torch.nn.functional.interpolate(torch.rand(2, 1, 6, 9, generator=g), size=(48, 72), mode="nearest")
    d = d + 0.02 * torch.rand(d.shape, generator=g)  # a slope inside each region
    kwargs = dict(renderer=renderer, variant=variant)
    a = analytic_error_map(d.clamp(0, 1), K, [0.5, 0.1], backend="torch", **kwargs)
    b = analytic_error_map(d.clamp(0, 1), K, [0.5, 0.1], backend="numba", **kwargs)
    assert float(a.max()) > 0.5
    torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


def test_numba_backend_reports_progress():
    pytest.importorskip("numba")
    calls = []
    analytic_error_map(_portrait(200, 30), 8.0, 0.0, backend="numba", progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == calls[-1][1] and len(calls) == calls[-1][1]


def test_defocus_error_map_equals_analytic_map_of_the_same_radii():
    from bokehme_core import signed_defocus
    from bokehme_core.error_map import defocus_error_map

    d = torch.rand(1, 1, 20, 30, generator=torch.Generator().manual_seed(4))
    for renderer in ("scatter", "layered"):
        expected = analytic_error_map(d, 12.0, 0.4, renderer=renderer)
        torch.testing.assert_close(defocus_error_map(signed_defocus(d, 12.0, 0.4), renderer=renderer), expected)


def test_error_gate_per_classical_mode():
    from bokehme_core.error_map import LAYERED_TRUST, defocus_error_map, error_gate

    defocus = 10.0 * (_portrait() - 0.0)
    assert error_gate(defocus, "exact") is None and error_gate(defocus, "fast") is None
    layered = defocus_error_map(defocus, renderer="layered")
    assert float(layered.max()) > 0.99  # the map reaches 1, the gate only the trust in the neural result
    torch.testing.assert_close(error_gate(defocus, "layered"), layered * LAYERED_TRUST)
    assert 0 < LAYERED_TRUST <= 1
    with pytest.raises(ValueError, match="classical_mode"):
        error_gate(defocus, "scatter")


def test_bad_renderer_backend_and_defocus():
    from bokehme_core.error_map import defocus_error_map

    d = _portrait()
    with pytest.raises(ValueError, match="renderer"):
        analytic_error_map(d, 5.0, 0.5, renderer="official")
    with pytest.raises(ValueError, match="backend"):
        analytic_error_map(d, 5.0, 0.5, backend="cuda")
    bad = torch.zeros(1, 1, 4, 4)
    bad[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="defocus_px"):
        defocus_error_map(bad)
    with pytest.raises(ValueError, match="2000"):
        defocus_error_map(torch.full((1, 1, 4, 4), 3000.0))
    with pytest.raises(ValueError, match="defocus_px"):
        defocus_error_map(torch.zeros(1, 3, 4, 4))

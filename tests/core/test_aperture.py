"""Tests for bokehme_core.aperture: construction, validation, value semantics and rasterised kernels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bokehme_core import Aperture


def _disk_mask(size: int = 65, radius: float = 32.0) -> np.ndarray:
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    return np.clip(radius + 0.5 - np.hypot(xx - c, yy - c), 0, 1).astype(np.float32)


# --- value semantics -------------------------------------------------------------------------------------

def test_apertures_are_hashable_and_compare_by_value():
    assert Aperture.circle() == Aperture.circle()
    assert hash(Aperture.polygon(6, 0.5)) == hash(Aperture.polygon(6, 0.5))
    assert Aperture.polygon(6, 0.5) != Aperture.polygon(6, 0.6)
    assert Aperture.circle(0.5) != Aperture.circle()
    mask = _disk_mask(9, 4)
    assert Aperture.from_mask(mask) == Aperture.from_mask(torch.from_numpy(mask)[None])
    assert len({Aperture.circle(), Aperture.circle(), Aperture.polygon(5)}) == 2
    with pytest.raises(Exception):
        Aperture.circle().blades = 5  # frozen


# --- validation ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("blades, exc, match", [
    (2, ValueError, r"blades must be in \[3, 64\].*got 2"),
    (100, ValueError, r"blades must be in \[3, 64\].*got 100"),
    (5.5, TypeError, r"blades must be an integer"),
    (True, TypeError, r"blades must be an integer"),
])
def test_polygon_rejects_bad_blades(blades, exc, match):
    with pytest.raises(exc, match=match):
        Aperture.polygon(blades)


def test_polygon_rejects_nan_rotation():
    with pytest.raises(ValueError, match="rotation must be finite"):
        Aperture.polygon(6, float("nan"))


@pytest.mark.parametrize("value", [0.0, -1.0, 0.05, 50.0])
def test_anamorphic_out_of_range(value):
    with pytest.raises(ValueError, match=r"anamorphic \(bokeh width/height\) must be in \[0.1, 10\]"):
        Aperture.circle(value)


def test_anamorphic_nan():
    with pytest.raises(ValueError, match="anamorphic must be finite"):
        Aperture.polygon(5, anamorphic=float("nan"))


@pytest.mark.parametrize("mask, exc, match", [
    (np.zeros((8, 8), np.float32), ValueError, "mask is all zero"),
    (np.full((8, 8), np.nan, np.float32), ValueError, "NaN/inf"),
    (np.full((8, 8), 2.0, np.float32), ValueError, r"mask values must be in \[0, 1\]"),
    (np.ones((2, 8, 8), np.float32), ValueError, r"mask must be \(h,w\) or \(1,h,w\)"),
    (np.ones((0, 8), np.float32), ValueError, r"mask must be \(h,w\) or \(1,h,w\)"),
    ([[1.0]], TypeError, "mask must be a torch.Tensor or numpy array"),
])
def test_from_mask_rejects_bad_masks(mask, exc, match):
    with pytest.raises(exc, match=match):
        Aperture.from_mask(mask)


def test_kernel_rejects_negative_radius():
    with pytest.raises(ValueError, match=r"radius must be in \[0, 4096\]"):
        Aperture.circle().kernel(-1)


# --- kernels ---------------------------------------------------------------------------------------------

def test_circle_kernel_is_the_official_window_and_symmetric():
    k = Aperture.circle().kernel(5.3)
    assert k.shape == (2 * 6 + 1, 2 * 6 + 1)
    assert torch.isclose(k.sum(), torch.tensor(1.0))
    torch.testing.assert_close(k, k.flip(0))
    torch.testing.assert_close(k, k.flip(1))
    torch.testing.assert_close(k, k.t())
    raw = Aperture.circle().kernel(5.3, normalize=False)
    # official value at the centre: (0.5 + 0.5 tanh(4 r)) / (r^2 + 0.2)
    assert math.isclose(float(raw[6, 6]), (0.5 + 0.5 * math.tanh(4 * 5.3)) / (5.3**2 + 0.2), rel_tol=1e-6)


def test_polygon_profile_matches_official_formula():
    ap = Aperture.polygon(5, rotation=0.7)
    dx = torch.tensor([3.0, -2.0, 0.0, 4.0])
    dy = torch.tensor([1.0, 5.0, -6.0, -4.0])
    r = torch.tensor(5.5)
    a1, a2 = 2 * math.pi / 5, math.pi / 2 - math.pi / 5
    for i in range(4):
        phi = math.fmod(abs(math.atan2(dy[i], dx[i]) + 0.7), a1)
        edge = 5.5 * math.sin(a2) / math.sin(phi + a2)
        expected = 0.5 + 0.5 * math.tanh(4 * (edge - math.hypot(dx[i], dy[i])))
        assert math.isclose(float(ap.profile(dx[i], dy[i], r)), expected, abs_tol=1e-6)


def test_default_polygon_rotation_points_a_vertex_up():
    k = Aperture.polygon(3).kernel(12.0)  # triangle, vertex up (image y down): reaches ~r up, r/2 down
    rows = (k > 0.5 * k.max()).any(dim=1).nonzero().flatten() - 13
    assert int(rows.min()) <= -11
    assert 5 <= int(rows.max()) <= 7


def test_many_blades_polygon_is_close_to_circle():
    diff = (Aperture.polygon(64).kernel(10.0) - Aperture.circle().kernel(10.0)).abs().sum()
    assert float(diff) < 0.01


def test_mask_of_a_disk_is_close_to_circle():
    ap = Aperture.from_mask(_disk_mask())
    for radius in (3.0, 8.0, 20.0):
        diff = (ap.kernel(radius) - Aperture.circle().kernel(radius)).abs().sum()
        assert float(diff) < 0.15, radius  # the mask disk is ~1.5% smaller than its bounding circle


def test_mask_energy_matches_circle_energy():
    # a square mask: its area in bounding-circle units is 2 (half-diagonal = 1); energy factor pi/2
    ap = Aperture.from_mask(np.ones((40, 40), np.float32))
    ratio = float(ap.kernel(15.0, normalize=False).sum() / Aperture.circle().kernel(15.0, normalize=False).sum())
    assert abs(ratio - 1.0) < 0.05


def test_small_radius_mask_kernel_is_the_circle():
    ring = _disk_mask(33, 16) - _disk_mask(33, 10)  # zero at the centre
    ap = Aperture.from_mask(ring)
    torch.testing.assert_close(ap.kernel(0.7), Aperture.circle().kernel(0.7))
    assert float(ap.kernel(10.0)[11, 11]) < 1e-3  # the hole shows at large radius


def test_anamorphic_half_makes_tall_ovals():
    k = Aperture.circle(anamorphic=0.5).kernel(10.0)
    assert k.shape == (2 * 11 + 1, 2 * 6 + 1)
    open_cells = k > 0.5 * k.max()
    height = int(open_cells.any(dim=1).sum())
    width = int(open_cells.any(dim=0).sum())
    assert 19 <= height <= 21 and 9 <= width <= 11
    wide = Aperture.circle(anamorphic=2.0).kernel(10.0)
    torch.testing.assert_close(wide, k.t())

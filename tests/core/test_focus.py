import pytest
import torch

from bokehme_core import focus_from_mask, focus_from_point


def _two_planes():
    d = torch.full((2, 1, 10, 20), 0.2)
    d[:, :, :, 10:] = 0.8
    d[1] = 1.0 - d[1]
    return d


def test_point_normalised_and_pixels():
    d = _two_planes()
    assert torch.allclose(focus_from_point(d, 0.9, 0.5), torch.tensor([0.8, 0.2]))
    assert torch.allclose(focus_from_point(d, 2, 3, normalized=False), torch.tensor([0.2, 0.8]))
    # the far corner (x = y = 1) is inside the image
    assert torch.allclose(focus_from_point(d, 1.0, 1.0), torch.tensor([0.8, 0.2]))


def test_point_median_ignores_a_single_outlier():
    d = torch.full((1, 1, 9, 9), 0.3)
    d[0, 0, 4, 4] = 1.0
    assert focus_from_point(d, 4, 4, normalized=False, radius=1).item() == pytest.approx(0.3)
    assert focus_from_point(d, 4, 4, normalized=False, radius=0).item() == pytest.approx(1.0)


def test_mask_median_and_resize():
    d = _two_planes()
    mask = torch.zeros(1, 1, 5, 10)
    mask[..., 6:] = 1.0  # right half, at half resolution
    assert torch.allclose(focus_from_mask(d, mask), torch.tensor([0.8, 0.2]))


def test_bad_inputs():
    d = _two_planes()
    with pytest.raises(ValueError, match=r"x must be in \[0, 1\]"):
        focus_from_point(d, 1.5, 0.5)
    with pytest.raises(ValueError, match=r"y must be in \[0, 9\]"):
        focus_from_point(d, 0, 12, normalized=False)
    with pytest.raises(ValueError, match="selects no pixel"):
        focus_from_mask(d, torch.zeros(1, 1, 10, 20))
    with pytest.raises(ValueError, match="batch size 3"):
        focus_from_mask(d, torch.ones(3, 1, 10, 20))

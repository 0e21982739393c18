import math

import pytest
import torch

from bokehme_core.preview import aperture_shape, defocus_preview, in_focus_mask


@pytest.mark.parametrize("shape,area", [("circle", math.pi / 4), ("polygon", 3 * math.sqrt(3) / 8)])
def test_shape_areas(shape, area):
    mask = aperture_shape(shape, 129, blades=6)
    assert mask.shape == (129, 129) and 0 <= mask.min() and mask.max() <= 1
    assert mask.mean().item() == pytest.approx(area, abs=0.01)  # fraction of the square


def test_polygon_rotation_convention():
    up = aperture_shape("polygon", 101, blades=5, rotation=math.pi / 2)
    down = aperture_shape("polygon", 101, blades=5, rotation=-math.pi / 2)
    assert up[2, 50] > 0.5 and up[98, 50] < 0.5  # vertex up, flat side down
    assert torch.allclose(down, up.flip(0), atol=1e-6)


def test_star_and_heart_are_symmetric_and_non_empty():
    for shape in ("star", "heart"):
        mask = aperture_shape(shape, 101, blades=5)
        assert 0.2 < mask.mean() < 0.8
        assert torch.allclose(mask, mask.flip(1), atol=1e-6)  # left-right symmetric


def test_shape_bad_args():
    with pytest.raises(ValueError, match="shape must be one of"):
        aperture_shape("donut")
    with pytest.raises(ValueError, match=r"blades must be in \[3, 64\]"):
        aperture_shape("polygon", blades=2)


def test_defocus_preview_and_in_focus():
    defocus = torch.tensor([-10.0, 0.0, 10.0, 0.4, 1.0, 2.0]).view(1, 1, 1, 6)
    preview = defocus_preview(defocus)
    assert preview.shape == (1, 3, 1, 6)
    assert preview[0, 2, 0, 0] > preview[0, 0, 0, 0]  # far = blue
    assert preview[0, 0, 0, 2] > preview[0, 2, 0, 2]  # near = red
    assert torch.allclose(preview[0, :, 0, 1], preview[0, :, 0, 1].mean().expand(3))  # in focus = gray
    mask = in_focus_mask(defocus).flatten()
    assert mask.tolist() == pytest.approx([0.0, 1.0, 0.0, 1.0, 0.5, 0.0])

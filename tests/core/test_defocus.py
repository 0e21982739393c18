import math

import numpy as np
import pytest
import torch

from bokehme_core import apply_highlight, signed_defocus


def test_matches_official_fixture(official_fixture):
    disp = torch.from_numpy(official_fixture["disp"])[None, None]
    params = __import__("json").loads(str(official_fixture["params_json"]))
    defocus = signed_defocus(disp, params["K"], params["disp_focus"])
    # the official pipeline works in units of 10 px
    np.testing.assert_allclose((defocus / 10).numpy(), official_fixture["defocus"], atol=1e-6)
    np.testing.assert_allclose(defocus.numpy(), official_fixture["classical_in_defocus_px"], atol=2e-5)


def test_sign_and_per_image_focus():
    d = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3).expand(2, 1, 1, 3)
    out = signed_defocus(d, 10, torch.tensor([0.5, 1.0]))
    assert torch.allclose(out[0].flatten(), torch.tensor([-5.0, 0.0, 5.0]))  # near = positive
    assert torch.allclose(out[1].flatten(), torch.tensor([-10.0, -5.0, 0.0]))
    assert torch.equal(signed_defocus(d, 0, 0.3), torch.zeros_like(d))


def test_bad_inputs():
    d = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"K must be in \[0, 2000\], got -1"):
        signed_defocus(d, -1, 0.5)
    with pytest.raises(ValueError, match=r"focus must be a disparity in \[0, 1\]"):
        signed_defocus(d, 10, 1.5)
    with pytest.raises(ValueError, match="K must be finite"):
        signed_defocus(d, math.inf, 0.5)
    with pytest.raises(ValueError, match=r"one value or one per image \(2\), got 3"):
        signed_defocus(d, 10, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="empty batch"):
        signed_defocus(torch.rand(0, 1, 4, 4), 10, 0.5)
    with pytest.raises(TypeError, match="floating point"):
        signed_defocus(torch.ones(1, 1, 4, 4, dtype=torch.int64), 10, 0.5)


def test_highlight_only_boosts_bright_defocused_pixels():
    image = torch.tensor([0.5, 1.0, 1.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3).clone()
    defocus = torch.tensor([10.0, 0.0, 10.0]).view(1, 1, 1, 3)  # K=20: |d - f| = 0.5, 0, 0.5
    out = apply_highlight(image, defocus, 20)
    assert torch.equal(out[..., :2], image[..., :2])  # dark pixel and in-focus highlight untouched
    expected = 1.0 + 0.4 * math.tanh(200 * (0.25 - 0.01)) * math.tanh(10 * (1 - 220 / 255))
    assert out[0, 0, 0, 2].item() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(apply_highlight(image, defocus, 0), image)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        apply_highlight(image, defocus, 20, threshold=2)

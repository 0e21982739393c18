import pytest
import torch

from bokehme_core import fuse


def test_error_map_zero_and_one_select_inputs():
    a, b = torch.rand(2, 3, 5, 6), torch.rand(2, 3, 5, 6)
    assert torch.equal(fuse(a, b, torch.zeros(2, 1, 5, 6)), a)
    assert torch.equal(fuse(a, b, torch.ones(1, 1, 5, 6)), b)
    half = fuse(a, b, torch.full((2, 1, 5, 6), 0.5))
    assert torch.allclose(half, (a + b) / 2)


def test_matches_official_fixture(official_fixture):
    f = {k: torch.from_numpy(v) for k, v in official_fixture.items() if k in
         ("bokeh_classical", "bokeh_neural_unclamped", "error_map", "bokeh_pred_unclamped")}
    out = fuse(f["bokeh_classical"], f["bokeh_neural_unclamped"], f["error_map"])
    assert (out - f["bokeh_pred_unclamped"]).abs().max() < 1e-6


def test_bad_inputs():
    a = torch.rand(1, 3, 5, 6)
    with pytest.raises(ValueError, match="neural must match classical"):
        fuse(a, torch.rand(1, 3, 5, 5), torch.zeros(1, 1, 5, 6))
    with pytest.raises(ValueError, match=r"error_map must be in \[0, 1\]"):
        fuse(a, a, torch.full((1, 1, 5, 6), 2.0))
    with pytest.raises(ValueError, match="error_map must be"):
        fuse(a, a, torch.zeros(1, 1, 4, 6))

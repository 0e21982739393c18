"""Focus node, run without ComfyUI."""

import pytest
import torch


def _disparity():
    d = torch.full((1, 10, 20, 3), 0.2)
    d[:, :, 10:] = 0.8
    return d


def test_modes(pack):
    node = pack.nodes.focus.BokehMeFocus()
    out = node.pick(_disparity(), "point", 0.1, 0.9, 0.5)
    assert out["result"][0] == pytest.approx(0.8)
    assert out["ui"]["focus"] == [pytest.approx(0.8)]
    preview = out["result"][1]
    assert preview.shape == (1, 10, 20, 3) and not torch.equal(preview, _disparity())  # the marker is drawn
    assert node.pick(_disparity(), "value", 0.33, 0.9, 0.5)["result"][0] == pytest.approx(0.33)
    mask = torch.zeros(1, 10, 20)
    mask[:, :, :5] = 1
    assert node.pick(_disparity(), "mask", 0.5, 0.9, 0.5, mask=mask)["result"][0] == pytest.approx(0.2)


def test_errors(pack):
    node = pack.nodes.focus.BokehMeFocus()
    with pytest.raises(ValueError, match="needs a MASK"):
        node.pick(_disparity(), "mask", 0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="selects no pixel"):
        node.pick(_disparity(), "mask", 0.5, 0.5, 0.5, mask=torch.zeros(1, 10, 20))

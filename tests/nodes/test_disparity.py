"""Disparity input nodes, run without ComfyUI."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

OPTIONS = dict(mode="disparity (near = bright)", normalize=True, low_percentile=0.0, high_percentile=100.0,
               batch_stable=False, invert=False, repair_nan=True, deband_8bit=False)


def test_depth_to_disparity_modes(pack):
    node = pack.nodes.disparity.BokehMeDepthToDisparity()
    depth = torch.tensor([1.0, 2.0, 4.0]).view(1, 1, 3)  # MASK (B,H,W): metric depth in metres
    disparity, mask = node.convert(**{**OPTIONS, "mode": "metric depth (1/d)"}, depth_mask=depth)
    assert disparity.shape == (1, 1, 3, 3) and mask.shape == (1, 1, 3)
    # 1/d = 1, 0.5, 0.25 -> normalised 1, 1/3, 0 (nearest = 1)
    assert torch.allclose(mask.flatten(), torch.tensor([1.0, 1 / 3, 0.0]), atol=1e-5)
    image = depth[..., None].expand(-1, -1, -1, 3)  # the same as a gray IMAGE
    _, inverted = node.convert(**{**OPTIONS, "mode": "depth (near = dark)"}, depth_image=image)
    assert torch.allclose(inverted.flatten(), torch.tensor([1.0, 2 / 3, 0.0]), atol=1e-5)
    _, passthrough = node.convert(**{**OPTIONS, "normalize": False, "invert": True}, depth_mask=torch.tensor([[[0.25]]]))
    assert passthrough.item() == pytest.approx(0.75)


def test_depth_to_disparity_repair_resize_batch_stable(pack):
    node = pack.nodes.disparity.BokehMeDepthToDisparity()
    depth = torch.rand(2, 8, 8) + 0.5
    depth[1] += 3.0
    depth[0, 2, 2] = math.nan
    _, mask = node.convert(**{**OPTIONS, "mode": "metric depth (1/d)", "batch_stable": True}, depth_mask=depth,
                           match_size_of=torch.zeros(1, 16, 12, 3))
    assert mask.shape == (2, 16, 12) and torch.isfinite(mask).all()
    assert mask[1].max() < mask[0].min() + 0.5  # one range for both frames: the far frame stays dark
    with pytest.raises(ValueError, match="enable 'repair_nan'"):
        node.convert(**{**OPTIONS, "repair_nan": False}, depth_mask=depth)
    with pytest.raises(ValueError, match="exactly one of depth_image or depth_mask"):
        node.convert(**OPTIONS)
    with pytest.raises(ValueError, match="enable 'normalize'"):
        node.convert(**{**OPTIONS, "normalize": False}, depth_mask=depth)


def test_load_disparity_file_lists_input_folder(pack, tmp_path, monkeypatch):
    mod = pack.nodes.disparity
    values = (np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)
    Image.fromarray(values).save(tmp_path / "d16.png")
    monkeypatch.setattr(mod, "_input_directory", lambda: tmp_path)
    names = mod.BokehMeLoadDisparityFile.INPUT_TYPES()["required"]["file"][0]
    assert "d16.png" in names
    disparity, mask = mod.BokehMeLoadDisparityFile().load("d16.png", **OPTIONS)
    expected = (values - values.min()) / (values.max() - values.min())
    np.testing.assert_allclose(mask[0].numpy(), expected, atol=1e-5)  # all 16 bits, normalised
    assert mod.BokehMeLoadDisparityFile.VALIDATE_INPUTS("missing.png") != True
    with pytest.raises(FileNotFoundError, match="not found"):
        mod.BokehMeLoadDisparityFile().load("missing.png", **OPTIONS)


def test_example_scene(pack):
    image, disparity, mask = pack.nodes.disparity.BokehMeExampleScene().load(frames=2)
    assert image.shape[0] == 2 and image.shape[-1] == 3 and disparity.shape == image.shape
    assert mask.shape == image.shape[:3] and 0 <= mask.min() and mask.max() <= 1 and mask.max() > mask.min()


def test_refine_node_equals_core_and_names_itself_in_errors(pack):
    from bokehme_core import refine_disparity

    gen = torch.Generator().manual_seed(0)
    image = torch.zeros(1, 16, 24, 3)
    image[:, :, :12] = torch.tensor([0.9, 0.2, 0.1])
    image[:, :, 12:] = torch.tensor([0.1, 0.3, 0.8])
    image = (image + 0.02 * torch.rand(image.shape, generator=gen)).clamp(0, 1)
    disparity = torch.full((1, 16, 24), 0.2)
    disparity[:, :, :14] = 0.9  # the near side reaches 2 px too far
    node = pack.NODE_CLASS_MAPPINGS["BokehMeRefineDisparity"]()
    refined_image, refined_mask = node.refine(image, disparity, 4)
    expected = refine_disparity(disparity[:, None], image.permute(0, 3, 1, 2))
    torch.testing.assert_close(refined_mask, expected[:, 0])
    assert refined_image.shape == (1, 16, 24, 3) and torch.equal(refined_image[..., 0], refined_mask)
    assert float(refined_mask[0, 5, 12]) == pytest.approx(0.2) and float(refined_mask[0, 5, 11]) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="BokehMe Refine Disparity: .*matching"):
        node.refine(image[:, :, :20], disparity, 4)
    with pytest.raises(ValueError, match="BokehMe Refine Disparity: mask is empty"):
        node.refine(image, disparity, 4, subject_mask=torch.zeros(1, 16, 24))

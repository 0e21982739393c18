"""ARNet / IUNet: official key layout, shapes, tiling exactness, parity with the official fixture."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from bokehme_core.neural.arnet import ARNet
from bokehme_core.neural.blocks import NetConfig
from bokehme_core.neural.iunet import IUNet



def _official_keys():
    keys = ["conv0.conv.weight", "conv0.conv.bias"]
    for i in range(3):
        for j in range(2):
            keys += [f"block_stack.blocks.{i}.{j}.conv.weight", f"block_stack.blocks.{i}.{j}.conv.bias"]
    return keys + ["conv1.conv.weight", "conv1.conv.bias"]


@pytest.fixture(scope="module")
def seed0_arnet(seed0_arnet_state):
    net = ARNet()
    net.load_state_dict(seed0_arnet_state, strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def official_iunet(official_checkpoints):
    from safetensors.torch import load_file

    net = IUNet()
    net.load_state_dict(load_file(str(official_checkpoints / "iunet.safetensors")), strict=True)
    return net.eval()


@pytest.mark.parametrize(
    "cls, shapes, params",
    [
        (ARNet, {"conv0.conv.weight": (128, 17, 3, 3), "block_stack.blocks.2.1.conv.weight": (128, 128, 3, 3),
                 "conv1.conv.weight": (16, 128, 3, 3)}, 923_664),
        (IUNet, {"conv0.conv.weight": (64, 20, 3, 3), "block_stack.blocks.0.0.conv.weight": (64, 64, 3, 3),
                 "conv1.conv.weight": (12, 64, 3, 3)}, 240_076),
    ],
)
def test_official_layout(cls, shapes, params):
    net = cls()
    state = net.state_dict()
    assert list(state) == _official_keys()
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape
    assert sum(p.numel() for p in net.parameters()) == params
    assert net.config == cls.config_from_state_dict(state)


def test_config_inferred_from_small_variant():
    net = ARNet(middle_channels=24, num_blocks=2)
    assert ARNet.config_from_state_dict(net.state_dict()) == NetConfig(24, 2)
    assert NetConfig(24, 2).num_convs == 6


def test_config_rejects_other_network():
    with pytest.raises(ValueError, match="IUNet checkpoint: use load_iunet"):
        ARNet.config_from_state_dict(IUNet().state_dict())
    with pytest.raises(ValueError, match="no 4-D 'conv0.conv.weight'"):
        IUNet.config_from_state_dict({"pretrained.blocks.0.weight": torch.zeros(3)})


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="middle_channels must be >= 1, got 0"):
        ARNet(middle_channels=0)


@pytest.mark.parametrize("size", [(12, 10), (13, 9), (7, 16)])
def test_shapes_ranges_odd_sizes(size):
    torch.manual_seed(0)
    arnet, iunet = ARNet(16, 1).eval(), IUNet(8, 1).eval()
    image = torch.rand(2, 3, *size)
    defocus = torch.rand(2, 1, *size) * 2 - 1
    with torch.inference_mode():
        bokeh, error = arnet(image, defocus, 0.75)
        refined = iunet(image, defocus, torch.rand(2, 3, 5, 4), torch.tensor([0.0, 1.0]))
    assert bokeh.shape == (2, 3, *size) and error.shape == (2, 1, *size) and refined.shape == (2, 3, *size)
    assert torch.isfinite(bokeh).all() and torch.isfinite(refined).all()
    assert 0 < float(error.min()) and float(error.max()) < 1


def test_deterministic_and_batch_split(seed0_arnet):
    torch.manual_seed(1)
    image, defocus = torch.rand(2, 3, 14, 18), torch.rand(2, 1, 14, 18) - 0.5
    with torch.inference_mode():
        a = seed0_arnet(image, defocus, 0.5)
        b = seed0_arnet(image, defocus, 0.5)
        first = seed0_arnet(image[:1], defocus[:1], 0.5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.testing.assert_close(a[0][:1], first[0], atol=1e-6, rtol=0)


def test_gamma_changes_output(seed0_arnet):
    image, defocus = torch.rand(1, 3, 8, 8), torch.zeros(1, 1, 8, 8)
    with torch.inference_mode():
        assert not torch.allclose(seed0_arnet(image, defocus, 0.0)[0], seed0_arnet(image, defocus, 1.0)[0])


def test_tiled_equals_untiled(seed0_arnet, official_iunet):
    torch.manual_seed(2)
    image, defocus = torch.rand(1, 3, 61, 47), torch.rand(1, 1, 61, 47) * 2 - 1
    coarse = torch.rand(1, 3, 30, 23)
    with torch.inference_mode():
        full_a = seed0_arnet(image, defocus, 0.75)
        tiled_a = seed0_arnet(image, defocus, 0.75, tile_size=32)  # 2x2 tiles of ~15x12 half-res px, halo 8
        full_i = official_iunet(image, defocus, coarse, 0.75)
        tiled_i = official_iunet(image, defocus, coarse, 0.75, tile_size=20)  # 3x3 tiles
    torch.testing.assert_close(tiled_a[0], full_a[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(tiled_a[1], full_a[1], atol=1e-4, rtol=0)
    torch.testing.assert_close(tiled_i, full_i, atol=1e-4, rtol=0)


def test_tiling_needs_the_full_halo(official_iunet):
    """Guard the halo computation: a halo one pixel short must change the result."""
    torch.manual_seed(3)
    x = torch.rand(1, 20, 24, 24)
    net = official_iunet
    with torch.inference_mode():
        full = net.body(x)
        halo = net.config.num_convs - 1
        tile = net.body(x[:, :, :12 + halo, :])[:, :, :12]
    assert float((tile - full[:, :, :12]).abs().max()) > 1e-6


def test_parity_arnet(official_fixture, seed0_arnet):
    f = {k: torch.from_numpy(v) for k, v in official_fixture.items() if isinstance(v, np.ndarray) and v.ndim == 4}
    with torch.inference_mode():
        bokeh, error = seed0_arnet(f["arnet_in_image"], f["arnet_in_defocus"], float(official_fixture["gamma_norm"]))
    torch.testing.assert_close(bokeh, f["arnet_out_bokeh_raw"], atol=1e-5, rtol=0)
    torch.testing.assert_close(error, f["arnet_out_error_lowres"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("stage", ["iter0", "final"])
def test_parity_iunet(official_fixture, official_iunet, stage):
    f = {k: torch.from_numpy(v) for k, v in official_fixture.items() if isinstance(v, np.ndarray) and v.ndim == 4}
    with torch.inference_mode():
        out = official_iunet(
            f[f"{stage}_iunet_in_image"], f[f"{stage}_iunet_in_defocus"], f[f"{stage}_iunet_in_bokeh_coarse"],
            float(official_fixture["gamma_norm"]),
        ).clamp(0, 1e5)
    torch.testing.assert_close(out, f[f"{stage}_iunet_out_refine_clamped"], atol=1e-5, rtol=0)


def test_public_api_exports():
    import bokehme_core

    assert bokehme_core.ARNet is ARNet and bokehme_core.IUNet is IUNet
    assert callable(bokehme_core.load_arnet) and callable(bokehme_core.load_iunet)

"""Neural nodes (model loader, ARNet, IUNet, all-in-one BokehMe), run without ComfyUI through the pack."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import bokehme_core.paths
from bokehme_core import pipeline as P
from bokehme_core.neural.arnet import ARNet
from bokehme_core.neural.iunet import IUNet
from bokehme_core.weights import load_iunet
from helpers import random_arnet_state


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """User cache dir (= the bokehme model folder outside ComfyUI) holding a seeded ARNet (safetensors) and an
    IUNet training checkpoint in the official form (.pth), plus a depth model that the loader must not list."""
    folder = tmp_path / "cache"
    (folder / "depth").mkdir(parents=True)
    save_file(random_arnet_state(), str(folder / "arnet_seed0.safetensors"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        torch.save({"global_step": 1, "model": IUNet().state_dict()}, folder / "iunet_official.pth")
    save_file({"head.weight": torch.zeros(1)}, str(folder / "depth" / "da_v2.safetensors"))
    monkeypatch.setenv("BOKEHME_CACHE", str(folder))
    return folder


@pytest.fixture
def models(pack, cache):
    (handle,) = pack.nodes.neural.BokehMeModelLoader().load("arnet_seed0.safetensors", "iunet_official.pth")
    return handle


@pytest.fixture(scope="module")
def scene():
    """A 40x48 IMAGE and disparity IMAGE in ComfyUI layout (B,H,W,C)."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 40, 48, 3, generator=g)
    disparity = torch.full((1, 40, 48, 3), 0.1)
    disparity[:, 10:30, 12:36] = 0.9  # a near box in front of a far background
    disparity += 0.02 * torch.rand(1, 40, 48, 1, generator=g)
    return image, disparity.clamp(0, 1)


def _bchw(image, disparity):
    return image.permute(0, 3, 1, 2).contiguous(), disparity[..., :1].permute(0, 3, 1, 2).contiguous()


# ---- declarations ------------------------------------------------------------------------------------
def test_registered_with_tooltips_and_descriptions(pack):
    neural = pack.nodes.neural
    assert set(neural.NODE_CLASS_MAPPINGS) == {"BokehMeModelLoader", "BokehMeARNet", "BokehMeIUNet", "BokehMe"}
    for node_id, cls in neural.NODE_CLASS_MAPPINGS.items():
        assert pack.nodes.NODE_CLASS_MAPPINGS[node_id] is cls
        assert neural.NODE_DISPLAY_NAME_MAPPINGS[node_id].startswith("BokehMe")
        assert cls.CATEGORY.startswith("image/bokeh") and len(cls.DESCRIPTION) > 40
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        assert callable(getattr(cls(), cls.FUNCTION))
        for group in cls.INPUT_TYPES().values():
            for name, spec in group.items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_loader_choices(pack, cache):
    choices = pack.nodes.neural.BokehMeModelLoader.INPUT_TYPES()["required"]["arnet"][0]
    assert choices == ["bundled", "official (download if missing)", "arnet_seed0.safetensors", "iunet_official.pth"]


# ---- loader ------------------------------------------------------------------------------------------
def test_loader_files(models):
    assert isinstance(models.arnet, ARNet) and models.iunet.config.middle_channels == 64
    assert next(models.arnet.parameters()).device.type == "cpu"
    assert "arnet_seed0.safetensors" in repr(models)


def test_loader_wrong_network_file(pack, cache):
    with pytest.raises(ValueError, match="arnet choice 'iunet_official.pth' is not usable.*use load_iunet"):
        pack.nodes.neural.BokehMeModelLoader().load("iunet_official.pth", "iunet_official.pth")


def test_loader_file_gone(pack, cache):
    with pytest.raises(FileNotFoundError, match="'gone.pth' is not in the model folders"):
        pack.nodes.neural.BokehMeModelLoader().load("gone.pth", "iunet_official.pth")


def test_loader_bundled_missing(pack, cache, tmp_path, monkeypatch):
    monkeypatch.setattr(bokehme_core.paths, "bundled_weights_dir", lambda: tmp_path / "no_weights")
    with pytest.raises(RuntimeError, match="choose 'official \\(download if missing\\)' instead"):
        pack.nodes.neural.BokehMeModelLoader().load("bundled", "bundled")


def test_loader_bundled(pack, cache, tmp_path, monkeypatch):
    from bokehme_core.weights import save_safetensors

    folder = tmp_path / "weights"
    folder.mkdir()
    save_safetensors(ARNet(8, 1), folder / "arnet.safetensors")
    save_safetensors(load_iunet(cache / "iunet_official.pth"), folder / "iunet.safetensors")
    monkeypatch.setattr(bokehme_core.paths, "bundled_weights_dir", lambda: folder)
    (handle,) = pack.nodes.neural.BokehMeModelLoader().load("bundled", "bundled")
    assert handle.arnet.config.middle_channels == 8 and handle.arnet_source == "bundled"


def test_loader_official_downloads_when_missing(pack, cache, tmp_path, serve_official, official_iunet_pth):
    torch.save({"model": random_arnet_state()}, tmp_path / "served_arnet.pth")
    serve_official("arnet", (tmp_path / "served_arnet.pth").as_uri())
    serve_official("iunet", official_iunet_pth.as_uri())
    official = "official (download if missing)"
    (handle,) = pack.nodes.neural.BokehMeModelLoader().load(official, official)
    assert (cache / "arnet.pth").is_file() and (cache / "iunet.pth").is_file()
    assert isinstance(handle.arnet, ARNet)


def test_loader_official_offline_message(pack, cache, tmp_path, serve_official):
    serve_official("arnet", (tmp_path / "nowhere.pth").as_uri())
    with pytest.raises(RuntimeError, match="Download it by hand from .*save it as .*cache/arnet.pth"):
        pack.nodes.neural.BokehMeModelLoader().load("official (download if missing)", "iunet_official.pth")


# ---- ARNet / IUNet nodes -----------------------------------------------------------------------------
def test_arnet_then_iunet_nodes_match_core(pack, models, scene):
    neural = pack.nodes.neural
    image, disparity = scene
    lowres, error = neural.BokehMeARNet().run(models, image, disparity, 30.0, 0.1, 4.0, classical_mode="exact")
    scale = max(30 * 0.85 / 10, 1.0)  # the near box: disparity up to ~0.95
    assert lowres.ndim == 4 and lowres.shape[-1] == 3 and lowres.shape[1] < 40
    assert error.shape == (1, 40, 48) and float(error.min()) > 0 and float(error.max()) < 1
    (neural_bokeh,) = neural.BokehMeIUNet().run(models, image, disparity, 30.0, 0.1, 4.0, lowres)
    assert neural_bokeh.shape == (1, 40, 48, 3)
    assert 0 <= float(neural_bokeh.min()) and float(neural_bokeh.max()) <= 1

    from bokehme_core.scatter.dilate import dilate_defocus

    from bokehme_core import render_inputs

    img, disp = _bchw(image, disparity)
    img, defocus = render_inputs(img, disp, 30.0, 0.1, recover=True)  # the nodes' default highlight recovery
    dilated = dilate_defocus(defocus)
    core = P.render_neural(img, defocus, dilated, gamma=4.0, arnet=models.arnet, iunet=models.iunet)
    torch.testing.assert_close(neural_bokeh, core.bokeh.clamp(0, 1).permute(0, 2, 3, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(error, core.error_map[:, 0], atol=1e-6, rtol=0)
    assert scale > 2
    # the same with the dilated defocus connected
    (connected,) = neural.BokehMeIUNet().run(models, image, disparity, 30.0, 0.1, 4.0, lowres, dilated_defocus=dilated)
    torch.testing.assert_close(connected, neural_bokeh, atol=1e-6, rtol=0)
    # the default error map is the one for the layered classical renderer: ARNet's times the layered gate
    from bokehme_core.error_map import error_gate

    _, layered_error = neural.BokehMeARNet().run(models, image, disparity, 30.0, 0.1, 4.0)
    gate = error_gate(defocus, "layered")
    torch.testing.assert_close(layered_error, error * gate[:, 0], atol=1e-6, rtol=0)
    assert float(layered_error.max()) > 0.01 and float((layered_error < error - 1e-3).float().mean()) > 0.1


def test_arnet_and_iunet_nodes_recover_highlights_like_the_pipeline(pack, models, scene):
    neural = pack.nodes.neural
    image, disparity = scene
    image = image.clone()
    image[:, 2:4, 2:4] = 1.0  # clipped lights in the blurred background
    img, disp = _bchw(image, disparity)
    kwargs = dict(K=30.0, focus=0.1, gamma=4.0, arnet=models.arnet, iunet=models.iunet, sparse=False)
    for recover in (True, False):
        lowres, error = neural.BokehMeARNet().run(models, image, disparity, 30.0, 0.1, 4.0, recover_highlights=recover)
        (neural_bokeh,) = neural.BokehMeIUNet().run(models, image, disparity, 30.0, 0.1, 4.0, lowres,
                                                    recover_highlights=recover)
        core = P.render_bokehme(img, disp, recover_highlights=recover, **kwargs)
        torch.testing.assert_close(neural_bokeh, core.neural.permute(0, 2, 3, 1), atol=1e-5, rtol=0)
        torch.testing.assert_close(error, core.error_map[:, 0], atol=1e-6, rtol=0)


def test_iunet_node_rejects_mismatched_lowres(pack, models, scene):
    image, disparity = scene
    with pytest.raises(ValueError, match="connect 'BokehMe ARNet' run with the same image, disparity, K and focus"):
        pack.nodes.neural.BokehMeIUNet().run(models, image, disparity, 30.0, 0.1, 4.0, torch.rand(1, 5, 5, 3))


def test_arnet_node_batch_with_different_scales(pack, models, scene):
    image, disparity = scene
    flat = torch.full_like(disparity, 0.1)  # nothing out of focus: another ARNet size
    with pytest.raises(ValueError, match="need different ARNet sizes"):
        pack.nodes.neural.BokehMeARNet().run(models, image.expand(2, -1, -1, -1), torch.cat([disparity, flat]),
                                             30.0, 0.1, 4.0)


def test_disparity_size_mismatch_advice(pack, models, scene):
    image, _ = scene
    with pytest.raises(ValueError, match="enable 'resize_disparity' on this node"):
        pack.nodes.neural.BokehMeARNet().run(models, image, torch.rand(1, 20, 20, 3), 30.0, 0.1, 4.0)
    lowres, _ = pack.nodes.neural.BokehMeARNet().run(models, image, torch.rand(1, 20, 20, 3), 30.0, 0.1, 4.0,
                                                      resize_disparity=True)
    assert lowres.shape[0] == 1


def test_models_type_checked(pack, scene):
    image, disparity = scene
    with pytest.raises(TypeError, match="models must come from the 'BokehMe Model Loader' node"):
        pack.nodes.neural.BokehMeARNet().run("not models", image, disparity, 30.0, 0.1, 4.0)


# ---- all-in-one --------------------------------------------------------------------------------------
_DEFAULTS = dict(K=12.0, focus=0.11, focus_end=-1.0, gamma=4.0, aperture="circle", blades=6, rotation_deg=90.0,
                 anamorphic=1.0, classical_mode="fast", highlight=False, error_map="predicted", resize_disparity=False)


def test_bokehme_node_matches_core_and_batches(pack, models, scene):
    image, disparity = scene
    images = torch.cat([image, image.flip(2)])
    bokeh, error, in_focus = pack.nodes.neural.BokehMe().render(models, images, disparity, **_DEFAULTS)
    assert bokeh.shape == (2, 40, 48, 3) and error.shape == in_focus.shape == (2, 40, 48)
    img, disp = _bchw(images, disparity)
    core = P.render_bokehme(img, disp, K=12.0, focus=0.11, arnet=models.arnet, iunet=models.iunet, classical_mode="fast")
    torch.testing.assert_close(bokeh, core.bokeh.permute(0, 2, 3, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(error, core.error_map[:, 0], atol=1e-6, rtol=0)
    # in focus: the background (disparity 0.10-0.12, blur <= 0.12 px) yes, the near box (blur ~9.5 px) no
    assert float(in_focus[:, :8].min()) == 1.0 and float(in_focus[:, 20, 24].max()) == 0.0
    assert next(models.arnet.parameters()).device.type == "cpu"  # offloaded after the run


def test_bokehme_node_polygon_mask_and_analytic(pack, models, scene):
    image, disparity = scene
    node = pack.nodes.neural.BokehMe()
    circle = node.render(models, image, disparity, **_DEFAULTS)[0]
    options = dict(_DEFAULTS, aperture="polygon", blades=5, highlight=True, error_map="analytic")
    polygon, error, _ = node.render(models, image, disparity, **options)
    assert not torch.allclose(polygon, circle)
    img, disp = _bchw(image, disparity)
    from bokehme_core.error_map import analytic_error_map

    torch.testing.assert_close(error, analytic_error_map(disp, 12.0, 0.11)[:, 0], atol=1e-6, rtol=0)
    mask = torch.zeros(1, 33, 33)
    mask[:, 8:25, 8:25] = 1.0  # a square bokeh ball
    square = node.render(models, image, disparity, **dict(_DEFAULTS, aperture_mask=mask))[0]
    assert not torch.allclose(square, circle)


def test_bokehme_node_focus_pull(pack, models, scene):
    """focus_end >= 0: the focus moves over the batch; each frame equals a single render at its focus."""
    image, disparity = scene
    node = pack.nodes.neural.BokehMe()
    pulled, _, in_focus = node.render(models, image.expand(2, -1, -1, -1), disparity,
                                      **dict(_DEFAULTS, focus=0.11, focus_end=0.9))
    last = node.render(models, image, disparity, **dict(_DEFAULTS, focus=0.9))[0]
    torch.testing.assert_close(pulled[1:], last, atol=1e-6, rtol=0)
    assert float(in_focus[0, 20, 24]) == 0.0 and float(in_focus[1, 20, 24]) > 0.5  # the box comes into focus


def test_bokehme_node_bad_input_message(pack, models, scene):
    image, disparity = scene
    with pytest.raises(ValueError, match=r"gamma must be in \[1, 5\]"):
        pack.nodes.neural.BokehMe().render(models, image, disparity, **dict(_DEFAULTS, gamma=9.0))

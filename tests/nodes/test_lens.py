"""The BokehMe Lens node and the optional 'lens' input of the render nodes, run without ComfyUI."""

from __future__ import annotations

import pytest
import torch

import bokehme_core as core
from bokehme_core.lens import LENS_RANGES
from bokehme_core.neural.arnet import ARNet
from bokehme_core.neural.iunet import IUNet

CHARACTER = dict(cat_eye=0.7, swirl=0.3, ring=0.5, fringe=0.05, highlight_gain=3.0, highlight_threshold=0.9,
                 focus_range=0.1, near_scale=1.5, far_scale=0.8)


def _defaults(pack) -> dict:
    return {name: spec[1]["default"] for name, spec in pack.nodes.lens.BokehMeLens.INPUT_TYPES()["required"].items()}


def _scene(h=24, w=32):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, h, w, 3, generator=g)  # ComfyUI IMAGE (B,H,W,C)
    image[:, ::6, ::7] = 1.0  # lights for the highlight lift
    disparity = torch.linspace(0, 1, w).view(1, 1, w, 1).expand(1, h, w, 3).contiguous()
    return image, disparity


def _classical(pack, lens=None, **overrides):
    image, disparity = _scene()
    args = dict(image=image, disparity=disparity, K=8.0, focus=0.5, focus_end=-1.0, gamma=2.0, aperture="circle",
                blades=6, rotation_deg=90.0, anamorphic=1.0, mode="fast", highlight=False, resize_disparity=False)
    args.update(overrides)
    return pack.nodes.render.BokehMeClassicalRender().render(**args, lens=lens)


def test_lens_node_registered_with_ranges_from_the_core(pack):
    assert pack.NODE_CLASS_MAPPINGS["BokehMeLens"] is pack.nodes.lens.BokehMeLens
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["BokehMeLens"] == "BokehMe Lens"
    cls = pack.nodes.lens.BokehMeLens
    assert cls.CATEGORY == "image/bokeh" and cls.RETURN_TYPES == ("BOKEHME_LENS", "IMAGE")
    inputs = cls.INPUT_TYPES()["required"]
    assert set(inputs) == set(LENS_RANGES)
    for name, (kind, options) in inputs.items():
        lo, hi = LENS_RANGES[name]
        assert kind == "FLOAT" and (options["min"], options["max"]) == (lo, hi)
        assert f"Range {lo:g}..{hi:g}" in options["tooltip"]
    for node_id in ("BokehMeClassicalRender", "BokehMe"):  # an optional socket: saved workflows keep working
        spec = pack.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
        assert spec["optional"]["lens"][0] == "BOKEHME_LENS" and "lens" not in spec["required"]


def test_lens_node_defaults_are_neutral_and_preview(pack):
    lens, preview = pack.nodes.lens.BokehMeLens().build(**_defaults(pack))
    assert isinstance(lens, core.Lens) and lens.is_neutral
    assert lens == core.Lens()  # one set of defaults: the node's widgets are the core's
    assert preview.shape == (1, 192, 288, 3) and float(preview.min()) >= 0 and float(preview.max()) <= 1
    character, character_preview = pack.nodes.lens.BokehMeLens().build(**CHARACTER)
    assert character == core.Lens(**CHARACTER)
    assert float((character_preview - preview).abs().mean()) > 1e-3


@pytest.mark.parametrize("name, value", [("cat_eye", 1.5), ("fringe", 0.3), ("highlight_gain", 0.5),
                                         ("focus_range", -0.1), ("far_scale", 11.0)])
def test_out_of_range_values_name_the_option_and_range(pack, name, value):
    lo, hi = LENS_RANGES[name]
    options = {**_defaults(pack), name: value}
    with pytest.raises(ValueError, match=rf"BokehMe Lens: {name} must be in \[{lo:g}, {hi:g}\], got {value:g}"):
        pack.nodes.lens.BokehMeLens().build(**options)


def test_render_nodes_reject_other_lens_values(pack):
    with pytest.raises(TypeError, match="'lens' input must come from the 'BokehMe Lens' node"):
        _classical(pack, lens={"cat_eye": 0.5})


def test_classical_node_with_a_lens_equals_core(pack):
    plain = _classical(pack)
    neutral = _classical(pack, lens=core.Lens())
    assert all(torch.equal(a, b) for a, b in zip(plain, neutral))
    lens = core.Lens(**CHARACTER)
    bokeh, dilated, preview, in_focus = _classical(pack, lens=lens)
    image, disparity = _scene()
    img, disp = image.permute(0, 3, 1, 2), disparity[..., :1].permute(0, 3, 1, 2)
    lifted, defocus = core.render_inputs(img, disp, 8.0, 0.5, **lens.pre_render)
    ref = core.render_classical(lifted, defocus, gamma=2.0, mode="fast", lens=lens.shape).bokeh.clamp(0, 1)
    torch.testing.assert_close(bokeh, ref.permute(0, 2, 3, 1), atol=1e-6, rtol=0)
    # the focus range widens what stays sharp
    assert float(in_focus.sum()) > float(plain[3].sum())


def test_bokehme_node_with_a_lens(pack):
    torch.manual_seed(0)
    models = pack.nodes.neural.BokehMeModels(ARNet(8, 1).eval(), IUNet(8, 1).eval(), "test", "test")
    image, disparity = _scene()
    args = dict(K=8.0, focus=0.5, focus_end=-1.0, gamma=2.0, aperture="circle", blades=6, rotation_deg=90.0,
                anamorphic=1.0, classical_mode="fast", highlight=False, error_map="predicted", resize_disparity=False)
    node = pack.nodes.neural.BokehMe()
    plain = node.render(models, image, disparity, **args)
    neutral = node.render(models, image, disparity, **args, lens=core.Lens())
    assert all(torch.equal(a, b) for a, b in zip(plain, neutral))
    lens = core.Lens(**CHARACTER)
    bokeh, error, in_focus = node.render(models, image, disparity, **args, lens=lens)
    img, disp = image.permute(0, 3, 1, 2), disparity[..., :1].permute(0, 3, 1, 2)
    ref = core.render_bokehme(img, disp, K=8.0, focus=0.5, gamma=2.0, arnet=models.arnet, iunet=models.iunet,
                              classical_mode="fast", lens=lens)
    torch.testing.assert_close(bokeh, ref.bokeh.permute(0, 2, 3, 1), atol=1e-6, rtol=0)
    assert float(in_focus.sum()) > float(plain[2].sum())  # the focus range keeps a band sharp

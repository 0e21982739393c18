"""Classical render, aperture shape, analytic error map and fusion nodes, run without ComfyUI."""

import math

import pytest
import torch

import bokehme_core as core


def _scene(b=1, h=24, w=32):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(b, h, w, 3, generator=g)  # ComfyUI IMAGE (B,H,W,C)
    disparity = torch.linspace(0, 1, w).view(1, 1, w, 1).expand(b, h, w, 3).contiguous()
    return image, disparity


def _render(pack, **overrides):
    image, disparity = _scene()
    args = dict(image=image, disparity=disparity, K=8.0, focus=0.5, focus_end=-1.0, gamma=2.0, aperture="circle",
                blades=6, rotation_deg=90.0, anamorphic=1.0, mode="exact", highlight=False, resize_disparity=False,
                recover_highlights=False)
    args.update(overrides)
    return pack.nodes.render.BokehMeClassicalRender().render(**args)


def test_classical_node_equals_core_and_layouts(pack):
    image, disparity = _scene()
    bokeh, dilated, preview, in_focus = _render(pack)
    assert bokeh.shape == (1, 24, 32, 3) and preview.shape == (1, 24, 32, 3) and in_focus.shape == (1, 24, 32)
    assert dilated.shape == (1, 1, 24, 32)
    ref = core.render_classical(image.permute(0, 3, 1, 2), core.signed_defocus(disparity[..., :1].permute(0, 3, 1, 2), 8.0, 0.5),
                                gamma=2.0).bokeh.clamp(0, 1)
    assert torch.allclose(bokeh, ref.permute(0, 2, 3, 1), atol=1e-6)
    # in-focus mask: sharp at the focus column, blurred at the far edge
    assert in_focus[0, :, 16].min() == 1 and in_focus[0, :, 0].max() == 0
    # preview: near (right) is red, far (left) is blue
    assert preview[0, 0, -1, 0] > preview[0, 0, -1, 2] and preview[0, 0, 0, 2] > preview[0, 0, 0, 0]


def test_classical_node_recovers_highlights_by_default(pack):
    image, disparity = _scene()
    image = image.clone()
    image[:, 3:5, 2:4] = 1.0  # clipped lights on the blurred far side
    img = image.permute(0, 3, 1, 2)
    disp = disparity[..., :1].permute(0, 3, 1, 2)
    for recover in (True, False):
        (bokeh, *_) = _render(pack, image=image, recover_highlights=recover)
        lifted, defocus = core.render_inputs(img, disp, 8.0, 0.5, recover=recover)
        ref = core.render_classical(lifted, defocus, gamma=2.0).bokeh.clamp(0, 1)
        assert torch.allclose(bokeh, ref.permute(0, 2, 3, 1), atol=1e-6)
    (on, *_), (off, *_) = _render(pack, image=image, recover_highlights=True), _render(pack, image=image)
    assert float((on - off)[:, :10, :8].mean()) > 0.01
    options = pack.nodes.render.BokehMeClassicalRender.INPUT_TYPES()["optional"]["recover_highlights"][1]
    assert options["default"] is True and "clipped" in options["tooltip"]


def test_classical_node_batch_focus_pull_and_apertures(pack):
    image, disparity = _scene(b=3)
    node = pack.nodes.render.BokehMeClassicalRender()
    common = dict(K=8.0, gamma=2.0, blades=5, rotation_deg=90.0, anamorphic=1.0, mode="fast", highlight=True,
                  resize_disparity=False)
    bokeh, _, _, in_focus = node.render(image, disparity[:1], focus=0.0, focus_end=1.0, aperture="polygon", **common)
    assert bokeh.shape == (3, 24, 32, 3)
    # the sharp column moves from far (left) to near (right) across the frames
    sharp_cols = [int(in_focus[i].mean(0).argmax()) for i in range(3)]
    assert sharp_cols[0] < sharp_cols[1] < sharp_cols[2]
    mask = pack.nodes.render.BokehMeApertureShape().draw("heart", 6, 90.0, 33)[0]
    heart, *_ = node.render(image[:1], disparity[:1], focus=0.5, focus_end=-1.0, aperture="circle", aperture_mask=mask, **common)
    assert torch.isfinite(heart).all() and not torch.allclose(heart, bokeh[:1])


def test_classical_node_errors(pack):
    image, disparity = _scene()
    with pytest.raises(ValueError, match="enable 'resize_disparity'"):
        _render(pack, disparity=disparity[:, :12])
    out = _render(pack, disparity=disparity[:, :12], resize_disparity=True)
    assert out[0].shape == (1, 24, 32, 3)
    with pytest.raises(ValueError, match="2 images but 3 disparity maps"):
        _render(pack, image=image.expand(2, -1, -1, -1), disparity=disparity.expand(3, -1, -1, -1))
    with pytest.raises(ValueError, match="empty batch"):
        _render(pack, image=image[:0])


def test_alpha_and_gray_images_are_accepted(pack):
    image, disparity = _scene()
    rgba = torch.cat([image, torch.ones_like(image[..., :1])], dim=-1)
    assert torch.equal(_render(pack, image=rgba)[0], _render(pack, image=image)[0])
    gray = image[..., :1]
    out = _render(pack, image=gray)[0]
    assert torch.allclose(out[..., 0], out[..., 2])


def test_aperture_shape_node(pack):
    mask, preview = pack.nodes.render.BokehMeApertureShape().draw("polygon", 6, 90.0, 65)
    assert mask.shape == (1, 65, 65) and preview.shape == (1, 65, 65, 3)
    assert 0.6 < mask.mean() < 0.7  # a regular hexagon fills 3*sqrt(3)/(2*pi) = 0.83 of its circle, 0.65 of the square
    assert mask[0, 1, 32] > 0.5  # vertex up at rotation 90
    assert mask[0, 32, 1] < 0.5  # flat sides left and right


def test_error_map_and_fuse_nodes(pack):
    image, disparity = _scene()
    disparity = disparity.clone()
    disparity[:, :, 16:] = 1.0
    disparity[:, :, :16] = 0.0
    (error,) = pack.nodes.render.BokehMeAnalyticErrorMap().compute(disparity, 10.0, 0.0, -1.0)
    assert error.shape == (1, 24, 32) and 0 <= error.min() and error.max() <= 1 and error.max() > 0.5
    # focus on the near side: the scatter renderer's map marks the edge, the layered renderer's (default) does not
    (scatter,) = pack.nodes.render.BokehMeAnalyticErrorMap().compute(disparity, 10.0, 1.0, -1.0, classical_mode="exact")
    (layered,) = pack.nodes.render.BokehMeAnalyticErrorMap().compute(disparity, 10.0, 1.0, -1.0)
    assert float(scatter.max()) > 0.5 and float(layered.max()) == 0.0
    fuse = pack.nodes.render.BokehMeFuse()
    a, b = torch.zeros(1, 24, 32, 3), torch.ones(1, 24, 32, 3)
    (out,) = fuse.fuse(a, b, error, False)
    assert torch.allclose(out[..., 0], error)
    with pytest.raises(ValueError, match="enable 'resize_error_map'"):
        fuse.fuse(a, b, error[:, :12], False)
    (resized,) = fuse.fuse(a, b, error[:, :, :16].repeat(1, 1, 2), True)
    assert resized.shape == (1, 24, 32, 3)
    with pytest.raises(ValueError, match="same batch and size"):
        fuse.fuse(a, b[:, :12], error, False)


def test_node_metadata(pack):
    """Every node of the pack: category, description, tooltips on all inputs and outputs."""
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY.startswith("image/bokeh"), node_id
        assert getattr(cls, "DESCRIPTION", ""), node_id
        assert node_id in pack.NODE_DISPLAY_NAME_MAPPINGS
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, value in spec.get(section, {}).items():
                assert len(value) == 2 and value[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES), node_id
        assert hasattr(cls, cls.FUNCTION), node_id


# --- what the user sees: few widgets by default, sub-categories -------------------------------------------------

def _shown_widgets(cls) -> list:
    """The widgets ComfyUI's frontend shows before the user asks for advanced inputs."""
    from workflow_runner import all_inputs, is_widget_input

    return [name for name, (_, kind, options) in all_inputs(cls.INPUT_TYPES()).items()
            if is_widget_input(kind, options) and not options.get("advanced")]


def test_main_node_shows_few_widgets(pack):
    shown = _shown_widgets(pack.NODE_CLASS_MAPPINGS["BokehMe"])
    assert len(shown) <= 9, shown
    assert shown == ["K", "focus", "gamma", "aperture", "recover_highlights"]
    # one highlight control in view: the official boost is an advanced alternative
    classical = _shown_widgets(pack.NODE_CLASS_MAPPINGS["BokehMeClassicalRender"])
    assert classical == ["K", "focus", "gamma", "aperture", "mode", "recover_highlights"]


def test_polygon_details_are_advanced_everywhere(pack):
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        inputs = {**cls.INPUT_TYPES().get("required", {}), **cls.INPUT_TYPES().get("optional", {})}
        if "aperture" in inputs and "blades" in inputs and node_id != "BokehMeApertureShape":
            for name in ("blades", "rotation_deg", "anamorphic"):
                assert inputs[name][1].get("advanced") is True, (node_id, name)


def test_nodes_sit_in_sub_categories(pack):
    categories = {node_id: cls.CATEGORY for node_id, cls in pack.NODE_CLASS_MAPPINGS.items()}
    assert categories["BokehMe"] == "image/bokeh"
    for node_id in ("BokehMeClassicalRender", "BokehMeARNet", "BokehMeIUNet", "BokehMeAnalyticErrorMap", "BokehMeFuse"):
        assert categories[node_id] == "image/bokeh/stages", node_id
    for node_id in ("BokehMeDepthModelLoader", "BokehMeEstimateDisparity", "BokehMeDepthToDisparity",
                    "BokehMeLoadDisparityFile"):
        assert categories[node_id] == "image/bokeh/depth", node_id
    assert set(categories.values()) == {"image/bokeh", "image/bokeh/stages", "image/bokeh/depth"}


def test_no_measured_numbers_in_tooltips(pack):
    """Measured quality and speed live in bench/README.md; tooltips and descriptions stay true as code changes."""
    import re

    pattern = re.compile(r"\d\s*dB|\d+(\.\d+)?x (faster|slower)|\d+-\d+x\b")
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        texts = [getattr(cls, "DESCRIPTION", "")]
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            texts += [value[1].get("tooltip", "") for value in spec.get(section, {}).values()]
        for text in texts:
            assert not pattern.search(text), (node_id, pattern.search(text).group(0), text)

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


# --- highlight recovery of the default pipeline -------------------------------------------------------------
def _scene_with_lights():
    g = torch.Generator().manual_seed(7)
    image = torch.rand(1, 3, 12, 16, generator=g) * 0.9
    image[0, :, 2, 3] = 1.0  # a white clipped light
    image[0, :, 8, 12] = torch.tensor([1.0, 0.5, 0.2])  # an orange one: only red clipped
    image[0, :, 5, 5] = 254 / 255  # bright, not clipped
    return image


def test_recover_highlights_lifts_clipped_blurred_lights_in_linear_light():
    from bokehme_core.defocus import RECOVER_GAIN, _srgb_to_linear, recover_highlights

    image = _scene_with_lights()
    out = recover_highlights(image, torch.full((1, 1, 12, 16), 5.0), gain=RECOVER_GAIN)  # the fixed gain
    lin_in, lin_out = _srgb_to_linear(image), _srgb_to_linear(out)
    for y, x in ((2, 3), (8, 12)):
        torch.testing.assert_close(lin_out[0, :, y, x], lin_in[0, :, y, x] * RECOVER_GAIN, rtol=1e-5, atol=1e-6)
    changed = (out != image).any(dim=1)
    assert int(changed.sum()) == 2  # everything else, 254/255 included, keeps its exact value


def test_recover_highlights_leaves_sharp_pixels_and_unclipped_images_alone():
    from bokehme_core.defocus import recover_highlights

    image = _scene_with_lights()
    defocus = torch.full((1, 1, 12, 16), 5.0)
    defocus[..., 2, 3] = 0.3  # the white light is in focus
    out = recover_highlights(image, defocus)
    assert torch.equal(out[0, :, 2, 3], image[0, :, 2, 3])
    assert not torch.equal(out[0, :, 8, 12], image[0, :, 8, 12])
    unclipped = image.clamp(max=254 / 255)
    assert recover_highlights(unclipped, defocus) is unclipped
    assert recover_highlights(image, torch.zeros(1, 1, 12, 16)) is image  # K = 0: nothing is blurred


def test_render_inputs_recover_and_lens_lift():
    from bokehme_core import Lens, render_inputs
    from bokehme_core.defocus import recover_highlights

    image = _scene_with_lights()
    disparity = torch.rand(1, 1, 12, 16, generator=torch.Generator().manual_seed(8))
    plain, defocus = render_inputs(image, disparity, 20.0, 0.5)
    assert plain is image  # off by default in the library's low-level call
    recovered, _ = render_inputs(image, disparity, 20.0, 0.5, recover=True)
    torch.testing.assert_close(recovered, recover_highlights(image, defocus))
    lens = Lens(highlight_gain=4.0)
    with_lens, _ = render_inputs(image, disparity, 20.0, 0.5, recover=True, **lens.pre_render)
    lens_only, _ = render_inputs(image, disparity, 20.0, 0.5, **lens.pre_render)
    torch.testing.assert_close(with_lens, lens_only)  # the lens's own lift replaces the recovery


def test_recover_highlights_bad_inputs():
    from bokehme_core.defocus import recover_highlights

    with pytest.raises(ValueError, match="defocus_px"):
        recover_highlights(torch.ones(1, 3, 4, 4), torch.zeros(1, 1, 5, 4))
    with pytest.raises(ValueError):
        recover_highlights(torch.ones(1, 4, 4, 4), torch.zeros(1, 1, 4, 4))
    for bad in ("bright", 0.5, 51.0, float("nan")):
        with pytest.raises(ValueError, match="gain"):
            recover_highlights(torch.ones(1, 3, 4, 4), torch.zeros(1, 1, 4, 4), gain=bad)
    with pytest.raises(TypeError, match="gain"):
        recover_highlights(torch.ones(1, 3, 4, 4), torch.zeros(1, 1, 4, 4), gain=[2.0])


def _light_and_panel():
    """A photo (1, 3, 96, 128) with a small hard-edged light (clipped, 8x white) and a large surface just above
    white (1.1x, graded rim), both orange-ish, 8-bit; and the (y, x) of a pixel inside each."""
    from helpers import clipped_photo

    image, light, panel = clipped_photo(light_gain=8.0, panel_gain=1.1)
    tint = torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)
    from bokehme_core.defocus import _linear_to_srgb, _srgb_to_linear

    image = (_linear_to_srgb(_srgb_to_linear(image) * tint) * 255).round() / 255
    return image, light, panel


def test_recover_highlights_auto_lifts_a_light_more_than_a_surface_just_above_white():
    from bokehme_core.defocus import RECOVER_GAIN, _srgb_to_linear, recover_highlights

    image, light, panel = _light_and_panel()
    defocus = torch.full((1, 1, 96, 128), 6.0)
    auto = recover_highlights(image, defocus)  # the default
    fixed = recover_highlights(image, defocus, gain=RECOVER_GAIN)
    ratio = _srgb_to_linear(auto) / _srgb_to_linear(image).clamp(min=1e-6)
    light_gain, panel_gain = float(ratio[0, 0, light[0], light[1]]), float(ratio[0, 0, panel[0], panel[1]])
    assert panel_gain < 1.5 < 2.0 < light_gain <= RECOVER_GAIN + 1e-4
    assert bool((auto <= fixed + 1e-6).all())  # never lifted beyond the fixed gain
    # colour ratios kept in linear light (the red channel is the clipped one)
    for y, x in (light, panel):
        torch.testing.assert_close(ratio[0, :, y, x], ratio[0, :1, y, x].expand(3), rtol=1e-4, atol=1e-5)


def test_recover_highlights_auto_keeps_unclipped_sharp_and_clip_free_images():
    from bokehme_core.defocus import recover_highlights

    image, light, panel = _light_and_panel()
    defocus = torch.full((1, 1, 96, 128), 6.0)
    out = recover_highlights(image, defocus)
    clipped = image.amax(dim=1, keepdim=True) >= 254.5 / 255
    assert torch.equal(out[~clipped.expand_as(image)], image[~clipped.expand_as(image)])  # bit-unchanged
    assert recover_highlights(image, torch.zeros(1, 1, 96, 128)) is image  # K = 0
    sharp = defocus.clone()
    sharp[..., 40:81, 50:111] = 0.2  # the surface is in focus
    out = recover_highlights(image, sharp)
    assert torch.equal(out[..., 40:81, 50:111], image[..., 40:81, 50:111])
    assert not torch.equal(out[..., light[0], light[1]], image[..., light[0], light[1]])
    unclipped = image.clamp(max=254 / 255)
    assert recover_highlights(unclipped, defocus) is unclipped


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_recover_highlights_auto_on_cuda_matches_cpu():
    from bokehme_core.defocus import recover_highlights

    image, _, _ = _light_and_panel()
    defocus = torch.full((1, 1, 96, 128), 6.0)
    on_gpu = recover_highlights(image.cuda(), defocus.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), recover_highlights(image, defocus), rtol=1e-5, atol=1e-6)


def test_recover_highlights_auto_batch_and_non_contiguous_inputs():
    from bokehme_core.defocus import recover_highlights

    image, _, _ = _light_and_panel()
    other = image.flip(-1).clone()
    defocus = torch.full((1, 1, 96, 128), 6.0)
    batch = recover_highlights(torch.cat([image, other]), defocus)  # one defocus map for the batch
    torch.testing.assert_close(batch[:1], recover_highlights(image, defocus), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(batch[1:], recover_highlights(other, defocus), rtol=1e-6, atol=1e-6)
    bhwc = image.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # a ComfyUI layout, seen as BCHW
    assert not bhwc.is_contiguous()
    assert torch.equal(recover_highlights(bhwc, defocus), recover_highlights(image, defocus))

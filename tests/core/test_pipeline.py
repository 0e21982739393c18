"""Full BokehMe pipeline: parity with the official fixture stage by stage and end to end, tiling, batches,
bad inputs."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from bokehme_core import pipeline as P
from bokehme_core.defocus import signed_defocus
from bokehme_core.neural.arnet import ARNet
from bokehme_core.weights import load_iunet, load_network

NET_ATOL = 1e-5
FUSED_ATOL = 5e-5


@pytest.fixture(scope="module")
def nets(seed0_arnet_state, official_iunet_pth):
    return load_network(ARNet, dict(seed0_arnet_state)), load_iunet(official_iunet_pth)


@pytest.fixture(scope="module")
def fx(official_fixture):
    """Fixture arrays as tensors (scalars as python numbers)."""
    out = {}
    for k, v in official_fixture.items():
        if v.dtype.kind in "fiu" and v.ndim == 0:
            out[k] = v.item()
        elif v.dtype.kind == "f":
            out[k] = torch.from_numpy(v.copy())
        else:
            out[k] = v
    return out


@pytest.fixture(scope="module")
def fixture_inputs(fx):
    """The pipeline inputs of the fixture: image (1,3,H,W), disparity (1,1,H,W), K, focus, gamma."""
    disparity = fx["disp"][None, None]
    return fx["image"], disparity, 45.0, 90.0 / 255.0, 4.0


def _close(actual, expected, atol):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


# ---- stage by stage ------------------------------------------------------------------------------------
def test_signed_defocus_matches_fixture(fx, fixture_inputs):
    _, disparity, K, focus, _ = fixture_inputs
    _close(signed_defocus(disparity, K, focus), fx["classical_in_defocus_px"], 1e-5)


def test_arnet_stage(fx, nets):
    with torch.inference_mode():
        bokeh, error, scale = P.arnet_stage(nets[0], fx["image"], fx["defocus"] * 10, 4.0)
    assert scale == pytest.approx(fx["adapt_scale"], abs=1e-6)
    assert bokeh.shape == fx["arnet_out_bokeh_clamped"].shape == (1, 3, 109, 87)
    assert P.lowres_size(320, 256, scale) == (109, 87)
    _close(bokeh, fx["arnet_out_bokeh_clamped"], NET_ATOL)
    _close(error, fx["error_map"], NET_ATOL)


def test_iunet_stage(fx, nets):
    record = {}
    with torch.inference_mode():
        bokeh = P.iunet_stage(
            nets[1], fx["image"], fx["defocus"] * 10, fx["classical_out_defocus_dilate_px"],
            fx["arnet_out_bokeh_clamped"], fx["adapt_scale"], 4.0, record=record,
        )
    assert len(record["bokeh"]) == fx["n_loop"] + 1 == P.num_iunet_passes(fx["adapt_scale"])
    assert record["bokeh"][0].shape == fx["iter0_bokeh_neural"].shape == (1, 3, 219, 175)
    _close(record["bokeh"][0], fx["iter0_bokeh_neural"], NET_ATOL)
    _close(record["masks"][0], fx["iter0_mask"], NET_ATOL)
    _close(record["masks"][1], fx["final_mask"], NET_ATOL)
    _close(bokeh, fx["bokeh_neural_unclamped"], NET_ATOL)


def test_blend_mask_matches_fixture(fx):
    _close(P.blend_mask(fx["iter0_defocus_dilate_re"]), fx["iter0_mask"], 1e-6)
    _close(P.blend_mask(fx["defocus_dilate"]), fx["final_mask"], 1e-6)


def test_neural_chain_and_fusion(fx, nets):
    """Everything after the classical renderer, fed with the fixture's classical outputs."""
    result = P.render_neural(
        fx["image"], fx["defocus"] * 10, fx["classical_out_defocus_dilate_px"], gamma=4.0, arnet=nets[0],
        iunet=nets[1], return_intermediates=True,
    )
    inter = result.intermediates
    assert inter.adapt_scale == [pytest.approx(fx["adapt_scale"], abs=1e-6)]
    _close(inter.arnet_bokeh[0], fx["arnet_out_bokeh_clamped"], NET_ATOL)
    _close(result.error_map, fx["error_map"], NET_ATOL)
    _close(result.bokeh, fx["bokeh_neural_unclamped"], NET_ATOL)
    fused = fx["bokeh_classical"] * (1 - result.error_map) + result.bokeh * result.error_map
    _close(fused, fx["bokeh_pred_unclamped"], FUSED_ATOL)
    _close(fused.clamp(0, 1), fx["bokeh_pred"], FUSED_ATOL)


def test_loop_counts_and_sizes_demo_21():
    """docs/official-behaviour.md, section 8.5: inputs/21 at K=60: s = 3.882353, ARNet 347x278, IUNet 695x556."""
    scale = max(60 * (1 - 90 / 255) / 10, 1)
    assert scale == pytest.approx(3.882353, abs=1e-6)
    assert P.lowres_size(1350, 1080, scale) == (347, 278)
    assert P.num_iunet_passes(scale) == 2
    ratio = 2 / scale
    assert (int(ratio * 1350), int(ratio * 1080)) == (695, 556)
    assert P.num_iunet_passes(1.0) == 1 and P.num_iunet_passes(4.0) == 3


# ---- the blend-mask blur -------------------------------------------------------------------------------
def _dense_blur(x, radius):
    r = int(round(radius))
    sigma = 0.3 * (r - 1) + 0.8
    g = torch.arange(-r, r + 1, dtype=torch.float32)
    kernel = torch.exp(-(g[:, None] ** 2 + g[None, :] ** 2) / 2 / sigma**2)
    kernel = (kernel / kernel.sum())[None, None]
    return F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), kernel)


@pytest.mark.parametrize("radius", [1.0, 2.0, 3.4, 4.0])
def test_gaussian_blur_equals_dense_kernel(radius):
    x = (torch.rand(1, 1, 17, 23, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    _close(P.gaussian_blur(x, radius), _dense_blur(x, radius), 1e-6)


def test_gaussian_blur_bankers_rounding():
    x = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    assert torch.equal(P.gaussian_blur(x, 2.5), P.gaussian_blur(x, 2.0))  # round half to even
    assert torch.equal(P.gaussian_blur(x, 3.5), P.gaussian_blur(x, 4.0))
    assert torch.equal(P.gaussian_blur(x, 0.5), x)  # rounds to 0: identity
    assert not torch.equal(P.gaussian_blur(x, 1.5), x)


def test_gaussian_blur_constant_stays_constant():
    x = torch.full((1, 1, 9, 7), 0.25)
    _close(P.gaussian_blur(x, 3.0), x, 1e-7)


# ---- tiling, batches -----------------------------------------------------------------------------------
def test_tiled_equals_untiled(fx, nets):
    crop = (..., slice(64, 160), slice(0, 72))  # 96x72 px, s = 2.91: ARNet at 32x24, IUNet at 65x49 and 96x72
    args = (fx["image"][crop], fx["defocus"][crop] * 10, fx["classical_out_defocus_dilate_px"][crop])
    whole = P.render_neural(*args, gamma=4.0, arnet=nets[0], iunet=nets[1], tile_size=4096)
    tiled = P.render_neural(*args, gamma=4.0, arnet=nets[0], iunet=nets[1], tile_size=32)
    _close(tiled.bokeh, whole.bokeh, 1e-4)
    _close(tiled.error_map, whole.error_map, 1e-4)


def test_neural_batch_equals_single_images(fx, nets):
    image = fx["image"][..., :64, :48]
    defocus = fx["defocus"][..., :64, :48] * 10
    image2 = torch.flip(image, dims=[-1])
    defocus2 = defocus * 0.5  # another adaptive scale
    batch = P.render_neural(
        torch.cat([image, image2]), torch.cat([defocus, defocus2]), torch.cat([defocus, defocus2]),
        gamma=3.0, arnet=nets[0], iunet=nets[1], return_intermediates=True,
    )
    single = P.render_neural(image2, defocus2, defocus2, gamma=3.0, arnet=nets[0], iunet=nets[1])
    _close(batch.bokeh[1:], single.bokeh, 1e-6)
    _close(batch.error_map[1:], single.error_map, 1e-6)
    assert batch.intermediates.adapt_scale[0] > batch.intermediates.adapt_scale[1]


# ---- errors --------------------------------------------------------------------------------------------
def test_render_neural_bad_inputs(fx, nets):
    img, dfc = fx["image"], fx["defocus"] * 10
    with pytest.raises(ValueError, match=r"gamma must be in \[1, 5\], got 7"):
        P.render_neural(img, dfc, dfc, gamma=7, arnet=nets[0], iunet=nets[1])
    with pytest.raises(TypeError, match="arnet must be a bokehme_core.ARNet, got IUNet"):
        P.render_neural(img, dfc, dfc, gamma=4, arnet=nets[1], iunet=nets[1])
    with pytest.raises(ValueError, match="dilated_defocus_px must be"):
        P.render_neural(img, dfc, dfc[..., :10], gamma=4, arnet=nets[0], iunet=nets[1])


def test_too_small_for_blur(nets):
    image, defocus = torch.rand(1, 3, 8, 8), torch.full((1, 1, 8, 8), 60.0)
    with pytest.raises(ValueError, match="too small for a blur radius of 60.0 px.*use a smaller K"):
        P.render_neural(image, defocus, defocus, gamma=4, arnet=nets[0], iunet=nets[1])


def bokehme_core_paths():
    import bokehme_core.paths

    return bokehme_core.paths


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"gamma": 0.5}, ValueError, r"gamma must be in \[1, 5\], got 0.5"),
        ({"error_map": "guess"}, ValueError, "error_map must be one of 'predicted', 'analytic', got 'guess'"),
        ({"classical_mode": "slow"}, ValueError, "classical_mode must be one of 'exact', 'fast', 'layered', got 'slow'"),
        ({"tile_size": 4}, ValueError, "tile_size must be None or an int >= 16 px, got 4"),
        ({"K": -1}, ValueError, r"K must be in \[0, 2000\], got -1"),
        ({"focus": 1.5}, ValueError, r"focus must be a disparity in \[0, 1\]"),
    ],
)
def test_render_bokehme_bad_arguments(nets, kwargs, error, match):
    args = {"K": 10.0, "focus": 0.5, "arnet": nets[0], "iunet": nets[1]}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        P.render_bokehme(torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8), **args)


def test_render_bokehme_bad_disparity(nets):
    with pytest.raises(ValueError, match="disparity must be"):
        P.render_bokehme(torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 9), K=5, focus=0.5, arnet=nets[0], iunet=nets[1])
    with pytest.raises(ValueError, match="disparity holds 1 NaN/inf"):
        d = torch.rand(1, 1, 8, 8)
        d[0, 0, 0, 0] = float("nan")
        P.render_bokehme(torch.rand(1, 3, 8, 8), d, K=5, focus=0.5, arnet=nets[0], iunet=nets[1])


# ---- the whole chain (exact classical renderer included) -----------------------------------------------
@pytest.fixture(scope="module")
def full_result(fixture_inputs, nets):
    image, disparity, K, focus, gamma = fixture_inputs
    calls = []
    result = P.render_bokehme(
        image, disparity, K=K, focus=focus, gamma=gamma, arnet=nets[0], iunet=nets[1], classical_mode="exact",
        return_intermediates=True, progress=lambda d, t: calls.append((d, t)),
    )
    return result, calls


def test_whole_chain_matches_fixture(full_result, fx):
    result, _ = full_result
    inter = result.intermediates
    _close(inter.dilated_defocus, fx["classical_out_defocus_dilate_px"], 0)
    _close(result.classical, fx["bokeh_classical_clamped"], FUSED_ATOL)
    assert inter.adapt_scale == [pytest.approx(fx["adapt_scale"], abs=1e-6)]
    assert inter.arnet_bokeh[0].shape == (1, 3, 109, 87)
    assert [b.shape[-2:] for b in inter.iteration_bokeh[0]] == [(219, 175), (320, 256)]
    _close(inter.arnet_bokeh[0], fx["arnet_out_bokeh_clamped"], NET_ATOL)
    _close(inter.iteration_bokeh[0][0], fx["iter0_bokeh_neural"], NET_ATOL)
    _close(inter.iteration_masks[0][0], fx["iter0_mask"], NET_ATOL)
    _close(inter.iteration_masks[0][1], fx["final_mask"], NET_ATOL)
    _close(result.error_map, fx["error_map"], NET_ATOL)
    _close(result.neural, fx["bokeh_neural"], NET_ATOL)
    _close(result.bokeh, fx["bokeh_pred"], FUSED_ATOL)


def test_progress_reaches_total(full_result):
    _, calls = full_result
    assert calls[-1][0] == calls[-1][1] and calls[-1][1] > 2
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_batch_broadcast_disparity_per_image_focus(fixture_inputs, nets):
    image, disparity, K, _, gamma = fixture_inputs
    crop = (..., slice(0, 48), slice(0, 40))
    image, disparity = image[crop], disparity[crop]
    images = torch.cat([image, image.flip(-1)])
    focus = torch.tensor([0.2, 0.8])
    kwargs = {"K": 20.0, "gamma": gamma, "arnet": nets[0], "iunet": nets[1], "classical_mode": "exact"}
    batch = P.render_bokehme(images, disparity, focus=focus, **kwargs)
    second = P.render_bokehme(images[1:], disparity, focus=0.8, **kwargs)
    assert batch.bokeh.shape == (2, 3, 48, 40) and batch.error_map.shape == (2, 1, 48, 40)
    _close(batch.bokeh[1:], second.bokeh, 1e-5)
    _close(batch.error_map[1:], second.error_map, 1e-6)


def test_analytic_error_map_option(fixture_inputs, nets):
    from bokehme_core.error_map import analytic_error_map

    image, disparity, _, focus, gamma = fixture_inputs
    crop = (..., slice(0, 48), slice(0, 40))
    image, disparity = image[crop], disparity[crop]
    for mode, renderer in (("exact", "scatter"), ("layered", "layered")):
        result = P.render_bokehme(image, disparity, K=20.0, focus=focus, arnet=nets[0], iunet=nets[1],
                                  error_map="analytic", classical_mode=mode)
        expected = analytic_error_map(disparity, 20.0, focus, renderer=renderer)
        _close(result.error_map, expected, 1e-6)
        _close(result.bokeh, (result.classical * (1 - expected) + result.neural * expected).clamp(0, 1), 1e-5)


def _portrait_scene(seed: int = 11):
    """A textured image with clipped lights; disparity: a near square (0.8) over a far background (0.1)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, 40, 48, generator=g) * 0.8
    image[..., 5, 5] = 1.0
    image[..., 30, 40] = 1.0
    disparity = torch.full((1, 1, 40, 48), 0.1)
    disparity[..., 12:28, 14:34] = 0.8
    return image, disparity


@pytest.mark.parametrize("focus", [0.8, 0.1])
def test_default_fusion_uses_arnet_map_restricted_to_the_layered_renderer(nets, focus):
    from bokehme_core.error_map import LAYERED_TRUST, defocus_error_map

    image, disparity = _portrait_scene()
    kwargs = dict(K=12.0, focus=focus, gamma=2.2, arnet=nets[0], iunet=nets[1], sparse=False)
    result = P.render_bokehme(image, disparity, **kwargs)  # layered, predicted (the defaults)
    exact = P.render_bokehme(image, disparity, classical_mode="exact", **kwargs)
    gate = LAYERED_TRUST * defocus_error_map(signed_defocus(disparity, 12.0, focus), renderer="layered")
    # ARNet's map is the same whatever the classical mode (same inputs); the fusion restricts it for layered
    # and trusts it there only by LAYERED_TRUST
    _close(result.error_map, exact.error_map * gate, 1e-6)
    _close(result.bokeh, (result.classical * (1 - result.error_map) + result.neural * result.error_map).clamp(0, 1),
           1e-5)
    if focus == 0.8:  # the portrait case: the layered renderer is trusted everywhere
        assert float(result.error_map.max()) == 0.0 and float(exact.error_map.max()) > 0.01
        _close(result.bokeh, result.classical, 0)
    else:  # a blurred foreground: the neural result is used along its edge
        assert float(result.error_map.max()) > 0.01


def test_sparse_equals_dense_with_the_layered_gate(nets):
    image, disparity = _portrait_scene()
    kwargs = dict(K=12.0, focus=0.1, gamma=2.2, arnet=nets[0], iunet=nets[1])
    sparse = P.render_bokehme(image, disparity, **kwargs)
    dense = P.render_bokehme(image, disparity, sparse=False, **kwargs)
    _close(sparse.bokeh, dense.bokeh, 1e-4)
    _close(sparse.error_map, dense.error_map, 0)


def test_highlight_recovery_is_the_default_and_can_be_turned_off(nets):
    from bokehme_core.defocus import recover_highlights

    image, disparity = _portrait_scene()
    kwargs = dict(K=12.0, focus=0.8, gamma=2.2, arnet=nets[0], iunet=nets[1], sparse=False)
    default = P.render_bokehme(image, disparity, **kwargs)
    off = P.render_bokehme(image, disparity, recover_highlights=False, **kwargs)
    lifted = recover_highlights(image, signed_defocus(disparity, 12.0, 0.8))
    manual = P.render_bokehme(lifted, disparity, recover_highlights=False, **kwargs)
    _close(default.bokeh, manual.bokeh, 0)
    # the lights are in the blurred background: brighter bokeh there, the sharp subject unchanged
    assert float(default.bokeh.sum()) > float(off.bokeh.sum()) + 1.0
    _close(default.bokeh[..., 14:26, 16:32], off.bokeh[..., 14:26, 16:32], 1e-6)
    unclipped = image.clamp(max=0.99)
    _close(P.render_bokehme(unclipped, disparity, **kwargs).bokeh,
           P.render_bokehme(unclipped, disparity, recover_highlights=False, **kwargs).bokeh, 0)


def test_zero_blur_with_analytic_map_is_identity(nets):
    """K = 0: nothing is blurred, the analytic error map is 0, so the output is the classical one: the input
    up to the official kernel's known leak to the 4 nearest neighbours (relative weight
    (0.5 - 0.5 tanh(4)) / 1 each, 0.27 % in all). gamma = 1: a larger gamma amplifies the leak in dark pixels."""
    image = torch.rand(1, 3, 16, 12, generator=torch.Generator().manual_seed(5))
    disparity = torch.rand(1, 1, 16, 12, generator=torch.Generator().manual_seed(6))
    result = P.render_bokehme(
        image, disparity, K=0.0, focus=0.5, gamma=1.0, arnet=nets[0], iunet=nets[1], error_map="analytic"
    )
    assert float(result.error_map.abs().max()) == 0.0
    _close(result.bokeh, image, 3e-3)


# ---- devices -------------------------------------------------------------------------------------------
def test_model_on_other_device_refused(fx, nets):
    meta_arnet = ARNet().to("meta")
    dfc = fx["defocus"] * 10
    with pytest.raises(ValueError, match=r"arnet is on meta but the image is on cpu: move it first \(arnet.to"):
        P.render_neural(fx["image"], dfc, dfc, gamma=4, arnet=meta_arnet, iunet=nets[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(fixture_inputs, nets):
    import copy

    image, disparity, K, focus, gamma = fixture_inputs
    cpu = P.render_bokehme(image, disparity, K=K, focus=focus, arnet=nets[0], iunet=nets[1], classical_mode="fast")
    arnet, iunet = copy.deepcopy(nets[0]).cuda(), copy.deepcopy(nets[1]).cuda()
    gpu = P.render_bokehme(image.cuda(), disparity.cuda(), K=K, focus=focus, arnet=arnet, iunet=iunet,
                           classical_mode="fast")
    assert gpu.bokeh.device.type == "cuda" and gpu.error_map.device.type == "cuda"
    # cuDNN may use TF32 convolutions (10-bit mantissa): differences of a few 1e-3 are expected
    torch.testing.assert_close(gpu.bokeh.cpu(), cpu.bokeh, atol=5e-3, rtol=0)


def test_shipped_bundled_weights_render_sensibly():
    """The shipped weights on a held-out synthetic scene with thin-lens ground truth (seed of
    bench/eval_quality.py's synthetic set, never trained on): finite, in [0, 1], the neural result close to
    the ground truth and the fused result not worse than the classical one (bundled weights of 2026-11-26:
    neural 30.4 dB, fused 32.7 dB, classical 31.9 dB; seeded random weights: neural 7.3 dB, fused 13.5 dB);
    K = 0 returns the image (51.0 dB; 37.0 dB before the networks saw K = 0 samples)."""
    import math

    from bokehme_core.synth.lens import render_layers
    from bokehme_core.synth.scene import make_scene

    def psnr(a, b):
        return 10 * math.log10(1.0 / float(((a.clamp(0, 1) - b) ** 2).mean()))

    scene = make_scene(96, 128, 95_000_000, objects=(3, 6), highlights=(10, 20))
    gt = render_layers(scene.layers, 8.0, 0.5, 2.2).clamp(0, 1)
    # the weights were trained against the exact classical renderer: check them there
    result = P.render_bokehme(scene.image, scene.disparity, K=8.0, focus=0.5, gamma=2.2, classical_mode="exact")
    for name in ("bokeh", "neural", "classical"):
        tensor = getattr(result, name)
        assert torch.isfinite(tensor).all(), name
    assert 0 <= float(result.bokeh.min()) and float(result.bokeh.max()) <= 1
    assert 0 <= float(result.error_map.min()) and float(result.error_map.max()) <= 1
    p_classical, p_hybrid, p_neural = psnr(result.classical, gt), psnr(result.bokeh, gt), psnr(result.neural, gt)
    assert p_neural > 28.0, (p_neural, p_classical)
    assert p_hybrid > p_classical - 0.25, (p_hybrid, p_classical)
    # the default pipeline (layered classical) is better than the official renderer on the same scene
    default = P.render_bokehme(scene.image, scene.disparity, K=8.0, focus=0.5, gamma=2.2)
    assert psnr(default.bokeh, gt) > p_classical + 0.5, (psnr(default.bokeh, gt), p_classical)
    still = P.render_bokehme(scene.image, scene.disparity, K=0.0, focus=0.5, gamma=2.2)
    assert psnr(still.bokeh, scene.image.clamp(0, 1)) > 45

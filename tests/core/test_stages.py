"""bokehme_core.neural.stages: sparse IUNet evaluation (== dense where used), out-of-memory retries."""

from __future__ import annotations

import pytest
import torch

import bokehme_core as bm
from bokehme_core.neural import stages
from bokehme_core.neural.arnet import ARNet
from bokehme_core.neural.iunet import IUNet


def _scene(seed: int, height: int = 96, width: int = 136):
    """A random textured image over a slanted background with a near rectangle and a thin bar."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, height, width, generator=gen)
    image = torch.nn.functional.avg_pool2d(image, 3, 1, 1)
    y = torch.linspace(0, 1, height).view(1, 1, -1, 1)
    disparity = (0.15 + 0.3 * y).expand(1, 1, height, width).clone()
    disparity[..., height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] = 0.85
    disparity[..., :, width // 8 : width // 8 + 2] = 0.6
    return image, disparity


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return ARNet(16, 2).eval(), IUNet(16, 2).eval()


@pytest.mark.parametrize("K, focus, mode, error_map", [
    (12.0, 0.5, "exact", "predicted"),
    (30.0, (0.2, 0.85), "fast", "predicted"),
    (45.0, (0.85, 0.3), "fast", "analytic"),
    (70.0, 0.15, "exact", "analytic"),
])
def test_sparse_equals_dense(nets, K, focus, mode, error_map):
    """Random scenes, several K and focus, a batch of 2: the fused result of the sparse evaluation equals the
    dense (official) one within 1e-4 everywhere, and the neural result is exact where the fusion uses it."""
    images, disparities = zip(*(_scene(seed) for seed in (1, 2)))
    image, disparity = torch.cat(images), torch.cat(disparities)
    kwargs = dict(K=K, focus=focus, gamma=2.2, arnet=nets[0], iunet=nets[1], classical_mode=mode, error_map=error_map)
    dense = bm.render_bokehme(image, disparity, sparse=False, **kwargs)
    sparse = bm.render_bokehme(image, disparity, sparse=True, **kwargs)
    assert float((dense.bokeh - sparse.bokeh).abs().max()) <= 1e-4
    used = (dense.error_map > stages.SPARSE_ERROR_THRESHOLD).expand_as(dense.neural)
    assert float((dense.neural - sparse.neural)[used].abs().max()) <= 1e-5
    assert torch.equal(dense.error_map, sparse.error_map)


def test_sparse_skips_work_and_stays_exact_where_needed(nets):
    """With few needed pixels most IUNet tiles are skipped, yet those pixels equal the dense result."""
    image, disparity = _scene(3, 320, 480)
    defocus = bm.signed_defocus(disparity, 60.0, 0.85)
    dilated = bm.render_classical(image, defocus, mode="fast").dilated_defocus
    lowres, _, scale = stages.arnet_stage(nets[0], image, defocus, 3.0)
    needed = torch.zeros(1, 1, 320, 480, dtype=torch.bool)
    needed[..., 120:150, 200:240] = True  # inside the sharp rectangle
    calls = []
    _body_pixels(nets[1], calls)
    try:
        with torch.inference_mode():
            dense = stages.iunet_stage(nets[1], image, defocus, dilated, lowres, scale, 3.0)
            dense_work = sum(calls)
            calls.clear()
            sparse = stages.iunet_stage(nets[1], image, defocus, dilated, lowres, scale, 3.0, tile_size=128,
                                        needed=needed)
            sparse_work = sum(calls)
    finally:
        _unwrap(nets[1])
    assert stages.num_iunet_passes(scale) >= 2
    assert 0 < sparse_work < 0.5 * dense_work
    assert float((dense - sparse)[needed.expand_as(dense)].abs().max()) <= 1e-6


def test_out_of_memory_retries_with_smaller_tiles(nets, caplog):
    """A simulated OOM above 256 px tiles: the pass retries with halved tiles and gives the untiled result."""
    image, disparity = _scene(4, 300, 420)
    defocus = bm.signed_defocus(disparity, 10.0, 0.5)
    with torch.inference_mode():
        expected, _, _ = stages.arnet_stage(nets[0], image, defocus, 2.2)
    real_body = nets[0].body
    tiles = []

    def body(x):
        tiles.append(max(x.shape[-2:]))
        if max(x.shape[-2:]) > 140:  # half-resolution tile + halo of a 256 px tile is 128 + 2 * 6
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_body(x)

    nets[0].body = body
    try:
        with torch.inference_mode(), caplog.at_level("WARNING"):
            result, _, _ = stages.arnet_stage(nets[0], image, defocus, 2.2, tile_size=1024)
    finally:
        del nets[0].body
    assert torch.allclose(result, expected, atol=1e-5)
    assert "retrying with 512 px tiles" in caplog.text and "retrying with 256 px tiles" in caplog.text


def test_out_of_memory_at_the_floor_names_the_sizes(nets):
    image, disparity = _scene(5)
    defocus = bm.signed_defocus(disparity, 10.0, 0.5)

    def body(x):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 bytes")

    nets[1].body = body
    try:
        lowres, _, scale = stages.arnet_stage(nets[0], image, defocus, 2.2)
        with pytest.raises(stages.NetworkOutOfMemoryError,
                           match=r"IUNet ran out of memory on a 136x96 px input even with 64 px tiles"):
            stages.iunet_stage(nets[1], image, defocus, None, lowres, scale, 2.2, tile_size=256)
    finally:
        del nets[1].body


def test_other_runtime_errors_are_not_retried(nets):
    image, disparity = _scene(6)
    defocus = bm.signed_defocus(disparity, 10.0, 0.5)
    calls = []

    def body(x):
        calls.append(1)
        raise RuntimeError("some other failure")

    nets[0].body = body
    try:
        with pytest.raises(RuntimeError, match="some other failure"):
            stages.arnet_stage(nets[0], image, defocus, 2.2)
    finally:
        del nets[0].body
    assert calls == [1]


def test_arnet_stage_scale_below_adaptive_refused(nets):
    image, disparity = _scene(7)
    defocus = bm.signed_defocus(disparity, 40.0, 0.5)
    with pytest.raises(ValueError, match="scale must be >= the adaptive scale"):
        stages.arnet_stage(nets[0], image, defocus, 2.2, scale=1.0)


def test_iunet_stage_wrong_lowres_size(nets):
    image, disparity = _scene(8)
    defocus = bm.signed_defocus(disparity, 40.0, 0.5)
    with pytest.raises(ValueError, match=r"bokeh_lowres is 10x10 px \(WxH\) but this image and defocus need"):
        stages.iunet_stage(nets[1], image, defocus, None, torch.rand(1, 3, 10, 10), None, 2.2)


# --- sparse ARNet: only the cells the layered gate can use --------------------------------------------------

def _step_scene(seed: int, height: int = 128, width: int = 176):
    """A textured image; disparity: a flat far background (0.1), a near rectangle (0.8) in the upper left and a
    mid-depth bar (0.45) at the bottom: the layered gate is non-zero only around the rectangle and the bar."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.avg_pool2d(torch.rand(1, 3, height, width, generator=gen), 3, 1, 1)
    disparity = torch.full((1, 1, height, width), 0.1)
    disparity[..., height // 8 : height // 3, width // 8 : width // 3] = 0.8
    disparity[..., height - height // 6 :, width // 2 : width // 2 + 6] = 0.45
    return image, disparity


@pytest.fixture
def small_cells(monkeypatch):
    """Sparse cells of 16 px (and the tile_size the tests pass, 64 px, caps the runs), so that the small test
    images are cut into many cells and the skipping and the halos are exercised."""
    from bokehme_core.neural import arnet, iunet

    monkeypatch.setattr(arnet, "ARNET_SPARSE_CELL", 16)
    monkeypatch.setattr(iunet, "SPARSE_CELL", 16)


def _body_pixels(net, calls):
    """Wrap ``net.body`` and the sparse tiles' ``net._body_trimmed`` to record the input pixels of every call,
    halos included (undo with ``_unwrap(net)``)."""
    real_body, real_trimmed = net.body, net._body_trimmed
    net.body = lambda x: calls.append(x.shape[-1] * x.shape[-2]) or real_body(x)
    net._body_trimmed = lambda x, halos: calls.append(x.shape[-1] * x.shape[-2]) or real_trimmed(x, halos)


def _unwrap(*nets):
    for net in nets:
        del net.body, net._body_trimmed


@pytest.mark.parametrize("depths", [(2, 2), (3, 1)])
@pytest.mark.parametrize("K, focus, scene", [
    (6.0, 0.1, _step_scene),             # max |defocus| < 10 px: ARNet at full resolution, one IUNet pass
    (14.0, (0.1, 0.5), _step_scene),     # per-image focus; scale about 1
    (30.0, (0.1, 0.3), _scene),          # the slanted scene: the gate's tail covers most of it
    (60.0, 0.1, _step_scene),            # scale > 4: ARNet at a quarter of the size, two IUNet doublings
    (90.0, (0.45, 0.1), _step_scene),
])
def test_sparse_arnet_equals_dense(small_cells, depths, K, focus, scene):
    """The default (sparse ARNet and IUNet under the layered gate) against the dense official computation, a
    batch of 2, networks of two receptive fields: the fused result within 1e-4, the fusion's error map within
    1e-6, the neural result exact where it is used."""
    torch.manual_seed(1)
    arnet, iunet = ARNet(8, depths[0]).eval(), IUNet(8, depths[1]).eval()
    images, disparities = zip(*(scene(seed) for seed in (11, 12)))
    image, disparity = torch.cat(images), torch.cat(disparities)
    kwargs = dict(K=K, focus=focus, gamma=3.0, arnet=arnet, iunet=iunet, tile_size=64)
    dense = bm.render_bokehme(image, disparity, sparse=False, **kwargs)
    sparse = bm.render_bokehme(image, disparity, **kwargs)  # sparse=True, classical_mode="layered": the defaults
    assert float((dense.bokeh - sparse.bokeh).abs().max()) <= 1e-4
    assert float((dense.error_map - sparse.error_map).abs().max()) <= 1e-6
    used = (dense.error_map > stages.SPARSE_ERROR_THRESHOLD).expand_as(dense.neural)
    assert bool(used.any())
    assert float((dense.neural - sparse.neural)[used].abs().max()) <= 1e-5


def test_sparse_arnet_skips_unused_cells(nets, small_cells):
    """With the gate around a few edges, ARNet computes well under half of the frame (halos included), and
    the fused result still equals the dense one."""
    image, _ = _step_scene(13, 192, 256)
    disparity = torch.full((1, 1, 192, 256), 0.1)
    disparity[..., 24:64, 32:80] = 0.8  # one near object, blurred: the gate is non-zero around it only
    kwargs = dict(K=12.0, focus=0.1, gamma=2.2, arnet=nets[0], iunet=nets[1], tile_size=64)
    calls = []
    _body_pixels(nets[0], calls)
    try:
        dense = bm.render_bokehme(image, disparity, sparse=False, **kwargs)
        dense_work = sum(calls)
        calls.clear()
        sparse = bm.render_bokehme(image, disparity, **kwargs)
        sparse_work = sum(calls)
    finally:
        _unwrap(nets[0])
    assert 0 < sparse_work < 0.5 * dense_work
    assert float((dense.bokeh - sparse.bokeh).abs().max()) <= 1e-4


def test_sparse_arnet_does_not_run_where_the_gate_is_empty(nets):
    """A sharp subject over a blurred background: the layered renderer is trusted everywhere (gate 0), so
    neither network runs and the result is the classical render."""
    image, disparity = _step_scene(14)
    kwargs = dict(K=20.0, focus=0.8, gamma=2.2, arnet=nets[0], iunet=nets[1])
    calls = []
    _body_pixels(nets[0], calls)
    _body_pixels(nets[1], calls)
    try:
        result = bm.render_bokehme(image, disparity, **kwargs)
    finally:
        _unwrap(nets[0], nets[1])
    assert calls == []
    assert float(result.error_map.max()) == 0.0
    assert torch.equal(result.bokeh, result.classical)
    dense = bm.render_bokehme(image, disparity, sparse=False, **kwargs)
    assert torch.equal(dense.bokeh, result.bokeh)


def test_arnet_needed_covers_what_the_used_pixels_read():
    """arnet_needed: the used pixels' own block, grown through every IUNet pass, at ARNet's resolution."""
    used = torch.zeros(1, 1, 480, 640, dtype=torch.bool)
    used[..., 240, 320] = True
    needed = stages.arnet_needed(used, 4.0, 6)
    assert needed.shape == (1, 1, 120, 160)
    # IUNet passes at 240x320, 480x640, 480x640, each reading 2 * (6 + 2) = 16 px of the previous bokeh: at
    # 120x160 that is 16 / 4 + 16 / 2 + 16 = 28 px (plus block rounding) around the used pixel
    assert bool(needed[..., 60, 80]) and bool(needed[..., 60, 80 + 20]) and bool(needed[..., 60 - 20, 80])
    assert not bool(needed[..., 0, 0]) and not bool(needed[..., -1, -1]) and not bool(needed[..., 60, 80 + 45])
    assert not bool(stages.arnet_needed(torch.zeros_like(used), 4.0, 6).any())


@pytest.mark.parametrize("shape, size, margin", [
    ((2, 1, 57, 83), (57, 83), 3), ((1, 1, 40, 30), (20, 15), 0), ((1, 1, 90, 120), (60, 80), 20),
    ((2, 1, 33, 47), (70, 90), 5), ((1, 1, 5, 7), (5, 7), 20),
])
def test_grow_equals_a_max_filter(shape, size, margin):
    """The running-count dilation of _grow equals the max-pool reference (block max, then a square max filter)."""
    import torch.nn.functional as F

    mask = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.99
    reference = F.adaptive_max_pool2d(mask.float(), size) if tuple(shape[-2:]) != size else mask.float()
    if margin:
        reference = F.max_pool2d(reference, 2 * margin + 1, stride=1, padding=margin)
    assert torch.equal(stages._grow(mask, size, margin), reference > 0)

import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image

from bokehme_core import deband, depth_to_disparity, load_disparity, normalize_disparity, refine_disparity, repair_nonfinite


def _ramp(h=6, w=8):
    return np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w)


class TestLoad:
    def test_png16_full_precision(self, tmp_path):
        values = (np.arange(6 * 8, dtype=np.uint16) * 1000 + 7).reshape(6, 8)
        Image.fromarray(values).save(tmp_path / "d.png")
        d = load_disparity(tmp_path / "d.png")
        assert d.shape == (1, 1, 6, 8) and d.dtype == torch.float32
        np.testing.assert_allclose(d[0, 0].numpy(), values / 65535.0, atol=1e-7)
        # 16 bits really read: two values that differ in the low byte stay distinct
        assert d[0, 0, 0, 0] != d[0, 0, 0, 1]

    def test_png8_and_gray_as_rgb(self, tmp_path):
        values = (np.arange(48, dtype=np.uint8) * 5).reshape(6, 8)
        Image.fromarray(values).save(tmp_path / "g.png")
        Image.fromarray(np.stack([values] * 3, -1)).save(tmp_path / "rgb.png")
        a, b = load_disparity(tmp_path / "g.png"), load_disparity(tmp_path / "rgb.png")
        np.testing.assert_allclose(a[0, 0].numpy(), values / 255.0, atol=1e-7)
        assert torch.equal(a, b)

    def test_colour_map_refused(self, tmp_path):
        rgb = np.zeros((4, 4, 3), np.uint8)
        rgb[..., 0] = 200
        Image.fromarray(rgb).save(tmp_path / "c.png")
        with pytest.raises(ValueError, match="colour-mapped"):
            load_disparity(tmp_path / "c.png")

    def test_float_tiff_npy_exr(self, tmp_path):
        values = _ramp() * 7.5 - 1.0  # outside [0,1] on purpose: loading never normalises
        Image.fromarray(values, mode="F").save(tmp_path / "d.tiff")
        np.save(tmp_path / "d.npy", values[None])
        for name in ("d.tiff", "d.npy"):
            np.testing.assert_array_equal(load_disparity(tmp_path / name)[0, 0].numpy(), values)
        OpenEXR = pytest.importorskip("OpenEXR")
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        with OpenEXR.File(header, {"Z": values}) as f:
            f.write(str(tmp_path / "d.exr"))
        np.testing.assert_array_equal(load_disparity(tmp_path / "d.exr")[0, 0].numpy(), values)

    def test_bad_files(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="not found"):
            load_disparity(tmp_path / "missing.png")
        (tmp_path / "junk.png").write_bytes(b"not an image")
        with pytest.raises(ValueError, match="cannot read disparity image"):
            load_disparity(tmp_path / "junk.png")
        np.save(tmp_path / "e.npy", np.zeros((0, 3), np.float32))
        with pytest.raises(ValueError, match="non-empty 2-D"):
            load_disparity(tmp_path / "e.npy")
        np.save(tmp_path / "s.npy", np.array(["a", "b"]))
        with pytest.raises(ValueError, match="must hold numbers"):
            load_disparity(tmp_path / "s.npy")


class TestNormalize:
    def test_min_max_and_invert(self):
        d = torch.tensor([2.0, 4.0, 6.0]).view(1, 1, 1, 3)
        out = normalize_disparity(d, eps=0)
        assert torch.allclose(out.flatten(), torch.tensor([0.0, 0.5, 1.0]))
        assert torch.allclose(normalize_disparity(d, eps=0, invert=True).flatten(), torch.tensor([1.0, 0.5, 0.0]))

    def test_flat_map_is_zero_not_nan(self, caplog):
        with caplog.at_level(logging.WARNING):
            out = normalize_disparity(torch.full((1, 1, 4, 4), 3.0))
        assert torch.equal(out, torch.zeros_like(out))
        assert "constant" in caplog.text

    def test_percentiles_clip_outliers(self):
        d = torch.linspace(0, 1, 1000).view(1, 1, 10, 100).clone()
        d[0, 0, 0, 0] = -50.0
        out = normalize_disparity(d, low_pct=1, high_pct=99)
        assert out.min() == 0 and out.max() == 1
        assert (out == 0).sum() >= 10 and (out == 1).sum() >= 10

    def test_batch_stable(self):
        d = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 3.0)])
        d[0, 0, 0, 0] = 0.0
        per_image = normalize_disparity(d, eps=0)
        stable = normalize_disparity(d, eps=0, batch_stable=True)
        assert per_image[1].max() == 0  # flat second frame on its own
        assert torch.allclose(stable[1], torch.ones(1, 2, 2)) and torch.isclose(stable[0, 0, 0, 1], torch.tensor(1 / 3))

    def test_bad_input(self):
        with pytest.raises(ValueError, match="NaN/inf"):
            normalize_disparity(torch.tensor([[[[math.nan, 1.0]]]]))
        with pytest.raises(ValueError, match="low_pct must be below high_pct"):
            normalize_disparity(torch.rand(1, 1, 2, 2), low_pct=60, high_pct=40)
        with pytest.raises(ValueError, match=r"disparity must be \(B,1,H,W\)"):
            normalize_disparity(torch.rand(2, 2))


class TestDepthToDisparity:
    def test_metric_is_inverse(self):
        depth = torch.tensor([1.0, 2.0, 4.0]).view(1, 1, 1, 3)
        assert torch.allclose(depth_to_disparity(depth).flatten(), torch.tensor([1.0, 0.5, 0.25]))
        # nearer = larger after normalisation
        n = normalize_disparity(depth_to_disparity(depth), eps=0).flatten()
        assert n[0] == 1 and n[-1] == 0

    def test_metric_invalid_becomes_nan_then_repairs(self):
        depth = torch.tensor([1.0, 0.0, 2.0, -1.0]).view(1, 1, 2, 2)
        disp = depth_to_disparity(depth)
        assert torch.isnan(disp).sum() == 2
        fixed, n = repair_nonfinite(disp)
        assert n == 2 and torch.isfinite(fixed).all()

    def test_inverted_and_passthrough(self):
        depth = torch.tensor([0.0, 0.25, 1.0]).view(1, 1, 1, 3)
        assert torch.allclose(depth_to_disparity(depth, "inverted").flatten(), torch.tensor([1.0, 0.75, 0.0]))
        assert torch.equal(depth_to_disparity(depth, "disparity"), depth)
        with pytest.raises(ValueError, match="mode must be one of"):
            depth_to_disparity(depth, "log")


class TestRepair:
    def test_valid_pixels_unchanged_holes_filled_between_neighbours(self, caplog):
        d = torch.linspace(0, 1, 64).view(1, 1, 8, 8).clone()
        ref = d.clone()
        d[0, 0, 3:5, 3:5] = math.nan
        d[0, 0, 0, 7] = math.inf
        with caplog.at_level(logging.WARNING):
            fixed, n = repair_nonfinite(d)
        assert n == 5 and "repairing 5" in caplog.text
        ok = torch.isfinite(d)
        assert torch.equal(fixed[ok], ref[ok])
        hole = fixed[0, 0, 3:5, 3:5]
        assert hole.min() >= ref[0, 0, 2:6, 2:6].min() and hole.max() <= ref[0, 0, 2:6, 2:6].max()

    def test_all_invalid_is_far_plane_and_batch_independent(self):
        d = torch.stack([torch.full((1, 3, 3), math.nan), torch.rand(1, 3, 3)])
        fixed, n = repair_nonfinite(d)
        assert n == 9 and torch.equal(fixed[0], torch.zeros(1, 3, 3)) and torch.equal(fixed[1], d[1])

    def test_nothing_to_do(self):
        d = torch.rand(1, 1, 4, 5)
        fixed, n = repair_nonfinite(d)
        assert n == 0 and torch.equal(fixed, d)


def test_deband_smooths_steps_keeps_edges():
    x = torch.linspace(0, 1, 200)
    d = (torch.round(x * 20) / 255).view(1, 1, 1, -1).expand(1, 1, 20, -1).clone()  # 8-bit banding, 20 levels
    d[..., 100:] += 0.9  # a real depth edge
    out = deband(d, levels=255, sigma=3)
    row_in, row_out = d[0, 0, 10], out[0, 0, 10]
    # the staircase becomes smoother: the largest jump between neighbours shrinks
    assert row_out[10:90].diff().abs().max() < 0.6 * row_in[10:90].diff().abs().max()
    # values move by at most one quantisation step, and the edge keeps its full height
    assert (out - d).abs().max() <= (d.max() - d.min()) / 255 + 1e-6
    assert row_out[100] - row_out[99] > 0.89


# --- refinement of predicted maps ----------------------------------------------------------------------------

def _two_colour_scene(edge_col: int = 20, height: int = 24, width: int = 40):
    """A photo with a vertical colour edge at ``edge_col`` (left: a reddish subject, right: a bluish background)
    and light texture, and the exact disparity (subject 0.8 near, background 0.2)."""
    gen = torch.Generator().manual_seed(0)
    image = torch.empty(1, 3, height, width)
    image[:, :, :, :edge_col] = torch.tensor([0.8, 0.3, 0.2]).view(1, 3, 1, 1)
    image[:, :, :, edge_col:] = torch.tensor([0.2, 0.4, 0.7]).view(1, 3, 1, 1)
    image = (image + 0.03 * torch.rand(image.shape, generator=gen)).clamp(0, 1)
    disparity = torch.full((1, 1, height, width), 0.2)
    disparity[..., :edge_col] = 0.8
    return image, disparity


def test_refine_keeps_a_constant_map():
    image, _ = _two_colour_scene()
    constant = torch.full((1, 1, 24, 40), 0.37)
    assert torch.equal(refine_disparity(constant, image), constant)


def test_refine_keeps_an_exact_edge():
    image, exact = _two_colour_scene()
    assert torch.equal(refine_disparity(exact, image), exact)


@pytest.mark.parametrize("shift", [2, -2])
def test_refine_moves_a_misaligned_edge_onto_the_image_edge(shift):
    image, exact = _two_colour_scene()
    shifted = torch.roll(exact, shifts=shift, dims=-1)
    shifted[..., :4] = 0.8  # no wrap-around at the borders
    shifted[..., -4:] = 0.2
    refined = refine_disparity(shifted, image)
    torch.testing.assert_close(refined, exact, atol=1e-6, rtol=0)


def test_refine_sharpens_a_dilated_blurred_edge():
    """The predicted-looking recipe: near side dilated 2 px, then blurred: the ramp snaps back to the edge."""
    image, exact = _two_colour_scene()
    dilated = torch.nn.functional.max_pool2d(exact, (1, 5), stride=1, padding=(0, 2))
    blurred = torch.nn.functional.avg_pool2d(dilated, (1, 3), stride=1, padding=(0, 1), count_include_pad=False)
    refined = refine_disparity(blurred, image)
    assert (refined - exact).abs().mean() < 0.25 * (blurred - exact).abs().mean()
    assert torch.equal(refined[..., 6:14], exact[..., 6:14]) and torch.equal(refined[..., 27:34], exact[..., 27:34])


def test_refine_follows_a_subject_mask_where_colours_do_not_tell():
    image = torch.full((1, 3, 24, 40), 0.5)  # no colour edge at all
    _, exact = _two_colour_scene()
    shifted = torch.roll(exact, shifts=2, dims=-1)
    shifted[..., :4] = 0.8
    mask = (exact > 0.5).to(torch.float32)
    assert torch.equal(refine_disparity(shifted, image), shifted)  # colour cannot decide: unchanged
    torch.testing.assert_close(refine_disparity(shifted, image, mask=mask), exact, atol=1e-6, rtol=0)


def test_refine_batch_and_broadcast_image():
    image, exact = _two_colour_scene()
    shifted = torch.roll(exact, shifts=2, dims=-1)
    shifted[..., :4] = 0.8
    both = refine_disparity(torch.cat([exact, shifted]), image)
    assert both.shape == (2, 1, 24, 40)
    torch.testing.assert_close(both[1:], refine_disparity(shifted, image))


def test_refine_bad_inputs():
    image, exact = _two_colour_scene()
    with pytest.raises(ValueError, match="matching disparity"):
        refine_disparity(exact, image[..., :30])
    nan = exact.clone()
    nan[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf"):
        refine_disparity(nan, image)
    with pytest.raises(ValueError, match="image must be \\(B,3,H,W\\)"):
        refine_disparity(exact, image[:, :1])
    with pytest.raises(ValueError, match="mask is empty"):
        refine_disparity(exact, image, mask=torch.zeros(1, 1, 24, 40))
    with pytest.raises(ValueError, match="radius"):
        refine_disparity(exact, image, radius=0)

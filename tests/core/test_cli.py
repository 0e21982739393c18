"""Command line: render, demo and error reporting (in-process, small images)."""

import numpy as np
import pytest
import torch
from PIL import Image

from bokehme_core import cli, read_image


@pytest.fixture
def small_scene(tmp_path):
    g = np.random.default_rng(0)
    image = (g.random((24, 32, 3)) * 255).astype(np.uint8)
    disparity = (np.tile(np.linspace(0, 65535, 32), (24, 1))).astype(np.uint16)
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(disparity).save(tmp_path / "disp.png")
    return tmp_path


def test_render_classical(small_scene, capsys):
    out = small_scene / "out.png"
    rc = cli.main(["render", str(small_scene / "img.png"), "--disparity", str(small_scene / "disp.png"), "--K", "6",
                   "--focus-point", "16", "12", "--aperture", "polygon:6:90", "--mode", "exact",
                   "--renderer", "classical", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    result = read_image(out)
    assert result.shape == (1, 3, 24, 32)
    source = read_image(small_scene / "img.png")
    # the focused middle column stays (nearly) sharp, the far edge is blurred
    assert (result[..., 16] - source[..., 16]).abs().mean() < 0.02
    assert (result[..., 1] - source[..., 1]).abs().mean() > 0.05
    assert "classical render" in capsys.readouterr().out


def test_render_errors_are_one_line(small_scene, capsys):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(small_scene / "small.png")
    rc = cli.main(["render", str(small_scene / "img.png"), "--disparity", str(small_scene / "small.png"),
                   "--renderer", "classical", "-o", str(small_scene / "o.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "pass --resize-disparity" in err and "Traceback" not in err
    rc = cli.main(["render", str(small_scene / "img.png"), "--disparity", str(small_scene / "disp.png"),
                   "--aperture", "polygon:x", "--renderer", "classical", "-o", str(small_scene / "o.png")])
    assert rc == 2 and "expected polygon:BLADES" in capsys.readouterr().err
    rc = cli.main(["render", str(small_scene / "missing.png"), "--disparity", str(small_scene / "disp.png"),
                   "-o", str(small_scene / "o.png")])
    assert rc == 2 and "image not found" in capsys.readouterr().err
    rc = cli.main(["render", str(small_scene / "img.png"), "--disparity", str(small_scene / "disp.png"), "--K", "-3",
                   "--renderer", "classical", "-o", str(small_scene / "o.png")])
    assert rc == 2 and "K must be in" in capsys.readouterr().err


def test_custom_aperture_file_and_resize(small_scene):
    from bokehme_core.preview import aperture_shape

    Image.fromarray((aperture_shape("heart", 33).numpy() * 255).astype(np.uint8)).save(small_scene / "heart.png")
    Image.fromarray(np.tile(np.linspace(0, 255, 16), (12, 1)).astype(np.uint8)).save(small_scene / "half.png")
    rc = cli.main(["render", str(small_scene / "img.png"), "--disparity", str(small_scene / "half.png"),
                   "--resize-disparity", "--aperture", str(small_scene / "heart.png"), "--anamorphic", "0.5",
                   "--mode", "fast", "--renderer", "classical", "-o", str(small_scene / "heart_out.png")])
    assert rc == 0
    assert torch.isfinite(read_image(small_scene / "heart_out.png")).all()


def test_demo_writes_before_after(tmp_path, capsys):
    out = tmp_path / "demo.png"
    rc = cli.main(["demo", "--renderer", "classical", "--mode", "fast", "--K", "10", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    before_after = read_image(out)
    bokeh = read_image(tmp_path / "demo_bokeh.png")
    assert before_after.shape[-1] == 2 * bokeh.shape[-1] + 8


def test_render_lens_flags(small_scene, capsys):
    from bokehme_core import Aperture, Lens, render_classical, render_inputs
    from bokehme_core.cli.render import LENS_FLAGS, lens_from_args

    args = cli.build_parser().parse_args(["render", "x.png", "-o", "y.png"])
    assert lens_from_args(args) is None  # every flag at its default: no lens, today's output
    out = small_scene / "lens.png"
    flags = ["--cat-eye", "0.8", "--swirl", "0.3", "--ring", "0.5", "--fringe", "0.05", "--highlight-gain", "3",
             "--highlight-threshold", "0.95", "--focus-range", "0.1", "--near-scale", "1.5", "--far-scale", "0.7"]
    assert set(flags[::2]) == set(LENS_FLAGS)
    rc = cli.main(["render", str(small_scene / "img.png"), "--disparity", str(small_scene / "disp.png"), "--K", "6",
                   "--focus", "0.5", "--mode", "fast", "--gamma", "2.2", "--renderer", "classical", *flags,
                   "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    lens = Lens(cat_eye=0.8, swirl=0.3, ring=0.5, fringe=0.05, highlight_gain=3.0, highlight_threshold=0.95,
                focus_range=0.1, near_scale=1.5, far_scale=0.7)
    assert lens_from_args(cli.build_parser().parse_args(["render", "x.png", "-o", "y.png", *flags])) == lens
    image, disparity = read_image(small_scene / "img.png"), read_image(small_scene / "disp.png")[:, :1]
    lifted, defocus = render_inputs(image, disparity, 6.0, 0.5, **lens.pre_render)
    expected = render_classical(lifted, defocus, gamma=2.2, mode="fast", aperture=Aperture.circle(),
                                lens=lens.shape).bokeh.clamp(0, 1)
    assert (read_image(out) - expected).abs().max() <= 1.5 / 255  # 8-bit output


@pytest.mark.parametrize("flag, value, message", [("--cat-eye", "1.5", r"--cat-eye: cat_eye must be in \[0, 1\]"),
                                                  ("--highlight-gain", "0.5", r"--highlight-gain: highlight_gain must be in \[1, 50\]"),
                                                  ("--fringe", "0.3", r"--fringe: fringe must be in \[0, 0.25\]")])
def test_render_lens_flag_out_of_range(small_scene, capsys, flag, value, message):
    rc = cli.main(["render", str(small_scene / "img.png"), "--disparity", str(small_scene / "disp.png"),
                   "--renderer", "classical", flag, value, "-o", str(small_scene / "o.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    import re

    assert re.search(message, err), err


def test_highlight_recovery_flag(tmp_path, capsys):
    """Default: clipped out-of-focus lights are lifted before blurring; --no-recover-highlights keeps them."""
    g = np.random.default_rng(1)
    image = (g.random((24, 32, 3)) * 200).astype(np.uint8)
    image[4:6, 4:6] = 255  # clipped lights in the blurred far side
    image[18:20, 6:8] = 255
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(np.tile(np.linspace(0, 65535, 32), (24, 1)).astype(np.uint16)).save(tmp_path / "disp.png")
    common = ["render", str(tmp_path / "img.png"), "--disparity", str(tmp_path / "disp.png"), "--K", "8",
              "--focus", "1.0", "--mode", "fast", "--renderer", "classical"]
    assert cli.main([*common, "-o", str(tmp_path / "on.png")]) == 0, capsys.readouterr().err
    assert cli.main([*common, "--no-recover-highlights", "-o", str(tmp_path / "off.png")]) == 0
    on, off = read_image(tmp_path / "on.png"), read_image(tmp_path / "off.png")
    assert float((on - off)[..., :12, :12].mean()) > 0.01  # brighter bokeh around the lights
    assert float((on - off).abs()[..., :, 28:].max()) <= 1 / 255  # the sharp near side: unchanged


@pytest.mark.parametrize("choice, refined", [("auto", False), ("on", True), ("off", False)])
def test_refine_disparity_flag(small_scene, monkeypatch, choice, refined):
    """A given map is refined only with --refine-disparity on (auto refines estimated maps only)."""
    import bokehme_core.disparity

    calls = []
    real = bokehme_core.disparity.refine_disparity

    def spy(disparity, image, **kwargs):
        calls.append(tuple(disparity.shape))
        return real(disparity, image, **kwargs)

    monkeypatch.setattr(bokehme_core.disparity, "refine_disparity", spy)
    rc = cli.main(["render", str(small_scene / "img.png"), "-d", str(small_scene / "disp.png"), "--K", "4",
                   "--renderer", "classical", "--refine-disparity", choice, "-o", str(small_scene / "out.png")])
    assert rc == 0
    assert calls == ([(1, 1, 24, 32)] if refined else [])

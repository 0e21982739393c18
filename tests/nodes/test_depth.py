"""Depth nodes without ComfyUI: model loader (folder files, download choice), Estimate Disparity layouts,
ranges, options, offload, error messages."""

from __future__ import annotations

from helpers import random_official_depth_weights

import math

import pytest
import torch

from bokehme_core.depth import build_model, download_depth_model, to_official_state_dict


@pytest.fixture(scope="module")
def vits_source(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "depth_anything_v2_vits.pth"
    torch.save(random_official_depth_weights("depth_anything_v2", "vits"), path)
    return path


@pytest.fixture
def depth_folder(tmp_path, monkeypatch):
    """An empty model folder standing in for models/bokehme/depth/ (outside ComfyUI: $BOKEHME_CACHE/depth)."""
    monkeypatch.setenv("BOKEHME_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "depth"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def loaded_model(pack, vits_source, tmp_path_factory):
    import os

    folder = tmp_path_factory.mktemp("cache")
    (folder / "depth").mkdir()
    (folder / "depth" / "my_vits.pth").write_bytes(vits_source.read_bytes())
    old = os.environ.get("BOKEHME_CACHE")
    os.environ["BOKEHME_CACHE"] = str(folder)
    try:
        (model,) = pack.nodes.depth.BokehMeDepthModelLoader().load("my_vits.pth")
    finally:
        if old is None:
            del os.environ["BOKEHME_CACHE"]
        else:
            os.environ["BOKEHME_CACHE"] = old
    return model


def test_registered_ids(pack):
    assert {"BokehMeDepthModelLoader", "BokehMeEstimateDisparity"} <= set(pack.NODE_CLASS_MAPPINGS)
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["BokehMeEstimateDisparity"] == "BokehMe Estimate Disparity"
    assert "BokehMeDepthToDisparity" in pack.NODE_CLASS_MAPPINGS  # lives in nodes/disparity.py


def test_every_input_has_a_tooltip(pack, depth_folder):
    for cls in (pack.nodes.depth.BokehMeDepthModelLoader, pack.nodes.depth.BokehMeEstimateDisparity):
        for name, spec in cls.INPUT_TYPES()["required"].items():
            assert spec[1].get("tooltip"), f"{cls.__name__}.{name} has no tooltip"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
        assert cls.CATEGORY == "image/bokeh/depth"


def test_loader_lists_folder_files_and_downloads(pack, depth_folder):
    (depth_folder / "sub").mkdir()
    (depth_folder / "sub" / "dpt_hybrid_384.pt").write_bytes(b"x")
    (depth_folder / "notes.txt").write_text("not a model")
    choices = pack.nodes.depth.BokehMeDepthModelLoader.INPUT_TYPES()["required"]["model"][0]
    assert choices[0] == "sub/dpt_hybrid_384.pt"
    assert "notes.txt" not in choices
    assert "Depth Anything V2 Small (download)" in choices
    assert any("Large" in c and "CC-BY-NC" in c for c in choices)
    description = pack.nodes.depth.BokehMeDepthModelLoader.DESCRIPTION
    assert "CC-BY-NC-4.0" in description and "Apache-2.0" in description


def test_loader_download_choice(pack, depth_folder, vits_source, serve_official, tmp_path):
    serve_official("depth_anything_v2_vits", vits_source.as_uri())
    (model,) = pack.nodes.depth.BokehMeDepthModelLoader().load("Depth Anything V2 Small (download)")
    assert model.variant == "vits"
    assert (depth_folder / "depth_anything_v2_vits.pth").is_file()
    stamp = (depth_folder / "depth_anything_v2_vits.pth").stat().st_mtime_ns
    # second time: the file is found, nothing is downloaded (the source is gone)
    serve_official("depth_anything_v2_vits", (tmp_path / "gone.pth").as_uri())
    (again,) = pack.nodes.depth.BokehMeDepthModelLoader().load("Depth Anything V2 Small (download)")
    assert again.variant == "vits" and (depth_folder / "depth_anything_v2_vits.pth").stat().st_mtime_ns == stamp


def test_loader_download_failure_message(pack, depth_folder, serve_official, tmp_path):
    serve_official("depth_anything_v2_vitb", (tmp_path / "nothing.pth").as_uri())
    with pytest.raises(RuntimeError, match="BokehMe Depth Model Loader: could not download Depth Anything V2 Base.*"
                                           "save it as .*depth_anything_v2_vitb.pth"):
        pack.nodes.depth.BokehMeDepthModelLoader().load("Depth Anything V2 Base (download, CC-BY-NC)")


def test_loader_bad_and_missing_file(pack, depth_folder):
    (depth_folder / "broken.pth").write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match="BokehMe Depth Model Loader: 'broken.pth' is not usable: cannot read broken.pth: "
                                         "not a torch.save zip archive"):
        pack.nodes.depth.BokehMeDepthModelLoader().load("broken.pth")
    with pytest.raises(FileNotFoundError, match="'gone.pth' is not in the depth model folders"):
        pack.nodes.depth.BokehMeDepthModelLoader().load("gone.pth")


def test_estimate_layouts_and_range(pack, loaded_model):
    image = torch.rand(2, 19, 31, 3, generator=torch.Generator().manual_seed(0))  # ComfyUI IMAGE (B,H,W,C)
    out_image, out_mask = pack.nodes.depth.BokehMeEstimateDisparity().estimate(
        loaded_model, image, 28, "fp32", False, "disparity 0..1")
    assert out_image.shape == (2, 19, 31, 3) and out_mask.shape == (2, 19, 31)
    assert torch.equal(out_image[..., 0], out_mask) and torch.equal(out_image[..., 1], out_mask)
    assert out_mask.min() >= 0 and out_mask.max() <= 1
    for i in range(2):  # per-image normalisation: each image spans [0, 1]
        assert float(out_mask[i].min()) == 0.0 and float(out_mask[i].max()) == pytest.approx(1.0, abs=1e-3)
    # the model is offloaded (CPU outside ComfyUI) in fp32 after use
    assert next(loaded_model.parameters()).dtype == torch.float32


def test_estimate_matches_core(pack, loaded_model, monkeypatch):
    image = torch.rand(1, 20, 30, 3, generator=torch.Generator().manual_seed(1))
    node = pack.nodes.depth.BokehMeEstimateDisparity()
    _, mask = node.estimate(loaded_model, image, 28, "fp32", False, "disparity 0..1")
    core = loaded_model.estimate(image.permute(0, 3, 1, 2), processing_res=28)
    torch.testing.assert_close(mask, core[:, 0], rtol=0, atol=1e-6)
    # processing_resolution 0 means the model's official default (None for the core)
    seen = []
    real = loaded_model.estimate
    monkeypatch.setattr(loaded_model, "estimate", lambda img, **kw: seen.append(kw["processing_res"]) or real(
        img, normalize=False, processing_res=14, progress=kw["progress"]))
    node.estimate(loaded_model, image, 0, "fp32", False, "disparity 0..1")
    assert seen == [None]


def test_estimate_batch_stable_and_raw(pack, loaded_model):
    gen = torch.Generator().manual_seed(2)
    image = torch.cat([torch.rand(1, 16, 24, 3, generator=gen), 0.2 * torch.rand(1, 16, 24, 3, generator=gen)])
    node = pack.nodes.depth.BokehMeEstimateDisparity()
    _, raw = node.estimate(loaded_model, image, 28, "fp32", False, "raw network output")
    raw_preview, _ = node.estimate(loaded_model, image, 28, "fp32", False, "raw network output")
    core_raw = loaded_model.estimate(image.permute(0, 3, 1, 2), normalize=False, processing_res=28)[:, 0]
    torch.testing.assert_close(raw, core_raw, rtol=0, atol=0)
    torch.testing.assert_close(raw_preview[..., 0], (raw / raw.max()).clamp(0, 1), rtol=1e-6, atol=1e-6)
    _, stable = node.estimate(loaded_model, image, 28, "fp32", True, "disparity 0..1")
    lo, hi = raw.min(), raw.max()
    torch.testing.assert_close(stable, (raw - lo) / (hi - lo + 1e-6), rtol=1e-5, atol=1e-6)


def test_estimate_rejects_wrong_model(pack):
    with pytest.raises(TypeError, match="depth_model must come from 'BokehMe Depth Model Loader'"):
        pack.nodes.depth.BokehMeEstimateDisparity().estimate(object(), torch.rand(1, 8, 8, 3), 0, "fp32", False,
                                                             "disparity 0..1")

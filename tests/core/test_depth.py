"""Depth models: official key layouts, strict loading of every file form, resolution handling, estimate(),
bad files, download. Forward passes use vits / dpt_hybrid on tiny inputs only."""

from __future__ import annotations

from helpers import DATA, random_official_depth_weights

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from bokehme_core.weights import official_url as official_depth_url
from bokehme_core.depth import (
    DepthCheckpointError,
    DepthDownloadError,
    build_model,
    detect_architecture,
    download_depth_model,
    load_depth_model,
    model_from_state_dict,
    network_input_size,
    resize_like_opencv_cubic,
    to_official_state_dict,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def vits_official():
    return random_official_depth_weights("depth_anything_v2", "vits")


@pytest.fixture(scope="module")
def vits_model(vits_official):
    model = model_from_state_dict(vits_official, "random vits")
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 28, 42, generator=torch.Generator().manual_seed(0)))
    assert (out > 0).float().mean() > 0.5 and out.std() > 1e-3, "random weights give a trivial map: vacuous tests"
    return model


@pytest.fixture(scope="module")
def vits_file(tmp_path_factory, vits_official):
    path = tmp_path_factory.mktemp("depth") / "depth_anything_v2_vits.pth"
    torch.save(vits_official, path)
    return path


# --- key layouts -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "manifest, family, variant",
    [("depth_anything_v2_vits", "depth_anything_v2", "vits"), ("dpt_hybrid_384", "midas_dpt", "dpt_hybrid")],
)
def test_key_manifest_equals_official(manifest, family, variant):
    official = {k: tuple(s) for k, s in json.loads((DATA / "depth_official_manifests.json").read_text())[manifest]}
    ours = {k: tuple(v.shape) for k, v in to_official_state_dict(build_model(family, variant, device="meta")).items()}
    assert sorted(set(official) - set(ours)) == [] and sorted(set(ours) - set(official)) == []
    assert ours == official


@pytest.mark.parametrize(
    "family, variant, params_m",
    [("depth_anything_v2", "vitb", 97.5), ("depth_anything_v2", "vitl", 335.3), ("midas_dpt", "dpt_large", 344.1)],
)
def test_other_variants_build_and_detect(family, variant, params_m):
    sd = to_official_state_dict(build_model(family, variant, device="meta"))
    assert detect_architecture(sd) == (family, variant)
    assert sum(v.numel() for v in sd.values()) / 1e6 == pytest.approx(params_m, abs=0.1)


# --- loading every file form ------------------------------------------------------------------------------------

def test_load_pth_strict_and_forward(vits_file, vits_official):
    model = load_depth_model(vits_file)
    assert (model.family, model.variant) == ("depth_anything_v2", "vits")
    assert not model.training
    back = to_official_state_dict(model)
    assert all(torch.equal(back[k], vits_official[k]) for k in vits_official)
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 28, 42))
    assert out.shape == (2, 28, 42) and torch.isfinite(out).all() and (out >= 0).all()


def test_load_wrapped_model_dict(tmp_path, vits_official, vits_model):
    path = tmp_path / "wrapped.pth"
    torch.save({"model": vits_official, "epoch": torch.tensor(3)}, path)
    model = load_depth_model(path)
    x = torch.randn(1, 3, 28, 28)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), vits_model(x), rtol=0, atol=0)


def test_load_fp16_safetensors(tmp_path, vits_official):
    from safetensors.torch import save_file

    path = tmp_path / "depth_anything_v2_vits_fp16.safetensors"
    save_file({k: v.half().contiguous() for k, v in vits_official.items()}, str(path))
    model = load_depth_model(path)
    assert next(model.parameters()).dtype == torch.float32
    back = to_official_state_dict(model)
    torch.testing.assert_close(back["pretrained.blocks.3.attn.qkv.weight"],
                               vits_official["pretrained.blocks.3.attn.qkv.weight"].half().float(), rtol=0, atol=0)
    with torch.inference_mode():
        assert torch.isfinite(model(torch.randn(1, 3, 14, 28))).all()


def test_load_dpt_hybrid_fp16_safetensors(tmp_path):
    from safetensors.torch import save_file

    sd = random_official_depth_weights("midas_dpt", "dpt_hybrid", seed=1)
    path = tmp_path / "dpt_hybrid_384.safetensors"
    save_file({k: v.half() for k, v in sd.items()}, str(path))
    model = load_depth_model(path)
    assert (model.family, model.variant) == ("midas_dpt", "dpt_hybrid")
    image = torch.rand(1, 3, 45, 61, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        disp = model.estimate(image, processing_res=64)
        raw = model.estimate(image, normalize=False, processing_res=64)
        x = model.preprocess(image, 64)
        net = model(x)
    # MiDaS "minimal" rule: scale 64/61 (closer to 1 than 64/45) -> 47.2 x 64 -> multiples of 32: 32 x 64
    assert x.shape == (1, 3, 32, 64)
    torch.testing.assert_close(x * 0.5 + 0.5, resize_like_opencv_cubic(image, (32, 64)), rtol=0, atol=1e-6)
    # official run.py: bicubic (align_corners=False) back to the input size
    expected = torch.nn.functional.interpolate(net[:, None], size=(45, 61), mode="bicubic", align_corners=False)
    torch.testing.assert_close(raw, expected, rtol=0, atol=0)
    assert net.shape == (1, 32, 64) and torch.isfinite(net).all()
    assert disp.shape == (1, 1, 45, 61) and float(disp.min()) == 0.0
    assert float(disp.max()) == pytest.approx(1.0, abs=1e-4)


def test_public_api_reexport(vits_file):
    import bokehme_core

    assert bokehme_core.load_depth_model(vits_file).variant == "vits"


def test_import_does_not_load_timm():
    code = "import sys, bokehme_core.depth as d; d.__dir__(); print('timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- bad files ------------------------------------------------------------------------------------------------

def test_missing_file():
    with pytest.raises(FileNotFoundError, match="depth model file not found: .*nope.pth"):
        load_depth_model("/nonexistent/nope.pth")


def test_truncated_pth(tmp_path, vits_file):
    bad = tmp_path / "cut.pth"
    bad.write_bytes(vits_file.read_bytes()[:100_000])
    with pytest.raises(DepthCheckpointError, match="cannot read cut.pth: not a torch.save zip archive .*truncated or corrupted.*download it again"):
        load_depth_model(bad)


def test_random_bytes(tmp_path):
    bad = tmp_path / "noise.pth"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(DepthCheckpointError, match="cannot read noise.pth: not a torch.save zip archive"):
        load_depth_model(bad)


def test_truncated_safetensors(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(1000)}, str(path))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DepthCheckpointError, match="cannot read x.safetensors as safetensors: .*truncated or corrupted"):
        load_depth_model(path)


def test_pickled_code_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "cfg": pathlib.Path("x")}, path)
    with pytest.raises(DepthCheckpointError, match="cannot read evil.pth: it holds objects that are not allowed in a weights file .*Unsupported global"):
        load_depth_model(path)


def test_wrong_model(tmp_path):
    path = tmp_path / "iunet.pth"
    torch.save({"model": {"conv0.conv.weight": torch.zeros(64, 20, 3, 3), "conv0.conv.bias": torch.zeros(64)}}, path)
    with pytest.raises(DepthCheckpointError,
                       match=r"iunet.pth is not a supported depth model .*first keys: conv0.conv.weight"):
        load_depth_model(path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(DepthCheckpointError, match="list.pth does not hold a state dict"):
        load_depth_model(path)


def test_missing_keys_are_named(vits_official):
    sd = dict(vits_official)
    del sd["depth_head.scratch.refinenet2.resConfUnit1.conv2.bias"]
    del sd["pretrained.blocks.7.ls2.gamma"]
    with pytest.raises(DepthCheckpointError, match=r"partial.pth \(depth_anything_v2 vits\): missing keys "
                                                    r"\['pretrained.blocks.7.ls2.gamma', "
                                                    r"'depth_head.scratch.refinenet2.resConfUnit1.conv2.bias'\]"):
        model_from_state_dict(sd, "partial.pth")


def test_unexpected_keys_are_named(vits_official):
    sd = dict(vits_official)
    sd["depth_head.extra.weight"] = torch.zeros(1)
    with pytest.raises(DepthCheckpointError, match="unexpected keys for this architecture: depth_head.extra.weight"):
        model_from_state_dict(sd, "extra.pth")


def test_wrong_shape_is_named(vits_official):
    sd = dict(vits_official)
    sd["depth_head.projects.1.weight"] = torch.zeros(97, 384, 1, 1)
    with pytest.raises(DepthCheckpointError, match=r"wrong shapes \['depth_head.projects.1.weight \(97, 384, 1, 1\) "
                                                    r"\(expected \(96, 384, 1, 1\)\)'\]"):
        model_from_state_dict(sd, "bad.pth")


def test_nonfinite_weights(vits_official):
    sd = dict(vits_official)
    sd["pretrained.norm.bias"] = torch.full((384,), math.nan)
    with pytest.raises(DepthCheckpointError, match=r"nan.pth \(depth_anything_v2 vits\) holds NaN/inf weights in \['pretrained.norm.bias'\]"):
        model_from_state_dict(sd, "nan.pth")


def test_giant_and_metric_rejected(tmp_path, vits_official):
    sd = {"pretrained.patch_embed.proj.weight": torch.zeros(1536, 3, 14, 14),
          "depth_head.scratch.output_conv1.weight": torch.zeros(1)}
    with pytest.raises(DepthCheckpointError, match="Depth Anything V2 Giant .*supported: Depth Anything V2"):
        detect_architecture(sd, "vitg.pth")
    path = tmp_path / "depth_anything_v2_metric_hypersim_vits.pth"
    path.write_bytes(b"")
    with pytest.raises(DepthCheckpointError, match="metric-depth fine-tune"):
        load_depth_model(path)
    v1 = tmp_path / "depth_anything_vits14.pth"
    v1.write_bytes(b"")
    with pytest.raises(DepthCheckpointError, match="looks like Depth Anything V1"):
        load_depth_model(v1)


def test_unsupported_midas_variant():
    sd = {"scratch.output_conv.0.weight": torch.zeros(1),
          "pretrained.model.blocks.0.attn.relative_position_bias_table": torch.zeros(1)}
    with pytest.raises(DepthCheckpointError, match="BEiT / Swin / LeViT"):
        detect_architecture(sd, "dpt_beit_large_512.pt")


def test_bad_dtype(vits_file):
    with pytest.raises(TypeError, match="dtype must be torch.float32, torch.float16 or torch.bfloat16, got torch.int8"):
        load_depth_model(vits_file, dtype=torch.int8)


# --- resolution handling -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "hw, target, multiple, method, expected",
    [
        ((1080, 1920), 518, 14, "lower_bound", (518, 924)),  # 920.9 -> 924 (66 * 14)
        ((1920, 1080), 518, 14, "lower_bound", (924, 518)),
        ((518, 518), 518, 14, "lower_bound", (518, 518)),
        ((100, 100), 518, 14, "lower_bound", (518, 518)),  # upscaled
        ((1080, 1920), 384, 32, "minimal", (384, 672)),  # scale 384/1080 (closer to 1), 682.7 -> 672
        ((480, 640), 384, 32, "minimal", (384, 512)),
        ((3000, 400), 384, 32, "minimal", (2880, 384)),
        ((100, 1000), 518, 14, "lower_bound", (518, 5180)),
        ((7, 3001), 518, 14, "lower_bound", (518, 222068)),  # the rule itself; DepthModel refuses this size
    ],
)
def test_network_input_size_known_cases(hw, target, multiple, method, expected):
    assert network_input_size(*hw, target, multiple, method) == expected


def _official_get_size(height, width, target, multiple, method):
    """Transcription of the official Resize.get_size with numpy rounding, for random cross-checks."""
    sh, sw = target / height, target / width
    if method == "lower_bound":
        if sw > sh:
            sh = sw
        else:
            sw = sh
    elif abs(1 - sw) < abs(1 - sh):
        sh = sw
    else:
        sw = sh

    def constrain(x, min_val=0):
        y = (np.round(x / multiple) * multiple).astype(int)
        if y < min_val:
            y = (np.ceil(x / multiple) * multiple).astype(int)
        return int(y)

    if method == "lower_bound":
        return constrain(sh * height, target), constrain(sw * width, target)
    return constrain(sh * height), constrain(sw * width)


def test_network_input_size_matches_official_rule_on_random_sizes():
    rng = np.random.default_rng(0)
    for _ in range(500):
        h, w = (int(v) for v in rng.integers(16, 4000, size=2))
        for target, multiple, method in ((518, 14, "lower_bound"), (384, 32, "minimal"), (700, 14, "lower_bound")):
            ours = network_input_size(h, w, target, multiple, method)
            official = _official_get_size(h, w, target, multiple, method)
            # where the official rule rounds a side to 0 px (extreme aspect ratios, where the official code fails)
            # we use one multiple instead
            assert ours == tuple(max(v, multiple) for v in official)
            assert ours[0] % multiple == 0 and ours[1] % multiple == 0
            if method == "lower_bound":
                assert min(ours) >= target


def test_preprocess_resize_matches_opencv_inter_cubic(vits_model):
    z = np.load(DATA / "cv2_inter_cubic_ref.npz")
    for name in ("down", "up", "mixed"):
        image = torch.from_numpy(z[f"{name}_input"]).permute(2, 0, 1)[None]
        ref = torch.from_numpy(z[f"{name}_cv2_cubic"]).permute(2, 0, 1)[None]
        torch.testing.assert_close(resize_like_opencv_cubic(image, ref.shape[-2:]), ref, rtol=0, atol=1e-5)
        if name != "mixed":  # down / up: sizes that the DA-V2 rule produces at processing_res 28
            x = vits_model.preprocess(image, processing_res=28)
            assert x.shape == ref.shape, name
            mean = torch.tensor(vits_model.mean).view(1, 3, 1, 1)
            std = torch.tensor(vits_model.std).view(1, 3, 1, 1)
            torch.testing.assert_close(x * std + mean, ref, rtol=0, atol=2e-5)


def test_forward_rejects_sizes_not_multiple(vits_model):
    with pytest.raises(ValueError, match=r"multiples of 14 .*got \(1, 3, 30, 28\); use estimate\(\)"):
        vits_model(torch.randn(1, 3, 30, 28))


@pytest.mark.parametrize("size", [(1, 1), (17, 5), (33, 64), (5, 71)])
def test_estimate_shapes_and_range_odd_sizes(vits_model, size):
    image = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    disp = vits_model.estimate(image, processing_res=28)
    assert disp.shape == (2, 1, *size) and disp.dtype == torch.float32
    assert torch.isfinite(disp).all() and disp.min() >= 0 and disp.max() <= 1


def test_estimate_raw_is_official_pipeline(vits_model):
    image = torch.rand(1, 3, 20, 33, generator=torch.Generator().manual_seed(2))
    raw = vits_model.estimate(image, normalize=False, processing_res=28)
    x = vits_model.preprocess(image, 28)
    assert x.shape == (1, 3, 28, 42)  # lower bound 28 on the short side, aspect kept, multiples of 14
    with torch.inference_mode():
        net = vits_model(x)
    expected = torch.nn.functional.interpolate(net[:, None], size=(20, 33), mode="bilinear", align_corners=True)
    torch.testing.assert_close(raw, expected, rtol=0, atol=0)
    normalized = vits_model.estimate(image, processing_res=28)
    span = raw.max() - raw.min()
    torch.testing.assert_close(normalized, (raw - raw.min()) / (span + 1e-6), rtol=1e-5, atol=1e-6)


def test_estimate_batch_stable_and_split(vits_model):
    gen = torch.Generator().manual_seed(3)
    image = torch.cat([torch.rand(1, 3, 21, 30, generator=gen), 0.3 * torch.rand(1, 3, 21, 30, generator=gen)])
    raw = vits_model.estimate(image, normalize=False, processing_res=28)
    torch.testing.assert_close(raw[1:], vits_model.estimate(image[1:], normalize=False, processing_res=28))
    stable = vits_model.estimate(image, processing_res=28, batch_stable=True)
    lo, hi = raw.min(), raw.max()
    torch.testing.assert_close(stable, (raw - lo) / (hi - lo + 1e-6), rtol=1e-5, atol=1e-6)
    per_image = vits_model.estimate(image, processing_res=28)
    for i in range(2):
        lo_i, hi_i = raw[i].min(), raw[i].max()
        torch.testing.assert_close(per_image[i], (raw[i] - lo_i) / (hi_i - lo_i + 1e-6), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(per_image, stable, atol=1e-3)  # the two options really differ here


def test_estimate_progress_and_bad_input(vits_model):
    calls = []
    vits_model.estimate(torch.rand(3, 3, 14, 14), processing_res=14, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(ValueError, match=r"image must have 3 channels \(B,3,H,W\), got \(1,4,8,8\)"):
        vits_model.estimate(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match="processing_res must be in \\[14, 8192\\], got 5"):
        vits_model.estimate(torch.rand(1, 3, 8, 8), processing_res=5)


def test_extreme_aspect_ratio_refused(vits_model):
    with pytest.raises(ValueError, match=r"the network input would be 518 x 222068 px .*image 7 x 3001"):
        vits_model.estimate(torch.rand(1, 3, 7, 3001))


def test_dpt_processing_rule_default():
    model = build_model("midas_dpt", "dpt_hybrid", device="meta")
    assert model.network_input_size(1080, 1920) == (384, 672)
    assert model.network_input_size(1080, 1920, 512) == (512, 896)


# --- download ----------------------------------------------------------------------------------------------------

def test_official_urls():
    assert official_depth_url("depth_anything_v2_vits") == (
        "https://huggingface.co/depth-anything/Depth-Anything-V2-Small/resolve/main/depth_anything_v2_vits.pth")
    assert official_depth_url("depth_anything_v2_vitl").endswith(
        "Depth-Anything-V2-Large/resolve/main/depth_anything_v2_vitl.pth")


def test_download_from_file_url(tmp_path, vits_file):
    seen = []
    dest = tmp_path / "models"
    path = download_depth_model("depth_anything_v2_vits", dest, url=vits_file.as_uri(),
                                progress=lambda d, t: seen.append((d, t)))
    assert path == dest / "depth_anything_v2_vits.pth"
    assert path.read_bytes() == vits_file.read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["depth_anything_v2_vits.pth"]  # no temp file left
    assert seen[-1][0] == vits_file.stat().st_size and seen[0][0] == 0


def test_download_offline_message(tmp_path):
    with pytest.raises(DepthDownloadError, match=r"could not download Depth Anything V2 Small from file:.*missing.pth.*"
                                                  r"save it as .*depth_anything_v2_vits.pth"):
        download_depth_model("depth_anything_v2_vits", tmp_path, url=(tmp_path / "missing.pth").as_uri())
    assert list(tmp_path.iterdir()) == []


def test_download_of_wrong_file_leaves_nothing(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"<html>rate limited</html>")
    dest = tmp_path / "dest"
    with pytest.raises(DepthDownloadError, match="the downloaded file is not a usable Depth Anything V2 Small"):
        download_depth_model("depth_anything_v2_vits", dest, url=src.as_uri())
    assert list(dest.iterdir()) == []


def test_download_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="name must be one of .*depth_anything_v2_vits.*got 'vitz'"):
        download_depth_model("vitz", tmp_path)


# --- CLI ---------------------------------------------------------------------------------------------------------

def test_cli_estimate_disparity_writes_png16(tmp_path, monkeypatch, vits_file):
    from PIL import Image

    from bokehme_core.cli.estimate_disparity import register, run

    import argparse

    monkeypatch.setenv("BOKEHME_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "depth").mkdir(parents=True)
    (tmp_path / "cache" / "depth" / "depth_anything_v2_vits.pth").symlink_to(vits_file)
    rgb = (np.random.default_rng(0).random((23, 37, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["estimate-disparity", str(tmp_path / "in.png"), "-o", str(tmp_path / "d.png"),
                              "--processing-res", "28"])
    assert run(args) == 0
    out = np.asarray(Image.open(tmp_path / "d.png"))
    assert out.shape == (23, 37) and out.dtype in (np.uint16, np.int32) and out.max() == 65535 and out.min() == 0
    # same numbers as the library, quantised to 16 bits
    from bokehme_core.image_io import read_image

    ref = load_depth_model(vits_file).estimate(read_image(tmp_path / "in.png"), processing_res=28)[0, 0].numpy()
    assert np.abs(out / 65535.0 - ref).max() <= 0.5 / 65535 + 1e-6


def test_cli_helper_without_model_explains(tmp_path, monkeypatch):
    from bokehme_core.cli.estimate_disparity import estimate_disparity_for_cli

    monkeypatch.setenv("BOKEHME_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=r"no depth model found in .*cache/depth; download Depth Anything V2 "
                                                r"Small .*--download.*huggingface.co.*--disparity"):
        estimate_disparity_for_cli(torch.rand(1, 3, 8, 8))
    with pytest.raises(FileNotFoundError, match="depth model 'dpt_large_384' not found"):
        estimate_disparity_for_cli(torch.rand(1, 3, 8, 8), model="dpt_large_384")


def test_cli_helper_finds_by_name(tmp_path, monkeypatch, vits_file):
    from bokehme_core.cli.estimate_disparity import estimate_disparity_for_cli, find_depth_model

    monkeypatch.setenv("BOKEHME_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "depth"
    folder.mkdir(parents=True)
    (folder / "depth_anything_v2_vits.pth").symlink_to(vits_file)
    assert find_depth_model("depth_anything_v2_vits") == folder / "depth_anything_v2_vits.pth"
    assert find_depth_model() == folder / "depth_anything_v2_vits.pth"
    disp = estimate_disparity_for_cli(torch.rand(1, 3, 9, 12), processing_res=14)
    assert disp.shape == (1, 1, 9, 12) and disp.min() >= 0 and disp.max() <= 1
    with pytest.raises(ValueError, match="image_tensor must be one image"):
        estimate_disparity_for_cli(torch.rand(2, 3, 9, 12))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp32_and_fp16_match_cpu(vits_file):
    image = torch.rand(1, 3, 40, 60, generator=torch.Generator().manual_seed(4))
    cpu = load_depth_model(vits_file).estimate(image, normalize=False, processing_res=56)
    gpu = load_depth_model(vits_file, device="cuda").estimate(image.cuda(), normalize=False, processing_res=56)
    half = load_depth_model(vits_file, device="cuda", dtype=torch.float16).estimate(
        image.cuda(), normalize=False, processing_res=56)
    assert gpu.device.type == "cuda" and half.dtype == torch.float32
    scale = cpu.abs().max()
    assert (gpu.cpu() - cpu).abs().max() <= 1e-4 * scale
    assert (half.cpu() - cpu).abs().max() <= 2e-2 * scale

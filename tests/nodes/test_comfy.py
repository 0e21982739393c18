"""nodes/_comfy.py inside a (stand-in) ComfyUI: progress bar, interruption, devices, model folders, downloads,
previews and the input folder. The stand-in (tests/comfy_standin.py) records what the nodes did."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image



def _inputs(batch: int = 2, height: int = 24, width: int = 32):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(batch, height, width, 3, generator=gen)  # IMAGE (B,H,W,C)
    disparity = torch.linspace(0, 1, width).view(1, 1, width, 1).expand(batch, height, width, 3).contiguous()
    return image, disparity


def _classical(pack, image, disparity):
    return pack.nodes.render.BokehMeClassicalRender().render(
        image, disparity, 8.0, 0.5, -1.0, 2.2, "circle", 6, 0.0, 1.0, "fast", False, False)


def test_progress_bar_moves_within_frames(pack, comfy, monkeypatch):
    from bokehme_core.scatter import numba_runtime

    monkeypatch.setattr(numba_runtime, "BAND_PAIRS", 1)  # small bands: this tiny frame reports like a big one
    image, disparity = _inputs(batch=3)
    _classical(pack, image, disparity)
    units = pack.nodes._comfy.frame_progress.__defaults__[0]  # bar units per frame
    assert comfy.bars == [3 * units]
    values = [value for value, _ in comfy.progress]
    assert values == sorted(values) and values[-1] == 3 * units
    # reports inside each frame, not only at its end
    assert {v // units for v in values if v % units} == {0, 1, 2}


def test_cancel_stops_a_4k_classical_render_within_the_frame(pack, comfy, monkeypatch):
    """Cancel pressed while a 3840x2160 frame renders (default mode) stops the node at the core's next report:
    no report after the one that raised, and little work between the press and the stop."""
    import time

    mm = comfy.modules["comfy.model_management"]
    height, width = 2160, 3840
    image = torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(0))
    disparity = torch.linspace(0, 1, width).view(1, 1, width, 1).expand(1, height, width, 3)
    real = pack.nodes._comfy.progress_callback
    reports, pressed = [], []

    def user_presses_cancel_mid_frame(total):
        inner = real(total)

        def progress(done, frame_total):
            reports.append(time.perf_counter())
            inner(done, frame_total)
            if not pressed and len(reports) >= 3 and 0 < done < frame_total:  # inside the frame: the user cancels
                mm.interrupt_current_processing(True)
                pressed.append(time.perf_counter())

        return progress

    monkeypatch.setattr(pack.nodes._comfy, "progress_callback", user_presses_cancel_mid_frame)
    with pytest.raises(mm.InterruptProcessingException):
        pack.nodes.render.BokehMeClassicalRender().render(
            image, disparity, 30.0, 0.5, -1.0, 2.2, "circle", 6, 90.0, 1.0, "layered", False, False)
    assert pressed, "the render never reported progress inside the frame"
    assert sum(t >= pressed[0] for t in reports) == 1  # the next report raised; nothing ran past it
    assert reports[-1] - pressed[0] < 1.0  # seconds of work between the press and the stop


def test_interruption_stops_a_render(pack, comfy):
    mm = comfy.modules["comfy.model_management"]
    image, disparity = _inputs()
    mm.interrupt_current_processing(True)
    with pytest.raises(mm.InterruptProcessingException):
        _classical(pack, image, disparity)
    assert comfy.progress == []  # stopped before the first frame was rendered
    _classical(pack, image, disparity)  # the flag is cleared: the next run goes through
    assert comfy.progress[-1][0] == comfy.progress[-1][1] > 0


def test_interruption_inside_the_hybrid_node(pack, comfy, monkeypatch, tmp_path):
    """The all-in-one node passes ComfyUI's progress (which checks for cancel) down into the core."""
    mm = comfy.modules["comfy.model_management"]
    (models,) = pack.nodes.neural.BokehMeModelLoader().load("bundled", "bundled")
    image, disparity = _inputs(batch=1)
    calls = []

    real = pack.nodes.neural._comfy.progress_callback(100)

    def cancel_at_second_report(done, total):
        calls.append(done)
        if len(calls) == 2:  # the user presses cancel while the core reports progress
            mm.interrupt_current_processing(True)
        real(done, total)

    monkeypatch.setattr(pack.nodes.neural._comfy, "progress_callback", lambda total: cancel_at_second_report)
    with pytest.raises(mm.InterruptProcessingException):
        pack.nodes.neural.BokehMe().render(models, image, disparity, 12.0, 0.5, -1.0, 4.0, "circle", 6, 0.0, 1.0,
                                           "fast", False, "predicted", False)
    assert len(calls) == 2  # the core stopped at that report: no later stage ran


def test_devices_come_from_model_management(pack, comfy):
    comfy.device = torch.device("meta")
    assert pack.nodes._comfy.torch_device() == torch.device("meta")
    assert pack.nodes._comfy.offload_device() == torch.device("cpu")


def test_model_folders_and_files(pack, comfy, tmp_path):
    fp = comfy.modules["folder_paths"]
    extra = tmp_path / "extra_models"
    (extra / "sub").mkdir(parents=True)
    (extra / "sub" / "mine.safetensors").write_bytes(b"x")
    fp.add_model_folder_path("bokehme", str(extra))
    dirs = pack.nodes._comfy.model_dirs("bokehme")
    assert dirs == [comfy.base / "models" / "bokehme", extra]
    depth_dirs = pack.nodes._comfy.model_dirs("bokehme_depth")  # nobody registered these names: defaults only
    assert depth_dirs == [comfy.base / "models" / "bokehme" / "depth", comfy.base / "models" / "depthanything"]
    (comfy.base / "models" / "bokehme").mkdir(parents=True)
    (comfy.base / "models" / "bokehme" / "a.pth").write_bytes(b"x")
    (comfy.base / "models" / "bokehme" / "notes.txt").write_text("no")
    names = [name for name, _ in pack.nodes._comfy.list_model_files("bokehme")]
    assert names == ["a.pth", "sub/mine.safetensors"]
    choices = pack.nodes.neural.BokehMeModelLoader.INPUT_TYPES()["required"]["arnet"][0]
    assert choices[:2] == ["bundled", "official (download if missing)"] and "sub/mine.safetensors" in choices
    with pytest.raises(ValueError, match="unknown model kind 'vae'"):
        pack.nodes._comfy.model_dirs("vae")


def test_official_weights_found_then_downloaded(pack, comfy, serve_official, official_iunet_pth):
    folder = comfy.base / "models" / "bokehme"
    serve_official("iunet", official_iunet_pth.as_uri())
    path = pack.nodes._comfy.official_weights_path("iunet", "BokehMe Model Loader")
    assert path == folder / "iunet.pth" and path.is_file()
    assert comfy.bars == [100] and comfy.progress[-1][0] == 100  # the download drove ComfyUI's progress bar
    serve_official("iunet", (folder / "nowhere.pth").as_uri())
    assert pack.nodes._comfy.official_weights_path("iunet", "BokehMe Model Loader") == path  # found: no download


def test_official_weights_offline_message(pack, comfy, serve_official, tmp_path):
    serve_official("arnet", (tmp_path / "nowhere.pth").as_uri())
    with pytest.raises(RuntimeError, match=r"BokehMe Model Loader: could not download .*save it as "
                                           r".*models/bokehme/arnet.pth.*then run the workflow again"):
        pack.nodes._comfy.official_weights_path("arnet", "BokehMe Model Loader")


def test_focus_preview_saved_to_temp(pack, comfy):
    _, disparity = _inputs(batch=1)
    result = pack.nodes.focus.BokehMeFocus().pick(disparity, "point", 0.5, 0.25, 0.5)
    images = result["ui"]["images"]
    assert len(images) == 1 and images[0]["type"] == "temp"
    saved = comfy.base / "temp" / images[0]["filename"]
    assert Image.open(saved).size == (32, 24)


def test_disparity_file_from_input_folder(pack, comfy):
    array = (np.linspace(0, 65535, 20 * 30).reshape(20, 30)).astype(np.uint16)
    Image.fromarray(array).save(comfy.base / "input" / "depth16.png")
    loader = pack.nodes.disparity.BokehMeLoadDisparityFile
    assert "depth16.png" in loader.INPUT_TYPES()["required"]["file"][0]
    image, mask = loader().load("depth16.png", "disparity (near = bright)", True, 0.0, 100.0, False, False, True,
                                False)
    assert tuple(mask.shape) == (1, 20, 30) and float(mask.min()) == 0.0
    assert float(mask.max()) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(image[..., 0], mask)


def test_networks_live_under_comfyui_model_manager(pack, comfy, monkeypatch):
    """The BokehMe networks are loaded through ComfyUI's model manager (patchers in load_models_gpu), stay
    resident between runs without being wrapped again, and go to the offload device when ComfyUI evicts them
    for another model (a diffusion model in workflow 3)."""
    mm = comfy.modules["comfy.model_management"]
    (models,) = pack.nodes.neural.BokehMeModelLoader().load("bundled", "bundled")
    # from here on, the offload device is one nothing else uses, so an eviction shows
    monkeypatch.setattr(mm, "unet_offload_device", lambda: torch.device("meta"))
    image, disparity = _inputs(batch=1)
    args = (image, disparity, 12.0, 0.5, -1.0, 4.0, "circle", 6, 0.0, 1.0, "fast", False, "predicted", False)
    pack.nodes.neural.BokehMe().render(models, *args)
    assert [p.model for p in comfy.loaded] == [models.arnet, models.iunet]
    assert comfy.resident == comfy.loaded[::-1]  # ComfyUI keeps them loaded after the run
    first = list(comfy.loaded)
    pack.nodes.neural.BokehMe().render(models, *args)
    assert comfy.loaded[2:] == first  # the same patchers: ComfyUI sees the networks as already loaded
    mm.unload_all_models()  # ComfyUI makes room for a big model
    assert next(models.arnet.parameters()).device.type == "meta"
    assert next(models.iunet.parameters()).device.type == "meta"


def test_depth_model_lives_under_comfyui_model_manager(pack, comfy, tmp_path):
    from helpers import random_official_depth_weights

    path = tmp_path / "da.pth"
    torch.save(random_official_depth_weights("depth_anything_v2", "vits"), path)
    depth_model = pack.nodes.depth.load_depth_model(path, device="cpu")
    image, _ = _inputs(batch=1, height=28, width=28)
    pack.nodes.depth.BokehMeEstimateDisparity().estimate(depth_model, image, 28, "fp32", False, "disparity 0..1")
    assert [p.model for p in comfy.loaded] == [depth_model]
    assert next(depth_model.parameters()).dtype == torch.float32  # weights rest in float32


def test_gpu_memory_released_after_runs(pack, comfy):
    image, disparity = _inputs(batch=1)
    _classical(pack, image, disparity)
    assert comfy.cache_releases == 1
    (models,) = pack.nodes.neural.BokehMeModelLoader().load("bundled", "bundled")
    pack.nodes.neural.BokehMe().render(models, image, disparity, 12.0, 0.5, -1.0, 4.0, "circle", 6, 0.0, 1.0,
                                       "fast", False, "predicted", False)
    assert comfy.cache_releases == 2


def test_outputs_go_to_the_intermediate_device(pack, comfy, monkeypatch):
    mm = comfy.modules["comfy.model_management"]
    monkeypatch.setattr(mm, "intermediate_device", lambda: torch.device("meta"))
    image, _ = _inputs(batch=1)
    mask = torch.full((1, 24, 32), 0.5)
    (fused,) = pack.nodes.render.BokehMeFuse().fuse(image, image, mask, False)
    assert fused.device.type == "meta"
    assert pack.nodes._comfy.b1hw_to_mask(torch.zeros(1, 1, 4, 4)).device.type == "meta"


def test_focus_pull_batch_reuses_the_loaded_models(pack, comfy, monkeypatch):
    """A focus pull (8 frames here; 24 at 1080p in bench/bench_pipeline.py --video) through the all-in-one node:
    one model load, frames rendered one by one (bounded
    memory, one progress step each), the focus moving from near to far."""
    import bokehme_core.weights

    (models,) = pack.nodes.neural.BokehMeModelLoader().load("bundled", "bundled")

    def no_reload(*args, **kwargs):
        raise AssertionError("weights were read again during the render")

    monkeypatch.setattr(bokehme_core.weights, "read_state_dict", no_reload)
    monkeypatch.setattr(bokehme_core.weights, "load_bundled_models", no_reload)
    image, disparity = _inputs(batch=1, height=16, width=24)
    frames = image.expand(8, -1, -1, -1)
    bokeh, error, in_focus = pack.nodes.neural.BokehMe().render(
        models, frames, disparity, 10.0, 1.0, 0.0, 4.0, "circle", 6, 0.0, 1.0, "fast", False, "predicted", False)
    assert bokeh.shape == (8, 16, 24, 3) and error.shape == (8, 16, 24)
    sharp_column = [int(in_focus[i].mean(dim=0).argmax()) for i in (0, 7)]
    assert sharp_column[0] > sharp_column[1]  # focus 1.0 (near = right) first, 0.0 (far = left) last
    assert comfy.progress[-1][0] == comfy.progress[-1][1]

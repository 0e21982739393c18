#!/usr/bin/env python3
"""Write the bundled example workflows ``workflows/*.json`` (ComfyUI UI format) from the node classes.

The workflows are generated, not hand-edited, so that node ids, links and the order of ``widgets_values``
are right by construction (``tools/workflow_runner.UIWorkflow`` applies the frontend's widget rules); the
tests then run every file through the real node classes. Re-run after a node's inputs change::

    .venv/bin/python tools/make_workflows.py            # all workflows
    .venv/bin/python tools/make_workflows.py 2 4        # some of them

Thumbnails (same-name .jpg) are rendered by ``tools/make_docs_images.py``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import workflow_runner as wr  # noqa: E402

OUT = ROOT / "workflows"

# One place for the render settings the examples share (the demo scene is 768x512; suggested K 30).
K = 30.0
GAMMA = 4.0

WHERE_INPUTS = (
    "**Inputs.** *BokehMe Example Scene* outputs the pack's bundled test scene (made by our own renderer, "
    "with its exact disparity), so this workflow runs on a fresh install. For your own photo replace it by "
    "*Load Image* plus *BokehMe Estimate Disparity* (or *BokehMe Load Disparity File* if you have a disparity "
    "map: the pack's example files are listed there as `[BokehMe examples] ...`)."
)

TYPES = (
    "**Connection types.** IMAGE: photo or gray disparity (1 = near) · MASK: error map, in-focus mask, "
    "aperture shape · FLOAT: focus disparity · BOKEHME_MODELS: ARNet + IUNet · BOKEHME_DEFOCUS: signed dilated "
    "defocus in pixels."
)


def pack_classes() -> dict:
    from pack_loader import import_pack

    pack = import_pack()
    inputs = pathlib.Path(tempfile.mkdtemp(prefix="bokehme_wf_inputs_"))
    (inputs / "example.png").write_bytes(b"")  # LoadImage lists it; the file is ComfyUI's own input/example.png
    return {**wr.core_stand_ins(inputs, inputs / "out"), **pack.NODE_CLASS_MAPPINGS}


def require(classes: dict, *names: str) -> None:
    missing = [n for n in names if n not in classes]
    if missing:
        raise SystemExit(f"node types not in the pack yet: {missing}")


# --- 1. photo -> disparity -> BokehMe ----------------------------------------------------------------------

def photo(classes) -> dict:
    require(classes, "BokehMeDepthModelLoader", "BokehMeEstimateDisparity", "BokehMeRefineDisparity")
    wf = wr.UIWorkflow(classes)
    wf.note(
        "# BokehMe: lens blur for a photo\n\n"
        "1. **Load Image**: your photo (ComfyUI's `example.png` is preselected).\n"
        "2. **BokehMe Depth Model Loader** + **Estimate Disparity**: a monocular depth network turns the photo "
        "into a disparity map (gray, 1 = near). First use downloads the chosen model into "
        "`models/bokehme/depth/`. No depth model? Delete these two nodes and feed *disparity* from "
        "**BokehMe Load Disparity File** or **BokehMe Depth -> Disparity** (any depth node's output).\n"
        "3. **BokehMe Refine Disparity**: snaps the predicted map's soft or shifted depth edges onto the photo's "
        "edges (no halo of the wrong sharpness around the subject). Optional: connect a subject mask from a "
        "segmentation node to its *subject_mask* input for an exact outline.\n"
        "4. **BokehMe Focus**: run once, then **click on its preview** where it should be sharp and run again "
        "(or set mode = value and type a focus disparity).\n"
        "5. **BokehMe**: the full hybrid renderer (classical + ARNet/IUNet + error-map fusion). "
        "K = blur radius in px per unit of disparity; gamma emphasises highlights.\n\n" + TYPES,
        (-500, 0), size=(460, 600))
    load = wf.add("LoadImage", (0, 0), widgets={"image": "example.png"}, size=(320, 420))
    depth_loader = wf.add("BokehMeDepthModelLoader", (0, 470), size=(320, 110))
    estimated = wf.add("BokehMeEstimateDisparity", (370, 0),
                       links={"depth_model": depth_loader[0], "image": load["IMAGE"]}, size=(320, 130))
    disparity = wf.add("BokehMeRefineDisparity", (370, 170),
                       links={"image": load["IMAGE"], "disparity": estimated["disparity"]}, size=(320, 110))
    focus = wf.add("BokehMeFocus", (370, 320), widgets={"mode": "point", "x": 0.5, "y": 0.5},
                   links={"disparity": disparity["disparity"], "image": load["IMAGE"]}, size=(360, 520))
    models = wf.add("BokehMeModelLoader", (780, 0), size=(340, 90))
    bokeh = wf.add("BokehMe", (780, 140), widgets={"K": K, "gamma": GAMMA},
                   links={"models": models[0], "image": load["IMAGE"], "disparity": disparity["disparity"],
                          "focus": focus["focus"]}, size=(340, 400))
    wf.add("SaveImage", (1170, 0), widgets={"filename_prefix": "bokehme/photo"},
           links={"images": bokeh["bokeh"]}, size=(420, 460))
    return wf.to_json()


# --- 2. modular hybrid pipeline ------------------------------------------------------------------------------

def modular(classes) -> dict:
    wf = wr.UIWorkflow(classes)
    wf.note(
        "# BokehMe, stage by stage\n\n"
        "The hybrid renderer of the paper wired from its parts, each swappable:\n\n"
        "1. **Classical Render**: the classical renderer (default mode *layered*: occlusion-aware depth slabs; "
        "*exact* = the official scatter kernel). Outputs the bokeh, the *dilated defocus* (BOKEHME_DEFOCUS, px) "
        "that IUNet uses, a defocus preview and the in-focus mask.\n"
        "2. **ARNet**: the neural renderer at an adaptive low resolution; also predicts the **error map** "
        "(where the classical result is wrong: depth edges, partial occlusion). Its *classical_mode* must match "
        "the Classical Render's *mode*: for *layered* the map keeps only the background revealed by a blurred "
        "foreground.\n"
        "3. **IUNet**: upsamples ARNet's bokeh step by step to full size.\n"
        "4. **Fuse**: classical x (1 - E) + neural x E.\n\n"
        "**Stage swap**: the lower *Fuse* uses **Analytic Error Map** (paper Eq. 5, no network) instead of "
        "ARNet's prediction; compare the two previews on the right.\n\n"
        "The K and gamma nodes (top left) drive every stage at once; focus comes from **BokehMe Focus** "
        "(click on its preview after a run).\n\n" + WHERE_INPUTS + "\n\n" + TYPES,
        (-520, 0), size=(480, 760))
    scene = wf.add("BokehMeExampleScene", (0, 0), size=(300, 110))
    models = wf.add("BokehMeModelLoader", (0, 160), size=(300, 90))
    focus = wf.add("BokehMeFocus", (0, 300), widgets={"mode": "point", "x": 0.62, "y": 0.6},
                   links={"disparity": scene["disparity"], "image": scene["image"]}, size=(320, 420))
    render_links = {"image": scene["image"], "disparity": scene["disparity"], "focus": focus["focus"]}
    classical = wf.add("BokehMeClassicalRender", (380, 0), links=dict(render_links), size=(330, 420))
    arnet = wf.add("BokehMeARNet", (380, 470), links={"models": models[0], **render_links}, size=(330, 230))
    iunet = wf.add("BokehMeIUNet", (760, 470), links={
        "models": models[0], **render_links, "lowres_bokeh": arnet["lowres_bokeh"],
        "dilated_defocus": classical["dilated_defocus"]}, size=(330, 270))
    analytic = wf.add("BokehMeAnalyticErrorMap", (760, 790), links={
        "disparity": scene["disparity"], "focus": focus["focus"]}, size=(330, 150))
    fused = wf.add("BokehMeFuse", (1140, 0), links={
        "classical": classical["bokeh"], "neural": iunet["neural_bokeh"], "error_map": arnet["error_map"]},
        title="BokehMe Fuse (ARNet error map)", size=(300, 130))
    fused_analytic = wf.add("BokehMeFuse", (1140, 790), links={
        "classical": classical["bokeh"], "neural": iunet["neural_bokeh"], "error_map": analytic["error_map"]},
        title="BokehMe Fuse (analytic error map)", size=(300, 130))
    error_image = wf.add("MaskToImage", (1140, 470), links={"mask": arnet["error_map"]}, size=(220, 30))
    analytic_image = wf.add("MaskToImage", (1140, 1000), links={"mask": analytic["error_map"]}, size=(220, 30))
    wf.add("SaveImage", (1490, 0), widgets={"filename_prefix": "bokehme/modular"},
           links={"images": fused["bokeh"]}, size=(420, 360), title="Result (ARNet error map)")
    wf.add("PreviewImage", (1490, 410), links={"images": error_image[0]}, size=(420, 330),
           title="Error map (ARNet)")
    wf.add("PreviewImage", (1960, 0), links={"images": classical["defocus_preview"]}, size=(420, 360),
           title="Defocus map")
    wf.add("PreviewImage", (1490, 790), links={"images": fused_analytic["bokeh"]}, size=(420, 360),
           title="Result (analytic error map)")
    wf.add("PreviewImage", (1960, 790), links={"images": analytic_image[0]}, size=(420, 360),
           title="Error map (analytic)")
    K_targets = [(classical, "K"), (arnet, "K"), (iunet, "K"), (analytic, "K")]
    wf.primitive(K, K_targets, (-520, 800), title="K (blur radius px per unit disparity)")
    wf.primitive(GAMMA, [(classical, "gamma"), (arnet, "gamma"), (iunet, "gamma")], (-520, 920), title="gamma")
    wf.group("classical", (360, -40, 370, 490))
    wf.group("neural (ARNet -> IUNet)", (360, 430, 1110, 340), color="#8A8")
    wf.group("stage swap: analytic error map", (740, 750, 720, 420), color="#b58b2a")
    return wf.to_json()


# --- 3. after image generation -----------------------------------------------------------------------------

def generation(classes) -> dict:
    require(classes, "BokehMeDepthModelLoader", "BokehMeEstimateDisparity")
    wf = wr.UIWorkflow(classes)
    wf.note(
        "# Generate, then add lens blur\n\n"
        "A plain text-to-image graph (pick any SD1.5/SDXL checkpoint in **Load Checkpoint**) whose decoded "
        "image goes through **Estimate Disparity** and **BokehMe**. Generators often render everything sharp; "
        "BokehMe adds a physically plausible depth of field afterwards, with control over focus, strength and "
        "bokeh shape.\n\n"
        "Needs a checkpoint in `models/checkpoints/` and a depth model (downloaded on first use). "
        "Focus: mode *point* on **BokehMe Focus**: run once, click on the subject in its preview, run again "
        "(the seed is fixed, so the same image comes back).\n\n" + TYPES,
        (-500, 0), size=(460, 440))
    ckpt = wf.add("CheckpointLoaderSimple", (0, 0), widgets={"ckpt_name": "sd_xl_base_1.0.safetensors"},
                  size=(320, 100))
    positive = wf.add("CLIPTextEncode", (370, 0), widgets={
        "text": "photo of a red vintage bicycle leaning on a garden fence, flowers in the background, "
                "string lights, evening, sharp focus everywhere"}, links={"clip": ckpt["CLIP"]}, size=(400, 160))
    negative = wf.add("CLIPTextEncode", (370, 210), widgets={"text": "blurry, lowres, watermark"},
                      links={"clip": ckpt["CLIP"]}, size=(400, 120))
    latent = wf.add("EmptyLatentImage", (370, 380), widgets={"width": 1024, "height": 768}, size=(320, 110))
    sample = wf.add("KSampler", (820, 0), widgets={"seed": 42, "steps": 25, "cfg": 6.5, "sampler_name": "euler",
                                                   "scheduler": "normal"},
                    links={"model": ckpt["MODEL"], "positive": positive[0], "negative": negative[0],
                           "latent_image": latent[0]}, size=(320, 270))
    decode = wf.add("VAEDecode", (820, 320), links={"samples": sample[0], "vae": ckpt["VAE"]}, size=(220, 50))
    depth_loader = wf.add("BokehMeDepthModelLoader", (820, 420), size=(320, 110))
    disparity = wf.add("BokehMeEstimateDisparity", (1190, 0),
                       links={"depth_model": depth_loader[0], "image": decode[0]}, size=(320, 130))
    focus = wf.add("BokehMeFocus", (1190, 180), widgets={"mode": "point", "x": 0.5, "y": 0.6},
                   links={"disparity": disparity["disparity"], "image": decode[0]}, size=(360, 480))
    models = wf.add("BokehMeModelLoader", (1600, 0), size=(340, 90))
    bokeh = wf.add("BokehMe", (1600, 140), widgets={"K": 40.0, "gamma": GAMMA},
                   links={"models": models[0], "image": decode[0], "disparity": disparity["disparity"],
                          "focus": focus["focus"]}, size=(340, 400))
    wf.add("SaveImage", (1990, 0), widgets={"filename_prefix": "bokehme/generated"},
           links={"images": bokeh["bokeh"]}, size=(420, 460))
    wf.group("image generation (needs a checkpoint)", (-20, -40, 1180, 620), color="#444")
    return wf.to_json()


# --- 4. custom apertures and anamorphic bokeh ----------------------------------------------------------------

def apertures(classes) -> dict:
    wf = wr.UIWorkflow(classes)
    wf.note(
        "# Bokeh shapes\n\n"
        "**BokehMe Aperture Shape** draws an aperture as a MASK (white = open): heart, star, polygon with n "
        "blades, circle. Connect it to *aperture_mask* of **BokehMe** (or Classical Render) and every "
        "out-of-focus highlight takes that shape. Any MASK works: a photo of a real lens's bokeh ball, a "
        "logo...\n\n"
        "The third render keeps the circular aperture and sets **anamorphic = 0.5**: tall oval bokeh, as from "
        "a 2x anamorphic lens (values > 1 give wide ovals).\n\n"
        "Highlights show shapes best: *highlight* is on and gamma is high.\n\n" + WHERE_INPUTS + "\n\n" + TYPES,
        (-500, 0), size=(460, 620))
    scene = wf.add("BokehMeExampleScene", (0, 0), size=(300, 110))
    models = wf.add("BokehMeModelLoader", (0, 160), size=(300, 90))
    heart = wf.add("BokehMeApertureShape", (0, 300), widgets={"shape": "heart", "size": 129}, size=(300, 150))
    hexagon = wf.add("BokehMeApertureShape", (0, 500), widgets={"shape": "polygon", "blades": 6, "rotation_deg": 90.0},
                     size=(300, 150), title="BokehMe Aperture Shape (6 blades)")
    common = {"models": models[0], "image": scene["image"], "disparity": scene["disparity"]}
    settings = {"K": K, "focus": 0.95, "gamma": 5.0, "highlight": True}
    heart_render = wf.add("BokehMe", (380, 0), widgets=settings,
                          links={**common, "aperture_mask": heart["aperture_mask"]},
                          size=(330, 400), title="BokehMe (heart)")
    hex_render = wf.add("BokehMe", (380, 450), widgets=settings,
                        links={**common, "aperture_mask": hexagon["aperture_mask"]},
                        size=(330, 400), title="BokehMe (hexagon)")
    oval_render = wf.add("BokehMe", (380, 900), widgets={**settings, "anamorphic": 0.5}, links=common,
                         size=(330, 400), title="BokehMe (anamorphic 0.5)")
    wf.add("SaveImage", (760, 0), widgets={"filename_prefix": "bokehme/heart"},
           links={"images": heart_render["bokeh"]}, size=(420, 400))
    wf.add("PreviewImage", (760, 450), links={"images": hex_render["bokeh"]}, size=(420, 400))
    wf.add("PreviewImage", (760, 900), links={"images": oval_render["bokeh"]}, size=(420, 400))
    wf.add("PreviewImage", (0, 700), links={"images": heart["preview"]}, size=(300, 300), title="heart aperture")
    return wf.to_json()


# --- 5. focus pull over a batch / video --------------------------------------------------------------------

FRAMES = 12


def focus_pull(classes) -> dict:
    wf = wr.UIWorkflow(classes)
    wf.note(
        "# Focus pull over frames\n\n"
        f"A batch of {FRAMES} frames (here the example scene repeated; for a video use a video loader such as "
        "*Load Video* from VideoHelperSuite, and **BokehMe Estimate Disparity** on the frames) is rendered with "
        "the focus moving from near (**focus** = 1.0, first frame) to far (**focus_end** = 0.0, last frame): "
        "`focus_end >= 0` turns the constant focus into a linear pull over the batch.\n\n"
        "**BokehMe Depth -> Disparity** with **batch_stable** on normalises all frames with one range, so the "
        "disparity (and the blur) does not flicker from frame to frame.\n\n"
        "The full hybrid **BokehMe** node renders every frame with its own focus; the preview shows what is "
        "sharp in each frame; *Save Animated WEBP* writes the clip.\n\n"
        + WHERE_INPUTS + "\n\n" + TYPES,
        (-500, 0), size=(460, 600))
    scene = wf.add("BokehMeExampleScene", (0, 0), widgets={"frames": FRAMES}, size=(300, 110))
    disparity = wf.add("BokehMeDepthToDisparity", (0, 160), widgets={"batch_stable": True},
                       links={"depth_image": scene["disparity"], "match_size_of": scene["image"]}, size=(320, 330))
    models = wf.add("BokehMeModelLoader", (0, 540), size=(320, 90))
    render = wf.add("BokehMe", (370, 0), widgets={
        "K": K, "focus": 1.0, "focus_end": 0.0, "gamma": GAMMA},
        links={"models": models[0], "image": scene["image"], "disparity": disparity["disparity"]}, size=(330, 440))
    wf.add("SaveAnimatedWEBP", (750, 0), widgets={"filename_prefix": "bokehme/focus_pull", "fps": 6.0,
                                                  "lossless": False, "quality": 90},
           links={"images": render["bokeh"]}, size=(420, 420))
    in_focus = wf.add("MaskToImage", (750, 470), links={"mask": render["in_focus"]}, size=(220, 30))
    wf.add("PreviewImage", (750, 540), links={"images": in_focus[0]}, size=(420, 330),
           title="In focus, per frame (white = sharp)")
    return wf.to_json()


# --- 6. lens character ---------------------------------------------------------------------------------------

def lens_character(classes) -> dict:
    require(classes, "BokehMeLens")
    wf = wr.UIWorkflow(classes)
    wf.note(
        "# Lens character\n\n"
        "**BokehMe Lens** describes how a real lens draws its bokeh; connect its *lens* output to the optional "
        "*lens* input of **BokehMe Classical Render** or **BokehMe**:\n\n"
        "- **cat_eye**: toward the frame's edges bokeh balls turn into lemons squeezed toward the centre "
        "(optical vignetting); **swirl** turns them around the centre (Petzval look).\n"
        "- **ring**: soap-bubble bokeh, bright rim and dimmer centre (light kept).\n"
        "- **fringe**: colour fringing, red and blue blur radii differ by that fraction.\n"
        "- **highlight_gain / highlight_threshold**: clipped lights are lifted in linear light before blurring, "
        "so bokeh balls come out bright (3 with threshold 0.98 matched path-traced lights best).\n"
        "- **focus_range**: a depth band around the focus that stays fully sharp; **near_scale / far_scale** "
        "blur the foreground and background at different rates.\n\n"
        "Every option at its default = the plain aperture. The lens node's *preview* shows point lights at the "
        "centre, edges and corners. Top: classical render with the lens; middle: the same without it; bottom: "
        "the hybrid **BokehMe** node with the lens (its neural part renders plain bokeh where the error map "
        "uses it, at depth edges).\n\n" + WHERE_INPUTS + "\n\n" + TYPES,
        (-500, 0), size=(460, 760))
    scene = wf.add("BokehMeExampleScene", (0, 0), size=(300, 110))
    lens = wf.add("BokehMeLens", (0, 160), widgets={
        "cat_eye": 0.7, "swirl": 0.2, "ring": 0.5, "fringe": 0.04, "highlight_gain": 3.0,
        "highlight_threshold": 0.98, "focus_range": 0.05}, size=(320, 330))
    models = wf.add("BokehMeModelLoader", (0, 540), size=(320, 90))
    settings = {"K": K, "focus": 0.95, "gamma": GAMMA}
    common = {"image": scene["image"], "disparity": scene["disparity"]}
    with_lens = wf.add("BokehMeClassicalRender", (370, 0), widgets=settings,
                       links={**common, "lens": lens["lens"]}, size=(330, 420),
                       title="BokehMe Classical Render (with lens)")
    plain = wf.add("BokehMeClassicalRender", (370, 470), widgets=settings, links=common, size=(330, 420),
                   title="BokehMe Classical Render (plain aperture)")
    hybrid = wf.add("BokehMe", (370, 940), widgets=settings,
                    links={"models": models[0], **common, "lens": lens["lens"]}, size=(330, 420),
                    title="BokehMe (hybrid, with lens)")
    wf.add("SaveImage", (750, 0), widgets={"filename_prefix": "bokehme/lens_character"},
           links={"images": with_lens["bokeh"]}, size=(420, 420))
    wf.add("PreviewImage", (750, 470), links={"images": plain["bokeh"]}, size=(420, 420),
           title="Plain aperture (for comparison)")
    wf.add("PreviewImage", (750, 940), links={"images": hybrid["bokeh"]}, size=(420, 420),
           title="Hybrid with lens")
    wf.add("PreviewImage", (0, 680), links={"images": lens["preview"]}, size=(320, 260),
           title="Lens preview (point lights)")
    return wf.to_json()


WORKFLOWS = {
    "1": ("1_bokehme_photo", photo),
    "2": ("2_bokehme_modular_pipeline", modular),
    "3": ("3_bokehme_after_generation", generation),
    "4": ("4_bokehme_bokeh_shapes", apertures),
    "5": ("5_bokehme_focus_pull", focus_pull),
    "6": ("6_bokehme_lens_character", lens_character),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", nargs="*", help=f"workflow numbers {sorted(WORKFLOWS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.which) - set(WORKFLOWS))
    if unknown:
        parser.error(f"unknown workflow numbers {unknown}; choose from {sorted(WORKFLOWS)}")
    classes = pack_classes()
    OUT.mkdir(exist_ok=True)
    for key in args.which or sorted(WORKFLOWS):
        name, build = WORKFLOWS[key]
        workflow = build(classes)
        wr.ui_to_api(workflow, classes)  # refuse to write anything the harness would reject
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(workflow, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)} ({len(workflow['nodes'])} nodes, {len(workflow['links'])} links)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

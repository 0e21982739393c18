#!/usr/bin/env python3
"""Render the README pictures (``docs/images/*.jpg``) and the workflow thumbnails (``workflows/*.jpg``)
with the pack's own code, from the bundled example scene (``assets/demo``).

Everything is rendered by ``bokehme_core``'s classical (scatter) renderer, analytic error map and defocus
preview at half the scene size: deterministic, no network weights needed, a minute or two on a CPU::

    .venv/bin/python tools/make_docs_images.py                 # both
    .venv/bin/python tools/make_docs_images.py --only docs     # or: --only thumbnails, --only lens

Pictures are small JPEGs (quality 85, < 150 kB).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bokehme_core import Aperture, Lens, analytic_error_map, render_classical, render_inputs, signed_defocus  # noqa: E402
from bokehme_core.disparity import load_disparity  # noqa: E402
from bokehme_core.image_io import read_image  # noqa: E402
from bokehme_core.preview import aperture_shape, defocus_preview  # noqa: E402

DEMO = ROOT / "assets" / "demo"
SCALE = 2  # render at 1/2 of the 768x512 scene
K = 30.0 / SCALE  # the suggested K of the scene, scaled with it (same picture, smaller)
GAMMA = 4.0
BACKGROUND = (24, 24, 28)


def load_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """(1,3,H,W) image and (1,1,H,W) disparity of the example scene at 1/SCALE size."""
    image = read_image(DEMO / "image.png")
    disparity = load_disparity(DEMO / "disparity.png")
    pool = torch.nn.functional.avg_pool2d
    return pool(image, SCALE), pool(disparity, SCALE)


def render(image, disparity, focus: float, *, aperture: Aperture | None = None, k: float = K) -> torch.Tensor:
    """Classical exact render, highlight boost on: (1,3,H,W) in [0,1]."""
    defocus = signed_defocus(disparity, k, focus)
    result = render_classical(image, defocus, gamma=GAMMA, aperture=aperture, mode="exact", highlight=True, K=k)
    return result.bokeh.clamp(0, 1)


def render_lens(image, disparity, focus: float, lens: Lens | None, *, k: float = K) -> torch.Tensor:
    """Classical exact render with a lens (focus range, highlight lift, shapes, fringe): (1,3,H,W) in [0,1]."""
    pre_render = {} if lens is None else lens.pre_render  # highlights, focus range
    lifted, defocus = render_inputs(image, disparity, k, focus, **pre_render)
    result = render_classical(lifted, defocus, gamma=GAMMA, aperture=None, mode="exact",
                              lens=None if lens is None else lens.shape)
    return result.bokeh.clamp(0, 1)


def with_corner_lights(image: torch.Tensor, disparity: torch.Tensor):
    """The scene with small white lights near the four corners and the edges' middles, on the far background
    (disparity 0): where cat's eye and swirl show most."""
    image, disparity = image.clone(), disparity.clone()
    H, W = image.shape[-2:]
    for fy in (0.1, 0.5, 0.9):
        for fx in (0.07, 0.5, 0.93):
            if (fy, fx) == (0.5, 0.5):
                continue
            y, x = round(fy * (H - 1)), round(fx * (W - 1))
            image[..., y - 1:y + 2, x - 1:x + 2] = 1.0
            disparity[..., y - 3:y + 4, x - 3:x + 4] = 0.0
    return image, disparity


#: the README's lens gallery: (caption, lens)
LENS_GALLERY = [
    ("plain aperture", None),
    ("cat's eye 0.8", Lens(cat_eye=0.8)),
    ("swirl 0.7 + cat's eye 0.4", Lens(cat_eye=0.4, swirl=0.7)),
    ("soap-bubble ring 0.7", Lens(ring=0.7)),
    ("colour fringe 0.08", Lens(fringe=0.08)),
    ("highlights: gain 3", Lens(highlight_gain=3.0, highlight_threshold=0.98)),
    ("focus range 0.3, far x1.5", Lens(focus_range=0.3, far_scale=1.5)),
    ("all of them", Lens(cat_eye=0.7, swirl=0.2, ring=0.5, fringe=0.04, highlight_gain=3.0,
                         highlight_threshold=0.98, focus_range=0.05)),
]
LENS_FOCUS = 0.95  # focus on the near objects: the background lights become bokeh balls
LENS_K = 24.0 / SCALE  # big enough balls for the shapes to read at gallery size


def to_pil(x: torch.Tensor) -> Image.Image:
    """(1,C,H,W) or (C,H,W) in [0,1] -> PIL RGB."""
    if x.ndim == 4:
        x = x[0]
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return Image.fromarray((x.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8))


def font(size: int) -> ImageFont.ImageFont:
    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
                 "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf"):
        if pathlib.Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default()


def label(picture: Image.Image, text: str, size: int = 14) -> Image.Image:
    """A caption in a dark box at the top-left corner."""
    picture = picture.copy()
    draw = ImageDraw.Draw(picture)
    f = font(size)
    box = draw.textbbox((0, 0), text, font=f)
    draw.rectangle((4, 4, 12 + box[2] - box[0], 10 + box[3] - box[1] + 2), fill=(0, 0, 0))
    draw.text((8, 6 - box[1] + 1), text, font=f, fill=(255, 255, 255))
    return picture


def grid(pictures: list[Image.Image], cols: int, gap: int = 4) -> Image.Image:
    w, h = pictures[0].size
    rows = math.ceil(len(pictures) / cols)
    sheet = Image.new("RGB", (cols * w + (cols - 1) * gap, rows * h + (rows - 1) * gap), BACKGROUND)
    for i, p in enumerate(pictures):
        sheet.paste(p.resize((w, h), Image.LANCZOS), ((i % cols) * (w + gap), (i // cols) * (h + gap)))
    return sheet


def fit(picture: Image.Image, width: int) -> Image.Image:
    return picture.resize((width, round(picture.height * width / picture.width)), Image.LANCZOS)


def save(picture: Image.Image, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, "JPEG", quality=85, optimize=True, progressive=True)
    print(f"wrote {path.relative_to(ROOT)} {picture.size[0]}x{picture.size[1]} {path.stat().st_size // 1024} kB")


def error_overlay(image: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """Error map in red over a darkened image: (1,3,H,W)."""
    red = torch.tensor([1.0, 0.15, 0.1]).view(1, 3, 1, 1)
    return image * 0.55 * (1 - error) + red * error


class Scene:
    """Renders shared by several pictures, computed once."""

    def __init__(self):
        self.image, self.disparity = load_scene()
        self._cache = {}

    def bokeh(self, focus: float, shape: str = "circle", k: float = K) -> torch.Tensor:
        key = (focus, shape, k)
        if key not in self._cache:
            self._cache[key] = render(self.image, self.disparity, focus, aperture=APERTURES[shape](), k=k)
        return self._cache[key]


APERTURES = {
    "circle": lambda: Aperture.circle(),
    "5 blades": lambda: Aperture.polygon(5),
    "6 blades": lambda: Aperture.polygon(6),
    "8 blades": lambda: Aperture.polygon(8),
    "heart": lambda: Aperture.from_mask(aperture_shape("heart", 129)),
    "anamorphic 0.5": lambda: Aperture.circle(anamorphic=0.5),
}
NEAR = 1.0  # focus on the nearest object: the starry background turns into bokeh balls
FAR = 0.0  # focus on the background: blurred objects in front of it are where the classical renderer errs
SHAPE_K = 40.0 / SCALE  # a bit more blur so that the shapes read clearly


def night_lights(height: int = 170, width: int = 256, lights: int = 26, seed: int = 3):
    """A test card for bokeh shapes: small coloured lights on a dark gradient, all far away (disparity 0).
    Returns (1,3,H,W) image and (1,1,H,W) disparity."""
    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.03, 0.10, height).view(1, 1, height, 1)
    image = torch.cat([ramp * 0.5, ramp * 0.6, ramp * 1.2], dim=1).expand(1, 3, height, width).clone()
    for _ in range(lights):
        y = int(torch.randint(8, height - 8, (1,), generator=gen))
        x = int(torch.randint(8, width - 8, (1,), generator=gen))
        hue = float(torch.rand(1, generator=gen))
        colour = torch.tensor([1.0, 0.55 + 0.45 * math.cos(6.283 * hue), 0.35 + 0.65 * hue]).clamp(0.3, 1.0)
        image[0, :, y : y + 2, x : x + 2] = colour.view(3, 1, 1)
    return image, torch.zeros(1, 1, height, width)


def shape_card(shape: str) -> Image.Image:
    """The night-lights card rendered out of focus with one aperture."""
    image, disparity = night_lights()
    return to_pil(render(image, disparity, NEAR, aperture=APERTURES[shape](), k=SHAPE_K))


# --- README pictures ------------------------------------------------------------------------------------------

def docs_images(scene: Scene, out: pathlib.Path) -> None:
    sharp = label(to_pil(scene.image), "input (all in focus)")
    near = label(to_pil(scene.bokeh(NEAR)), "focus near")
    far = label(to_pil(scene.bokeh(0.0)), "focus far")
    save(grid([sharp, near, far], cols=3), out / "before_after.jpg")

    gallery = [label(shape_card(shape), shape) for shape in APERTURES]
    save(grid(gallery, cols=3), out / "aperture_gallery.jpg")

    lens_gallery(scene, out)

    sweep = [label(fit(to_pil(scene.bokeh(f)), 256), f"focus {f:.2f}", 12) for f in (1.0, 0.75, 0.5, 0.25, FAR)]
    save(grid(sweep, cols=5, gap=2), out / "focus_sweep.jpg")

    error = analytic_error_map(scene.disparity, K, FAR)
    overlay = label(to_pil(error_overlay(scene.image, error)), "analytic error map (red)")
    classical = label(to_pil(scene.bokeh(FAR)), "classical render, focus far")
    defocus = label(to_pil(defocus_preview(signed_defocus(scene.disparity, K, FAR))), "defocus (red near, blue far)")
    save(grid([classical, defocus, overlay], cols=3), out / "error_map_overlay.jpg")

    # registry icon (pyproject [tool.comfy] Icon): hexagonal bokeh balls, square
    image, disparity = night_lights(height=200, width=200, lights=14, seed=11)
    icon = to_pil(render(image, disparity, NEAR, aperture=APERTURES["6 blades"](), k=SHAPE_K))
    icon.save(out / "icon.png", optimize=True)


# --- workflow thumbnails ----------------------------------------------------------------------------------

THUMB = (512, 384)


def thumb_canvas(panels: list[Image.Image], cols: int, title: str) -> Image.Image:
    sheet = grid(panels, cols=cols, gap=3)
    sheet = fit(sheet, THUMB[0])
    canvas = Image.new("RGB", THUMB, BACKGROUND)
    canvas.paste(sheet, (0, (THUMB[1] - sheet.height + 28) // 2))
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 6), title, font=font(18), fill=(235, 235, 235))
    return canvas


def split(before: Image.Image, after: Image.Image, title: str) -> Image.Image:
    """Before on the left, after on the right of one picture, a white line between, in the thumbnail frame."""
    picture = after.copy()
    half = picture.width // 2
    picture.paste(before.crop((0, 0, half, before.height)), (0, 0))
    ImageDraw.Draw(picture).line((half, 0, half, picture.height), fill=(255, 255, 255), width=2)
    return thumb_canvas([picture], 1, title)


def thumbnails(scene: Scene, out: pathlib.Path) -> None:
    sharp, near, far = to_pil(scene.image), to_pil(scene.bokeh(NEAR)), to_pil(scene.bokeh(FAR))
    save(split(label(sharp, "photo"), near, "Photo -> depth -> BokehMe"), out / "1_bokehme_photo.jpg")

    error = analytic_error_map(scene.disparity, K, FAR)
    defocus = to_pil(defocus_preview(signed_defocus(scene.disparity, K, FAR)))
    panels = [label(far, "classical"), label(defocus, "defocus"),
              label(to_pil(error_overlay(scene.image, error)), "error map"),
              label(to_pil(scene.disparity), "disparity")]
    save(thumb_canvas(panels, 2, "Hybrid pipeline, stage by stage"), out / "2_bokehme_modular_pipeline.jpg")

    save(split(label(sharp, "generated"), far, "After image generation: + BokehMe"),
         out / "3_bokehme_after_generation.jpg")

    shapes = [label(shape_card(s), s) for s in ("heart", "6 blades", "anamorphic 0.5", "circle")]
    save(thumb_canvas(shapes, 2, "Bokeh shapes: custom aperture, anamorphic"), out / "4_bokehme_bokeh_shapes.jpg")

    frames = [label(to_pil(scene.bokeh(f)), f"frame {i + 1}") for i, f in enumerate((NEAR, 0.67, 0.33, FAR))]
    save(thumb_canvas(frames, 2, "Focus pull over frames (near -> far)"), out / "5_bokehme_focus_pull.jpg")
    lens_thumbnail(scene, out)


def lens_gallery(scene: Scene, out: pathlib.Path) -> None:
    """docs/images/lens_gallery.jpg: the scene with lights near the corners, one panel per lens effect."""
    image, disparity = with_corner_lights(scene.image, scene.disparity)
    panels = [label(fit(to_pil(render_lens(image, disparity, LENS_FOCUS, lens, k=LENS_K)), 320), caption, 12)
              for caption, lens in LENS_GALLERY]
    save(grid(panels, cols=4, gap=3), out / "lens_gallery.jpg")


def lens_thumbnail(scene: Scene, out: pathlib.Path) -> None:
    image, disparity = with_corner_lights(scene.image, scene.disparity)
    panels = [label(to_pil(render_lens(image, disparity, LENS_FOCUS, lens, k=LENS_K)), caption)
              for caption, lens in (LENS_GALLERY[0], LENS_GALLERY[1], LENS_GALLERY[3], LENS_GALLERY[-1])]
    save(thumb_canvas(panels, 2, "Lens character: cat's eye, ring, fringe, highlights"),
         out / "6_bokehme_lens_character.jpg")


def layered_vs_scatter(out: pathlib.Path, scene: str = "scene_00", K: int = 30, focus: float = 0.9) -> None:
    """docs/images/layered_vs_scatter.jpg: a path-traced bench_dev scene (../shared/bench_dev, sharp subject over
    a blurred background), the official scatter renderer vs the layered mode vs the ground truth, whole frame and a
    zoom where the two renders differ most (chosen without the ground truth)."""
    bench = ROOT.parent / "shared" / "bench_dev"
    image = read_image(bench / scene / "aif.png")
    disparity = torch.from_numpy(np.load(bench / scene / "disparity.npy").astype(np.float32))[None, None]
    truth = read_image(bench / scene / f"gt_K{K}_df{focus}_circle.png")
    defocus = signed_defocus(disparity, K, focus)
    renders = [render_classical(image, defocus, gamma=2.2, mode=mode).bokeh.clamp(0, 1) for mode in ("exact", "layered")]
    error = torch.nn.functional.avg_pool2d((renders[0] - renders[1]).abs().mean(1, keepdim=True), 48, stride=8)
    row, col = divmod(int(error.flatten().argmax()), error.shape[-1])
    top, left = row * 8, col * 8
    def crop(x):
        return x[..., top : top + 48, left : left + 48]
    titles = ("official scatter (exact)", "layered (default)", "path-traced ground truth")
    frames = [label(fit(to_pil(x), 320), t, 12) for x, t in zip([*renders, truth], titles)]
    zooms = [label(to_pil(torch.nn.functional.interpolate(crop(x), scale_factor=320 / 48, mode="nearest")),
                   "zoom", 12) for x in [*renders, truth]]
    save(grid(frames + zooms, cols=3, gap=3), out / "layered_vs_scatter.jpg")


def refine_figure(out: pathlib.Path, scene: str = "scene_00", K: int = 30, focus: float = 0.9) -> None:
    """docs/images/refine_disparity.jpg: a path-traced bench_dev scene with a predicted-looking disparity (near
    side dilated 2 px, blurred, 8-bit: ``bench/eval_quality.py --imperfect-disparity``), the same map after
    ``refine_disparity``, and the bokeh (``layered`` + highlight recovery) from each, beside the ground truth;
    zooms where the two maps differ most."""
    sys.path.insert(0, str(ROOT / "bench"))
    from eval_quality import imperfect

    from bokehme_core import refine_disparity

    bench = ROOT.parent / "shared" / "bench_dev"
    image = read_image(bench / scene / "aif.png")
    exact = torch.from_numpy(np.load(bench / scene / "disparity.npy").astype(np.float32))[None, None].clamp(0, 1)
    truth = read_image(bench / scene / f"gt_K{K}_df{focus}_circle.png")
    predicted = imperfect(exact)
    refined = refine_disparity(predicted, image)

    def bokeh(disparity):
        lifted, defocus = render_inputs(image, disparity, K, focus, recover=True)
        return render_classical(lifted, defocus, gamma=2.2, mode="layered").bokeh.clamp(0, 1)

    renders = [bokeh(predicted), bokeh(refined)]
    change = torch.nn.functional.avg_pool2d((renders[0] - renders[1]).abs().mean(1, keepdim=True), 64, stride=8)
    row, col = divmod(int(change.flatten().argmax()), change.shape[-1])
    top, left = row * 8, col * 8

    def zoom(x):
        return to_pil(torch.nn.functional.interpolate(x[..., top : top + 64, left : left + 64], scale_factor=4,
                                                      mode="nearest"))

    maps = [label(fit(to_pil(d.expand(-1, 3, -1, -1)), 256), t, 12)
            for d, t in ((predicted, "predicted-looking map"), (refined, "refined"), (exact, "exact map"))]
    frames = [label(fit(to_pil(x), 256), t, 12) for x, t in zip([*renders, truth],
              ("bokeh from the predicted map", "bokeh from the refined map", "path-traced ground truth"))]
    zooms = [label(zoom(x), "zoom", 12) for x in [*renders, truth]]
    save(grid(maps + frames + zooms, cols=3, gap=3), out / "refine_disparity.jpg")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("docs", "thumbnails", "lens", "layered", "refine"),
                        help="lens: only the lens gallery and the thumbnail of workflow 6; layered: only the layered "
                             "vs scatter comparison on a path-traced scene")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.only in (None, "refine"):
        refine_figure(ROOT / "docs" / "images")
        if args.only == "refine":
            return 0
    if args.only in (None, "layered"):
        layered_vs_scatter(ROOT / "docs" / "images")
        if args.only == "layered":
            return 0
    scene = Scene()
    if args.only == "lens":
        lens_gallery(scene, ROOT / "docs" / "images")
        lens_thumbnail(scene, ROOT / "workflows")
        return 0
    if args.only in (None, "thumbnails"):
        thumbnails(scene, ROOT / "workflows")
    if args.only in (None, "docs"):
        docs_images(scene, ROOT / "docs" / "images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Picture grid for the README's quality section: input, classical, hybrid, ground truth and error map on
path-traced bench_dev scenes (``../shared/bench_dev``), with each result's PSNR against the ground truth.

Per sample, two rows: the whole frame, then a zoom on the 192x192 window where the *classical* render is
furthest from the ground truth (chosen from the classical error alone, so the zoom is not picked to flatter
the hybrid). Error map: ARNet's predicted map (white = the neural result is used).

Usage:
  .venv/bin/python bench/quality_grid.py --weights weights --out docs/images/quality_grid.jpg
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "bench"))

from eval_quality import BENCH_DEV, GAMMA, _read_rgb, metrics  # noqa: E402
from make_docs_images import grid, label, save, to_pil  # noqa: E402

from bokehme_core import Aperture, render_classical, signed_defocus  # noqa: E402
from bokehme_core.fusion import fuse  # noqa: E402
from bokehme_core.weights import load_arnet, load_iunet  # noqa: E402
from bokehme_core.neural.stages import render_neural  # noqa: E402

DEFAULT_IDS = ("scene_00/gt_K20_df0.9_circle", "scene_01/gt_K30_df0.1_circle")
ZOOM = 192
PANEL_WIDTH = 288


def worst_window(classical: torch.Tensor, gt: torch.Tensor, size: int) -> tuple:
    """(top, left) of the size x size window with the largest mean |classical - gt|."""
    err = (classical - gt).abs().mean(1, keepdim=True)
    pooled = F.avg_pool2d(err, size, stride=8)
    idx = int(pooled.flatten().argmax())
    return (idx // pooled.shape[-1]) * 8, (idx % pooled.shape[-1]) * 8


def sample_rows(sample: dict, arnet, iunet) -> list:
    image = _read_rgb(BENCH_DEV / sample["aif"])
    disparity = torch.from_numpy(np.load(BENCH_DEV / sample["disparity_npy"]).astype(np.float32))[None, None]
    gt = _read_rgb(BENCH_DEV / sample["gt"])
    aperture = Aperture.polygon(6) if sample["aperture"] == "hexagon" else Aperture.circle()
    defocus = signed_defocus(disparity.clamp(0, 1), sample["K"], float(sample["d_f"]))
    classical = render_classical(image, defocus, gamma=GAMMA, aperture=aperture, mode="exact")
    neural = render_neural(image, defocus, classical.dilated_defocus, gamma=GAMMA, arnet=arnet, iunet=iunet)
    hybrid = fuse(classical.bokeh, neural.bokeh, neural.error_map).clamp(0, 1)
    classical_img = classical.bokeh.clamp(0, 1)
    p_classical, p_hybrid = metrics(classical_img, gt)[0], metrics(hybrid, gt)[0]
    tag = f"K={sample['K']}, focus {sample['d_f']}"
    panels = [
        (image, f"input ({tag})"),
        (classical_img, f"classical {p_classical:.2f} dB"),
        (hybrid, f"hybrid {p_hybrid:.2f} dB"),
        (gt, "ground truth (Cycles)"),
        (neural.error_map, "error map"),
    ]
    top, left = worst_window(classical_img, gt, ZOOM)
    zoom_names = ["zoom: input", "classical", "hybrid", "ground truth", "error map"]
    rows = []
    for tensor, text in panels:
        picture = to_pil(tensor)
        picture = picture.resize((PANEL_WIDTH, round(picture.height * PANEL_WIDTH / picture.width)), Image.LANCZOS)
        rows.append(label(picture, text, size=13))
    for (tensor, _), text in zip(panels, zoom_names):
        picture = to_pil(tensor[..., top : top + ZOOM, left : left + ZOOM]).resize((PANEL_WIDTH, PANEL_WIDTH), Image.LANCZOS)
        rows.append(label(picture, text, size=13))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=pathlib.Path, default=ROOT / "weights")
    parser.add_argument("--ids", nargs="+", default=list(DEFAULT_IDS), help="bench_dev sample ids")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs" / "images" / "quality_grid.jpg")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    manifest = {s["id"]: s for s in json.loads((BENCH_DEV / "manifest.json").read_text())["samples"]}
    unknown = [i for i in args.ids if i not in manifest]
    if unknown:
        raise SystemExit(f"unknown bench_dev ids {unknown}; see {BENCH_DEV / 'manifest.json'}")
    arnet = load_arnet(args.weights / "arnet.safetensors")
    iunet = load_iunet(args.weights / "iunet.safetensors")
    sheets = []
    with torch.inference_mode():
        for sample_id in args.ids:
            pictures = sample_rows(manifest[sample_id], arnet, iunet)
            frame, zoom = pictures[:5], pictures[5:]
            sheets.append(grid(frame, cols=5))
            sheets.append(grid(zoom, cols=5))
    width = max(s.width for s in sheets)
    height = sum(s.height for s in sheets) + 8 * (len(sheets) - 1)
    out = Image.new("RGB", (width, height), (255, 255, 255))
    y = 0
    for sheet in sheets:
        out.paste(sheet, (0, y))
        y += sheet.height + 8
    save(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

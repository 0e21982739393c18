"""Disparity refinement (``bokehme_core.refine_disparity``) on the path-traced bench_dev scenes.

For every circle-aperture item, the `layered` classical renderer with the default highlight recovery (no
networks) is run with a disparity map before and after refinement, for the exact map and for corrupted maps
(``--corruptions``: ``predicted`` = near side dilated 2 px, Gaussian sigma 2 px, 8-bit, the recipe of
``eval_quality.py --imperfect-disparity``; ``shift`` = the map moved 2 px right and down; ``erode`` = near side
eroded 2 px, then 8-bit). Prints mean PSNR (dB) per (K, focus) cell, one table per map, and writes JSON.

    .venv/bin/python bench/eval_refine.py [--corruptions predicted shift erode] [--stride N] [--json PATH]
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bokehme_core import refine_disparity, render_classical  # noqa: E402
from bokehme_core.defocus import render_inputs  # noqa: E402
from eval_quality import CORRUPTIONS, GAMMA, bench_items, metrics  # noqa: E402


def render(image, disparity, K, focus, aperture):
    lifted, defocus = render_inputs(image, disparity, K, torch.tensor([focus]), recover=True)
    return render_classical(lifted, defocus, gamma=GAMMA, aperture=aperture, mode="layered").bokeh.clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corruptions", nargs="*", default=list(CORRUPTIONS), choices=list(CORRUPTIONS))
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=pathlib.Path, default=ROOT / "runs" / "eval" / "refine.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    maps = ["exact", *args.corruptions]
    psnr = collections.defaultdict(list)  # (map, refined, K, focus) -> [dB]
    for item_id, K, _, image, disparity, gt, focus, aperture in bench_items(None, args.stride, "circle"):
        for name in maps:
            raw = disparity if name == "exact" else CORRUPTIONS[name](disparity)
            for refined in (False, True):
                d = refine_disparity(raw, image) if refined else raw
                value, _ = metrics(render(image, d, K, focus, aperture), gt)
                psnr[(name, refined, K, focus)].append(value)
                print(f"{item_id} {name:9s} refined={refined!s:5s} {value:.2f}", flush=True)
    cells = sorted({(k[2], k[3]) for k in psnr})
    out = {}
    for name in maps:
        print(f"\n{name} map: layered + recovery, mean PSNR dB\n\n| (K, d_f) | raw | refined | refined - raw |\n|---|---|---|---|")
        for K, focus in cells:
            a = sum(psnr[(name, False, K, focus)]) / len(psnr[(name, False, K, focus)])
            b = sum(psnr[(name, True, K, focus)]) / len(psnr[(name, True, K, focus)])
            out[f"{name} K{K} df{focus}"] = {"raw": a, "refined": b}
            print(f"| ({K}, {focus}) | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

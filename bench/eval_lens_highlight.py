"""Highlight lift (lens character) on bench_dev: classical exact with and without
:func:`bokehme_core.defocus.lift_highlights`, mean PSNR per (K, d_f) cell over the six scenes.

Data: ``../shared/bench_dev`` (manifest.json; Blender path-traced ground truth, 960x540, images are
``linear ** (1/2.2)``); circle renders only. Renderer: ``render_classical(mode="exact", gamma=2.2)`` with the
float32 disparity (``disparity_npy``, as bench/eval_quality.py) and ``defocus = K * (d - d_f)``; the lift acts on the 8-bit all-in-focus image first
(``Lens(highlight_threshold=T, highlight_gain=G)``, applied before the renderer), output clamped to [0, 1].
PSNR with data_range 1 on [0, 1] float images.

Every gain in ``--gains`` is one setting for all six scenes (the same for every cell); the table has a column per
gain, the last line the mean over all cells.

Usage: ``nice -n 15 .venv/bin/python bench/eval_lens_highlight.py [--threshold 0.9] [--gains 2 4 8]``.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bokehme_core import render_classical, signed_defocus  # noqa: E402
from bokehme_core.lens import Lens  # noqa: E402

BENCH_DEV = ROOT.parent / "shared" / "bench_dev"
GAMMA = 2.2


def read_rgb(path: pathlib.Path) -> torch.Tensor:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()


def read_disparity(path: pathlib.Path) -> torch.Tensor:
    value = np.load(path).astype(np.float32)
    return torch.from_numpy(value)[None, None].clamp(0, 1).contiguous()


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> float:
    mse = float(((pred.clamp(0, 1) - gt) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=BENCH_DEV)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--gains", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=pathlib.Path, help="write every number here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    manifest = json.loads((args.data / "manifest.json").read_text())
    samples = [s for s in manifest["samples"] if s["aperture"] == "circle"]
    settings = [("none", None)] + [(f"gain {g:g}", Lens(highlight_threshold=args.threshold, highlight_gain=g))
                                   for g in args.gains]
    cells: dict = {}
    start = time.perf_counter()
    inputs: dict = {}
    for sample in samples:
        scene = sample["scene_id"]
        if scene not in inputs:
            inputs = {scene: (read_rgb(args.data / sample["aif"]), read_disparity(args.data / sample["disparity_npy"]))}
        image, disparity = inputs[scene]
        gt = read_rgb(args.data / sample["gt"])
        defocus = signed_defocus(disparity, float(sample["K"]), float(sample["d_f"]))
        key = (int(sample["K"]), float(sample["d_f"]))
        for name, lens in settings:
            lifted = image if lens is None else lens.lift_highlights(image)
            out = render_classical(lifted, defocus, gamma=GAMMA, mode="exact").bokeh
            cells.setdefault(key, {}).setdefault(name, []).append(psnr(out, gt))
        print(f"{sample['id']}: " + ", ".join(f"{n} {cells[key][n][-1]:.2f}" for n, _ in settings)
              + f"  ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    names = [n for n, _ in settings]
    print(f"\n### Highlight lift on bench_dev: classical exact, gamma 2.2, circle, threshold {args.threshold:g} "
          f"(mean PSNR dB over the scenes of each cell)\n")
    print("| (K, d_f) | n | " + " | ".join("no lift" if n == "none" else f"lift, {n}" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for key in sorted(cells):
        row = cells[key]
        print(f"| ({key[0]}, {key[1]:g}) | {len(row['none'])} | "
              + " | ".join(f"{statistics.fmean(row[n]):.2f}" for n in names) + " |")
    overall = {n: statistics.fmean(v for row in cells.values() for v in row[n]) for n in names}
    print("| all cells | " + str(sum(len(r["none"]) for r in cells.values())) + " | "
          + " | ".join(f"{overall[n]:.2f}" for n in names) + " |")
    if args.json:
        args.json.write_text(json.dumps({f"{k[0]}_{k[1]:g}": v for k, v in cells.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

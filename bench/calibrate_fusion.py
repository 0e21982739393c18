"""How much of ARNet's map the default pipeline should trust, measured on held-out synthetic scenes.

The default pipeline fuses ``classical * (1 - w) + neural * w`` with ``w = LAYERED_TRUST * E * gate`` (ARNet's
map times the layered renderer's analytic map, ``bokehme_core.error_map.error_gate``); this script chooses
``LAYERED_TRUST``. This script renders held-out procedural scenes (seeds 96,000,000+, never used
in training or by ``eval_quality.py``'s synth set; thin-lens layered ground truth, 8-bit inputs) through
``render_bokehme`` (highlight recovery off: these scenes' lights are no brighter than white, and lifting them
would make the score about the recovery, not the fusion) once per item and scores the fusion for several scales ``s``
of that weight (``w = clamp(s * E * gate, 0, 1)``; ``s = 1`` trusts ARNet's map fully, ``s = 0`` is the
layered render alone), with the exact disparity and with the corruptions of ``eval_quality.py``.
Prints mean PSNR per (disparity, K, focus) cell and scale and the largest scale at which no exact-map cell
loses more than 0.1 dB, and writes everything to ``--json``. The choice is made on these synthetic scenes;
``--set bench`` prints the same table for ``../shared/bench_dev`` (circle), to report, never to choose.

Usage:
  nice -n 10 .venv/bin/python bench/calibrate_fusion.py --arnet-checkpoint runs/arnet/latest.pt --scenes 4
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bokehme_core import render_bokehme  # noqa: E402
from bokehme_core.error_map import LAYERED_TRUST  # noqa: E402
from eval_quality import (  # noqa: E402
    CORRUPTIONS, GAMMA, bench_items, load_arnet_checkpoint, metrics, synth_ground_truth,
)

logger = logging.getLogger("calibrate_fusion")
SEED = 96_000_000
SIZE = (256, 384)
KS = (10, 20, 30)
FOCI = (0.1, 0.5, 0.9)
SCALES = (0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0)
TOLERANCE_DB = 0.1

def items(scenes: int, cache: pathlib.Path):
    """(name, K, focus, image, disparity, gt) for every held-out scene and (K, focus) cell."""
    from bokehme_core.synth.scene import make_scene

    cache.mkdir(parents=True, exist_ok=True)
    for i in range(scenes):
        seed = SEED + i
        scene = make_scene(*SIZE, seed, objects=(3, 6), highlights=(15, 40))
        image = (scene.image.clamp(0, 1) * 255).round() / 255
        for K in KS:
            for focus in FOCI:
                gt = synth_ground_truth(scene, K, focus, cache / f"gt_{seed}_K{K}_f{focus}.npy")
                yield f"synth_{seed}", K, focus, image, scene.disparity, gt

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arnet-checkpoint", type=pathlib.Path, default=None,
                        help="candidate ARNet (train_arnet.py latest.pt); default: the bundled weights")
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--set", choices=("synth", "bench"), default="synth",
                        help="synth: the held-out calibration scenes (select here); bench: ../shared/bench_dev, circle "
                             "(report only: never choose a constant on it)")
    parser.add_argument("--maps", nargs="+", default=["exact", *CORRUPTIONS], choices=["exact", *CORRUPTIONS])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=pathlib.Path, default=ROOT / "runs" / "eval" / "calibrate_fusion.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    from bokehme_core.weights import load_bundled_models

    arnet, iunet = load_bundled_models("cpu")
    if args.arnet_checkpoint is not None:
        arnet = load_arnet_checkpoint(args.arnet_checkpoint)
    rows = []
    if args.set == "synth":
        data = items(args.scenes, ROOT / "runs" / "eval" / "calib_gt")
    else:
        data = ((name, K, focus, image, disparity, gt)
                for name, K, _, image, disparity, gt, focus, _ in bench_items(None, 1, "circle"))
    for name, K, focus, image, disparity, gt in data:
        for kind in args.maps:
            d = disparity if kind == "exact" else CORRUPTIONS[kind](disparity)
            t = time.time()
            result = render_bokehme(image, d, K=K, focus=focus, gamma=GAMMA, arnet=arnet, iunet=iunet,
                                    recover_highlights=args.set == "bench")
            psnr = {}
            for s in SCALES:
                w = (s * result.error_map / LAYERED_TRUST).clamp(0, 1)  # s = 1: ARNet's map times the layered map
                fused = (result.classical * (1 - w) + result.neural * w).clamp(0, 1)
                psnr[str(s)] = round(metrics(fused, gt)[0], 3)
            rows.append({"item": name, "map": kind, "K": K, "focus": focus, "psnr": psnr})
            logger.info("%s %s K%d f%.1f %s (%.1f s)", name, kind, K, focus, psnr, time.time() - t)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"arnet_checkpoint": str(args.arnet_checkpoint), "rows": rows}, indent=1))
    print(format_table(rows))
    if "exact" in args.maps:
        print(f"largest scale with no exact-map cell more than {TOLERANCE_DB} dB below s = 0: {choose_scale(rows)}")

def choose_scale(rows: list) -> float:
    """The largest scale of :data:`SCALES` at which the mean PSNR of no exact-map (K, focus) cell is more than
    :data:`TOLERANCE_DB` below the layered render alone (``s = 0``)."""
    exact = [r for r in rows if r["map"] == "exact"]
    cells = sorted({(r["K"], r["focus"]) for r in exact})
    ok = [0.0]
    for s in SCALES[1:]:
        worst = min(np.mean([r["psnr"][str(s)] - r["psnr"]["0.0"] for r in exact if (r["K"], r["focus"]) == c])
                    for c in cells)
        if worst < -TOLERANCE_DB:
            break
        ok.append(s)
    return ok[-1]

def format_table(rows: list) -> str:
    cols = list(rows[0]["psnr"])
    lines = ["| map | (K, focus) | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    keys = sorted({(r["map"], r["K"], r["focus"]) for r in rows})
    for kind, K, focus in keys:
        cell = [r for r in rows if (r["map"], r["K"], r["focus"]) == (kind, K, focus)]
        means = [np.mean([r["psnr"][c] for r in cell]) for c in cols]
        lines.append(f"| {kind} | ({K}, {focus}) | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    for kind in sorted({r["map"] for r in rows}):
        cell = [r for r in rows if r["map"] == kind and r["K"] >= 20]
        means = [np.mean([r["psnr"][c] for r in cell]) for c in cols]
        lines.append(f"| {kind} | K >= 20 | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    return "\n".join(lines)

if __name__ == "__main__":
    main()

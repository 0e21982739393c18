"""Write the bundled demo example ``assets/demo/image.png`` + ``assets/demo/disparity.png`` (deterministic).

The scene is made by our own procedural generator (``bokehme_core.synth.scene.make_scene``): textured,
slightly slanted background with small bright highlights (they become bokeh balls), several objects at
different depths including thin strands and twigs. image.png: 8-bit RGB; disparity.png: 16-bit gray,
value / 65535 in [0, 1], 1 = near.

Usage: .venv/bin/python training/make_demo_assets.py [--out assets/demo] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bokehme_core.synth.scene import make_scene  # noqa: E402

DEMO_SEED = 7
DEMO_SIZE = (512, 768)  # H, W


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "assets" / "demo")
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    args = parser.parse_args()
    scene = make_scene(*DEMO_SIZE, args.seed, objects=(4, 6), highlights=(40, 80))
    args.out.mkdir(parents=True, exist_ok=True)
    image = (scene.image[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    Image.fromarray(image).save(args.out / "image.png", optimize=True)
    disparity = (scene.disparity[0, 0].numpy() * 65535.0).round().clip(0, 65535).astype(np.uint16)
    Image.fromarray(disparity).save(args.out / "disparity.png", optimize=True)
    info = {
        "generator": "bokehme_core.synth.scene.make_scene",
        "seed": args.seed,
        "size_hw": list(DEMO_SIZE),
        "objects": [4, 6],
        "highlights": [40, 80],
        "suggested": {"K": 30, "focus": round(float(scene.layers[-1].disparity.mean()), 3), "gamma": 2.2},
    }
    (args.out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.out}/image.png, disparity.png, info.json")


if __name__ == "__main__":
    main()

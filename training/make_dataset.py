"""Generate training / held-out data for ARNet and IUNet: shards of synthetic scenes with ground-truth bokeh.

Each sample: a procedural layered scene (``bokehme_core.synth.scene.make_scene``) at SIZE x SIZE px, lens
controls drawn as in the paper (K so that blur radii reach ~12 px, focus 0.05..1, gamma 1..5 with 2.2
favoured), the ground truth from the thin-lens layered renderer (correct partial occlusion), and what the
networks see: the all-in-focus image, a degraded disparity (blur / dilation / erosion / misalignment / warp /
8-bit quantisation, :func:`bokehme_core.synth.scene.augment_disparity`), the classical renders with that
disparity (``classical``: official exact scatter; ``classical_layered``: the occlusion-aware layered mode, so
that the networks can be trained against either), its dilated defocus, and the analytic target error map E*
(paper Eq. 5, beta from absolute radii) from that disparity.

Shards ``shard_{index:05d}.npz`` (float16 images) are written atomically; re-running skips existing shards,
so the generator is resumable and can run beside training (which picks up new shards as they appear).
Deterministic: shard i holds scenes with seeds ``base_seed + i * per_shard + j``.

Usage:
  nice -n 15 .venv/bin/python training/make_dataset.py --out /work/main/runs/data/train --shards 200
  nice -n 15 .venv/bin/python training/make_dataset.py --out /work/main/runs/data/test --shards 4 --base-seed 90000000
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bokehme_core import render_classical, signed_defocus  # noqa: E402
from bokehme_core.error_map import analytic_error_map  # noqa: E402
from bokehme_core.synth.lens import render_layers  # noqa: E402
from bokehme_core.synth.scene import augment_disparity, make_scene, sample_render_params  # noqa: E402

logger = logging.getLogger("make_dataset")

#: Data recipe, recorded in weights/manifest.json by export_weights.py.
RECIPE = {
    "generator": "bokehme_core.synth.scene.make_scene + bokehme_core.synth.lens.render_layers (thin lens, layered)",
    "size": 128,
    "renders_per_scene": 2,
    "K_range": [4.0, 13.0],
    "focus_range": [0.05, 1.0],
    "gamma": "2.2 with p=0.4 else U(1,5)",
    "aperture": "circle, lattice spacing 1 px at the largest radius",
    "disparity_augmentation": ("p=0.8: with p=0.85 either (1/4) near side dilated 1-3 px + gaussian sigma 1.5-2.5 px, "
                               "or 1-3 of gaussian blur (0.5-3 px), dilation/erosion (3-7 px), shift (<=3 px) or "
                               "smooth warp (1-3 px), +-5% ramp; then p=0.5 8-bit quantisation"),
    "classical": "render_classical(mode='exact') with the degraded disparity",
    "classical_layered": "render_classical(mode='layered') with the degraded disparity",
    "error_target": "analytic_error_map(degraded disparity, variant='eq5', max_work_radius=16), beta from |r| (Eq. 4)",
}


def make_sample(seed: int, render_index: int, size: int, gt_backend: str = "auto", scene=None) -> dict:
    """One training sample (numpy float16/float32 arrays, no batch dimension); ``scene`` = ``make_scene(size,
    size, seed)`` when the caller already has it (the renders of one scene share it)."""
    scene = make_scene(size, size, seed) if scene is None else scene
    rng = np.random.default_rng([seed, render_index, 12345])
    params = sample_render_params(rng, tuple(RECIPE["K_range"]))
    gt = render_layers(scene.layers, params.K, params.focus, params.gamma, backend=gt_backend)
    disparity = augment_disparity(scene.disparity, rng)
    defocus_px = signed_defocus(disparity, params.K, params.focus)
    classical = render_classical(scene.image, defocus_px, gamma=params.gamma, mode="exact")
    layered = render_classical(scene.image, defocus_px, gamma=params.gamma, mode="layered")
    error_target = analytic_error_map(disparity, params.K, params.focus, max_work_radius=16)
    return {
        "image": scene.image[0].numpy().astype(np.float16),
        "disparity": disparity[0].numpy().astype(np.float16),
        "gt": gt[0].clamp(0, 1).numpy().astype(np.float16),
        "classical": classical.bokeh[0].clamp(0, 1).numpy().astype(np.float16),
        "classical_layered": layered.bokeh[0].clamp(0, 1).numpy().astype(np.float16),
        "dilated_px": classical.dilated_defocus[0].numpy().astype(np.float16),
        "error_target": error_target[0].numpy().astype(np.float16),
        "params": np.array([params.K, params.focus, params.gamma], np.float32),
    }


def write_shard(path: pathlib.Path, samples: list) -> None:
    arrays = {key: np.stack([s[key] for s in samples]) for key in samples[0]}
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--scenes-per-shard", type=int, default=8)
    parser.add_argument("--base-seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=RECIPE["size"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gt-backend", choices=("auto", "numba", "torch"), default="auto",
                        help="ground-truth renderer backend (torch = the slow reference, for measurements)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for shard in range(args.shards):
        path = args.out / f"shard_{shard:05d}.npz"
        if path.exists():
            continue
        start = time.time()
        samples = []
        for j in range(args.scenes_per_shard):
            seed = args.base_seed + shard * args.scenes_per_shard + j
            scene = make_scene(args.size, args.size, seed)
            for r in range(RECIPE["renders_per_scene"]):
                samples.append(make_sample(seed, r, args.size, args.gt_backend, scene=scene))
        write_shard(path, samples)
        elapsed = time.time() - start
        logger.info("wrote %s (%d samples, %.1f s, %.3f samples/s)", path.name, len(samples), elapsed,
                    len(samples) / max(elapsed, 1e-9))


if __name__ == "__main__":
    main()

"""Generate training / held-out data for ARNet and IUNet: shards of synthetic scenes with ground-truth bokeh.

Each sample: a procedural layered scene (``bokehme_core.synth.scene.make_scene``) at SIZE x SIZE px, lens
controls drawn as in the paper (K so that blur radii reach ~12 px, focus 0.05..1, gamma 1..5 with 2.2
favoured), the ground truth from the thin-lens layered renderer (correct partial occlusion), and what the
networks see: the all-in-focus image, a degraded disparity (blur / dilation / erosion / misalignment / warp /
8-bit quantisation, :func:`bokehme_core.synth.scene.augment_disparity`), the classical renders with that
disparity (``classical``: official exact scatter; ``classical_layered``: the occlusion-aware layered mode;
``classical_layered_recovered``: the layered mode on ``recovered``, the image after the default highlight
recovery, i.e. exactly the default pipeline's classical render; the networks can be trained against each), its
dilated defocus, and the analytic target error map E*
(paper Eq. 5, beta from absolute radii) from that disparity.

Shards ``shard_{index:05d}.npz`` (float16 images) are written atomically (a temporary ``.tmp.npz`` renamed);
re-running skips existing shards and rewrites a temporary file left by an interrupted run, so the generator is
resumable and can run beside training (which picks up new shards as they appear). Deterministic: shard i holds
scenes with seeds ``base_seed + i * per_shard + j``, and the same arguments give byte-identical shards (tested).

The ground truth comes from the compiled thin-lens renderer (``render_layers`` with numba; ``--gt-backend
torch`` = the slow torch reference, same values within float32 rounding); each scene is made once for its
renders. Speed: training/README.md.

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
import zipfile

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bokehme_core import render_classical, signed_defocus  # noqa: E402
from bokehme_core.defocus import render_inputs  # noqa: E402
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
    "hdr_lights": "p=0.5 per highlight: a light brighter than white, gain log-uniform in [1.1, 20] (image clipped)",
    "disparity_augmentation": ("p=0.8: with p=0.85 either (1/2) near side dilated 1-3 px + gaussian sigma 1.5-2.5 px, "
                               "or 1-3 of gaussian blur (0.5-3 px), dilation/erosion (3-7 px), shift (<=3 px) or "
                               "smooth warp (1-3 px), +-5% ramp; then p=0.5 8-bit quantisation"),
    "classical": "render_classical(mode='exact') with the degraded disparity",
    "classical_layered": "render_classical(mode='layered') with the degraded disparity",
    "recovered": "the pipeline's default input: render_inputs(image, degraded disparity, K, focus, recover=True)",
    "classical_layered_recovered": "render_classical(recovered, mode='layered'): the default pipeline's classical render",
    "error_target": "analytic_error_map(degraded disparity, variant='eq5', max_work_radius=16), beta from |r| (Eq. 4)",
}


#: probability that a highlight is a light brighter than white (make_scene(hdr_lights=...))
HDR_LIGHTS = 0.5
#: share of the degraded disparities made with the "predicted map" recipe (augment_disparity(predicted_share=...))
PREDICTED_SHARE = 0.5


def make_sample(seed: int, render_index: int, size: int, gt_backend: str = "auto", scene=None) -> dict:
    """One training sample (numpy float16/float32 arrays, no batch dimension); ``scene`` = ``make_scene(size,
    size, seed)`` when the caller already has it (the renders of one scene share it)."""
    scene = make_scene(size, size, seed, hdr_lights=HDR_LIGHTS) if scene is None else scene
    rng = np.random.default_rng([seed, render_index, 12345])
    params = sample_render_params(rng, tuple(RECIPE["K_range"]))
    gt = render_layers(scene.layers, params.K, params.focus, params.gamma, backend=gt_backend)
    disparity = augment_disparity(scene.disparity, rng, predicted_share=PREDICTED_SHARE)
    defocus_px = signed_defocus(disparity, params.K, params.focus)
    classical = render_classical(scene.image, defocus_px, gamma=params.gamma, mode="exact")
    layered = render_classical(scene.image, defocus_px, gamma=params.gamma, mode="layered")
    recovered, _ = render_inputs(scene.image, disparity, params.K, params.focus, recover=True)
    layered_recovered = render_classical(recovered, defocus_px, gamma=params.gamma, mode="layered")
    error_target = analytic_error_map(disparity, params.K, params.focus, max_work_radius=16)
    return {
        "image": scene.image[0].numpy().astype(np.float16),
        "disparity": disparity[0].numpy().astype(np.float16),
        "gt": gt[0].clamp(0, 1).numpy().astype(np.float16),
        "classical": classical.bokeh[0].clamp(0, 1).numpy().astype(np.float16),
        "classical_layered": layered.bokeh[0].clamp(0, 1).numpy().astype(np.float16),
        "recovered": recovered[0].numpy().astype(np.float16),
        "classical_layered_recovered": layered_recovered.bokeh[0].clamp(0, 1).numpy().astype(np.float16),
        "dilated_px": classical.dilated_defocus[0].numpy().astype(np.float16),
        "error_target": error_target[0].numpy().astype(np.float16),
        "params": np.array([params.K, params.focus, params.gamma], np.float32),
    }


def write_shard(path: pathlib.Path, samples: list) -> None:
    """Write the samples as one ``.npz`` (read with ``np.load``), atomically (a temporary file renamed), with
    fixed zip timestamps: the same samples give the same bytes (``np.savez`` stamps the current time)."""
    arrays = {key: np.stack([s[key] for s in samples]) for key in samples[0]}
    tmp = path.with_name(path.stem + ".tmp.npz")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(value), allow_pickle=False)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--scenes-per-shard", type=int, default=8)
    parser.add_argument("--base-seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=RECIPE["size"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1,
                        help="split the shards over this many processes writing to the same --out")
    parser.add_argument("--worker", type=int, default=0, help="this process's index (0 .. --workers - 1): "
                        "it writes the shards whose index modulo --workers is this")
    parser.add_argument("--gt-backend", choices=("auto", "numba", "torch"), default="auto",
                        help="ground-truth renderer backend (torch = the slow reference, for measurements)")
    args = parser.parse_args()
    if args.workers < 1 or not 0 <= args.worker < args.workers:
        parser.error(f"--worker must be in 0 .. --workers - 1 (got --worker {args.worker}, --workers {args.workers})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    # numba's OpenMP pool, once started with more threads than used, slows every later torch op of this
    # process 5-50x (measured: a (1, 3, 128, 128) clamp + pow 0.14 ms -> 1.7-8.6 ms); a pool of --threads
    # threads does not. Set before the first kernel imports numba (an explicit setting wins).
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    args.out.mkdir(parents=True, exist_ok=True)
    for shard in range(args.worker, args.shards, args.workers):
        path = args.out / f"shard_{shard:05d}.npz"
        if path.exists():
            continue
        start, cpu_start = time.time(), time.process_time()
        samples = []
        for j in range(args.scenes_per_shard):
            seed = args.base_seed + shard * args.scenes_per_shard + j
            scene = make_scene(args.size, args.size, seed, hdr_lights=HDR_LIGHTS)
            for r in range(RECIPE["renders_per_scene"]):
                samples.append(make_sample(seed, r, args.size, args.gt_backend, scene=scene))
        write_shard(path, samples)
        elapsed, cpu = time.time() - start, time.process_time() - cpu_start
        logger.info("wrote %s (%d samples, %.1f s, %.3f samples/s; CPU %.1f s, %.3f samples per CPU second)",
                    path.name, len(samples), elapsed, len(samples) / max(elapsed, 1e-9), cpu,
                    len(samples) / max(cpu, 1e-9))


if __name__ == "__main__":
    main()

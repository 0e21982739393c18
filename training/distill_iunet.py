"""Distil a narrow IUNet from a wide one: the same refinement at a fraction of the cost.

IUNet runs at full resolution, so its width sets most of the pipeline's time (a 64-channel IUNet is ~13x the
work of a 16-channel one). This trains a narrow student to reproduce a teacher IUNet (default: the bundled one)
on the inputs the pipeline gives it: procedural scenes (``bokehme_core.synth.scene.make_scene``, 128 px), random
K / focus / gamma, ARNet's (default: the bundled one) low-resolution bokeh at a random adaptive scale as the
coarse input, everything staged by ``bokehme_core.neural.stages`` itself. No ground truth is rendered: the
target is the teacher's output. Loss: L1 + gradient L1, weighted by the pipeline's IUNet blend mask (+0.05),
the region where IUNet's result is used.

Resumable (``runs/iunet_distill/latest.pt`` every 200 steps; the same command continues), deterministic for its
seeds; the scene pool is cached in the run folder. Export with ``export_weights.py --iunet-run``.

    nice -n 15 .venv/bin/python training/distill_iunet.py --width 16 --steps 6000 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import random

import torch

from common import RUNS, RunLog, gradient_l1, pick_device, resume, start_run

from bokehme_core.neural.iunet import IUNet
from bokehme_core.neural.stages import adaptive_scale, arnet_stage, blend_mask, gamma_norm, network_defocus
from bokehme_core.scatter.dilate import dilate_defocus
from bokehme_core.synth.scene import make_scene
from bokehme_core.weights import load_bundled_models, load_iunet
from train_iunet import identity_init

logger = logging.getLogger("distill_iunet")


def scene_pool(path: pathlib.Path, count: int, size: int, base_seed: int) -> dict:
    """``count`` procedural scenes (image (N,3,S,S), disparity (N,1,S,S)), cached in ``path``."""
    if path.exists():
        pool = torch.load(path, map_location="cpu", weights_only=True)
        if pool["image"].shape[0] >= count:
            return pool
    images, disparities = [], []
    for i in range(count):
        scene = make_scene(size, size, base_seed + i)
        images.append(scene.image)
        disparities.append(scene.disparity)
        if (i + 1) % 50 == 0:
            logger.info("scenes %d / %d", i + 1, count)
    pool = {"image": torch.cat(images), "disparity": torch.cat(disparities)}
    torch.save(pool, path)
    return pool


@torch.no_grad()
def sample(pool: dict, indices: list, rng: random.Random, arnet, teacher) -> dict:
    """One batch: inputs staged as in the pipeline, the teacher's refinement as the target."""
    image = pool["image"][indices]
    disparity = pool["disparity"][indices]
    n = image.shape[0]
    K = torch.tensor([rng.uniform(4.0, 45.0) for _ in range(n)]).view(-1, 1, 1, 1)
    focus = torch.tensor([rng.uniform(0.05, 1.0) for _ in range(n)]).view(-1, 1, 1, 1)
    gamma = torch.tensor([2.2 if rng.random() < 0.4 else rng.uniform(1.0, 5.0) for _ in range(n)])
    defocus_px = K * (disparity - focus)
    dilated = dilate_defocus(defocus_px)
    coarse = []
    for b in range(n):  # one adaptive scale per image, as render_bokehme; sometimes coarser (earlier passes)
        scale = adaptive_scale(defocus_px[b]) * (1.0 + 0.5 * rng.random())
        coarse.append(arnet_stage(arnet, image[b : b + 1], defocus_px[b : b + 1], float(gamma[b]), scale=scale)[0])
    defocus = network_defocus(defocus_px).clamp(-1, 1)
    g = gamma_norm(gamma)
    targets = [teacher(image[b : b + 1], defocus[b : b + 1], coarse[b], g[b : b + 1]) for b in range(n)]
    return {"image": image, "defocus": defocus, "coarse": coarse, "gamma": g, "target": torch.cat(targets),
            "weight": blend_mask(network_defocus(dilated)) + 0.05}


def sample_bank(path: pathlib.Path, pool: dict, count: int, seed: int, arnet, teacher) -> list:
    """``count`` single-image samples (dicts as :func:`sample` returns, batch 1), drawn once and cached in
    ``path``: the teacher and ARNet cost far more than a student step, so training re-uses them."""
    if path.exists():
        bank = torch.load(path, map_location="cpu", weights_only=True)
        if len(bank) >= count:
            return bank[:count]
    rng = random.Random(seed)
    n_scenes = pool["image"].shape[0]
    bank = []
    for i in range(count):
        item = sample(pool, [rng.randrange(n_scenes)], rng, arnet, teacher)
        item["coarse"] = item["coarse"][0]
        bank.append(item)
        if (i + 1) % 250 == 0:
            logger.info("samples %d / %d", i + 1, count)
    torch.save(bank, path)
    return bank


def collate(items: list, rng: random.Random) -> dict:
    """A batch from bank items, each flipped at random (horizontally / vertically, the same for all maps)."""
    out = {"image": [], "defocus": [], "coarse": [], "gamma": [], "target": [], "weight": []}
    for item in items:
        dims = [d for d, flip in ((-1, rng.random() < 0.5), (-2, rng.random() < 0.5)) if flip]
        for key in out:
            value = item[key]
            out[key].append(value.flip(dims) if dims and value.ndim == 4 else value)
    batch = {k: torch.cat(v) for k, v in out.items() if k != "coarse"}
    batch["coarse"] = out["coarse"]
    return batch


def losses(student: IUNet, batch: dict) -> tuple:
    out = torch.cat([student(batch["image"][b : b + 1], batch["defocus"][b : b + 1], batch["coarse"][b],
                             batch["gamma"][b : b + 1]) for b in range(batch["image"].shape[0])])
    weight, target = batch["weight"], batch["target"]
    l_l1 = ((out - target).abs() * weight).mean()
    l_grad = gradient_l1(out, target, weight)
    return l_l1 + l_grad, {"l_l1": l_l1.item(), "l_grad": l_grad.item()}, out


@torch.no_grad()
def validate(student: IUNet, val: list) -> dict:
    """PSNR of the student against the teacher inside the blend mask (> 0.55), on fixed validation batches."""
    student.eval()
    total, count = 0.0, 0
    for batch in val:
        _, _, out = losses(student, batch)
        mask = (batch["weight"] > 0.55).float()
        mse = float((((out.clamp(0, 1) - batch["target"].clamp(0, 1)) ** 2) * mask).sum() / (mask.sum() * 3 + 1e-6))
        total += 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()
        count += 1
    student.train()
    return {"val_psnr_vs_teacher": total / max(count, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=pathlib.Path, default=RUNS / "iunet_distill")
    parser.add_argument("--width", type=int, default=16, help="student IUNet middle channels")
    parser.add_argument("--teacher", type=pathlib.Path, default=None, help="teacher IUNet weights (default: bundled)")
    parser.add_argument("--scenes", type=int, default=400)
    parser.add_argument("--samples", type=int, default=3000, help="size of the cached bank of teacher samples")
    parser.add_argument("--val-scenes", type=int, default=24, help="held-out scenes (a multiple of 8)")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--val-every", type=int, default=250)
    parser.add_argument("--ckpt-every", type=int, default=200)
    args = parser.parse_args()
    start_run(args)
    device = pick_device(args.device)
    arnet, bundled_iunet = load_bundled_models("cpu")
    teacher = load_iunet(args.teacher) if args.teacher else bundled_iunet
    arnet.requires_grad_(False), teacher.requires_grad_(False)
    pool = scene_pool(args.run / "scenes.pt", args.scenes, 128, base_seed=50_000_000)
    val_pool = scene_pool(args.run / "val_scenes.pt", args.val_scenes, 128, base_seed=60_000_000)
    val_rng = random.Random(12345)
    val = [sample(val_pool, list(range(i, min(i + 8, args.val_scenes))), val_rng, arnet, teacher)
           for i in range(0, args.val_scenes, 8)]
    bank = sample_bank(args.run / "bank.pt", pool, args.samples, args.seed, arnet, teacher)

    student = IUNet(middle_channels=args.width)
    identity_init(student)
    optimizer = torch.optim.Adam(student.parameters(), lr=args.lr)
    step = resume(args.run, student, optimizer, args.width, args.lr)
    student.to(device).train()
    log = RunLog(args, bank, val, lambda _: validate(student, val), ["l_l1", "l_grad"],
                 ["val_psnr_vs_teacher"], f"IUNet-{args.width} distilled")
    while step < args.steps:
        rng = random.Random(args.seed * 1_000_003 + step)
        batch = collate([bank[rng.randrange(len(bank))] for _ in range(args.batch)], rng)
        total, parts, _ = losses(student, batch)
        step = log.optimize(step, student, optimizer, total, parts)


if __name__ == "__main__":
    main()

"""Train IUNet (paper section 3.2) on our synthetic shards; resumable from the latest checkpoint.

IUNet refines a coarse bokeh at twice its resolution. The paper trains it with ARNet frozen (the coarse
input is ARNet's output). Here, so that IUNet can train at the same time as ARNet on a 2-core machine, the
coarse input is the ground truth at half resolution (area downsampling) degraded towards the classical
render by a random amount (``coarse = lerp(gt_half, classical_half, u)``, u ~ U(0, 0.5), plus noise of
std 0.01): IUNet learns to upsample a nearly-right coarse bokeh without trusting it blindly. This is a
deliberate deviation from the paper (teacher forcing), recorded in weights/manifest.json.

Loss: L1 + gradient-L1 against the ground truth, weighted by the pipeline's IUNet blend mask
(``|dilated defocus| < 10 px``, blurred) + 0.05 (IUNet's output is only used where the mask is high).

Usage:
  nice -n 15 .venv/bin/python training/train_iunet.py --data runs/data/train --width 64 --steps 100000
Stop any time; re-running resumes from ``--run``/latest.pt.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import random
import time

import torch
import torch.nn.functional as F

from common import RUNS, ShardPool, append_csv, gradient_l1, network_inputs, plot_curves, resume
from common import DEFOCUS_SCALE, save_checkpoint

from bokehme_core.models.iunet import IUNet
from bokehme_core.pipeline import blend_mask

logger = logging.getLogger("train_iunet")


def identity_init(model: IUNet, scale: float = 0.1) -> None:
    """Start IUNet as "nearest-neighbour upsampling of the coarse input": conv0 copies the 3 coarse channels
    (input channels 16..18, after the 16 space-to-depth image+defocus channels) into body channels 0..2
    (ELU keeps positive values), the residual blocks start near identity, and conv1 writes body channel c
    to the 4 sub-pixel outputs of colour c (pixel-shuffle channel order c*4 + k). All other weights keep
    their random initialisation scaled by ``scale``, so training starts from a sensible upsampler."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.mul_(scale)
                module.bias.zero_()
        conv0, conv1 = model.conv0.conv, model.conv1.conv
        for c in range(3):
            conv0.weight[c].zero_()
            conv0.weight[c, 16 + c, 1, 1] = 1.0
            for k in range(4):
                conv1.weight[c * 4 + k].zero_()
                conv1.weight[c * 4 + k, c, 1, 1] = 1.0


def coarse_input(batch: dict, generator: torch.Generator | None, degrade: bool) -> torch.Tensor:
    gt_half = F.interpolate(batch["gt"], scale_factor=0.5, mode="area")
    if not degrade:
        return gt_half
    classical_half = F.interpolate(batch["classical"], scale_factor=0.5, mode="area")
    u = torch.rand(gt_half.shape[0], 1, 1, 1, generator=generator) * 0.5
    noise = torch.randn(gt_half.shape, generator=generator) * 0.01
    return (gt_half * (1 - u) + classical_half * u + noise).clamp(0, 1)


def losses(model: IUNet, batch: dict, generator: torch.Generator | None = None, degrade: bool = True) -> tuple:
    image, defocus, gamma_norm = network_inputs(batch)
    coarse = coarse_input(batch, generator, degrade)
    refined = model(image, defocus.clamp(-1, 1), coarse, gamma_norm)
    weight = blend_mask(batch["dilated_px"] / DEFOCUS_SCALE) + 0.05
    gt = batch["gt"]
    l_l1 = ((refined - gt).abs() * weight).mean()
    l_grad = gradient_l1(refined, gt, weight)
    return l_l1 + l_grad, {"l_l1": l_l1.item(), "l_grad": l_grad.item()}, refined, weight


@torch.no_grad()
def validate(model: IUNet, pool: ShardPool, indices: list) -> dict:
    """PSNR inside the blend mask (> 0.5) of the refined result and of the bilinear upsampled coarse input."""
    model.eval()
    out = {"val_psnr_refined": 0.0, "val_psnr_bilinear": 0.0}
    for start in range(0, len(indices), 8):
        batch = pool.batch(indices[start : start + 8], augment=False)
        _, _, refined, weight = losses(model, batch, degrade=False)
        coarse = F.interpolate(coarse_input(batch, None, False), size=refined.shape[-2:], mode="bilinear")
        mask = (weight > 0.55).float()
        for i in range(refined.shape[0]):
            m = mask[i]
            denom = float(m.sum()) * 3 + 1e-6
            for key, pred in (("val_psnr_refined", refined[i]), ("val_psnr_bilinear", coarse[i])):
                mse = float((((pred.clamp(0, 1) - batch["gt"][i]) ** 2) * m).sum()) / denom
                out[key] += 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item() / len(indices)
    model.train()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=pathlib.Path, default=RUNS / "data" / "train")
    parser.add_argument("--val-data", type=pathlib.Path, default=RUNS / "data" / "test")
    parser.add_argument("--run", type=pathlib.Path, default=RUNS / "iunet")
    parser.add_argument("--width", type=int, default=64, help="IUNet middle channels (official 64)")
    parser.add_argument("--steps", type=int, default=100000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=80)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init", choices=["random", "identity"], default="identity",
                        help="identity: start as nearest upsampling of the coarse input (see identity_init)")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--val-every", type=int, default=500)
    parser.add_argument("--ckpt-every", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.run.mkdir(parents=True, exist_ok=True)

    model = IUNet(middle_channels=args.width)
    if args.init == "identity":
        identity_init(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    step = resume(args.run, model, optimizer, args.width, args.lr)

    pool = ShardPool(args.data)
    val_pool = ShardPool(args.val_data) if args.val_data.exists() else None
    while len(pool) < args.batch:
        time.sleep(30)
        pool.refresh()
    model.train()
    running: dict = {}
    t0 = time.time()
    while step < args.steps:
        if step % 100 == 0:
            pool.refresh()
        rng = random.Random(args.seed * 1_000_003 + step)
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        indices = [rng.randrange(len(pool)) for _ in range(args.batch)]
        batch = pool.batch(indices, rng=rng, crop=args.crop)
        total, parts, _, _ = losses(model, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        step += 1
        for k, v in {"loss": total.item(), **parts}.items():
            running[k] = running.get(k, 0.0) + v
        if step % args.log_every == 0:
            row = {"step": step, "time_s": round(time.time() - t0, 1), "samples": len(pool)}
            row.update({k: round(v / args.log_every, 6) for k, v in running.items()})
            row.update({"val_psnr_refined": "", "val_psnr_bilinear": ""})
            if val_pool is not None and len(val_pool) and step % args.val_every == 0:
                val = validate(model, val_pool, list(range(min(len(val_pool), 48))))
                row.update({k: round(v, 3) for k, v in val.items()})
                logger.info("step %d val %s", step, val)
            append_csv(args.run / "log.csv", row)
            running = {}
        if step % args.ckpt_every == 0 or step == args.steps:
            save_checkpoint(
                args.run / "latest.pt",
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "width": args.width},
            )
            plot_curves(args.run / "log.csv", args.run / "curves.png", ["loss", "l_l1", "l_grad"], "IUNet train")
            plot_curves(
                args.run / "log.csv", args.run / "val.png", ["val_psnr_refined", "val_psnr_bilinear"],
                "IUNet validation PSNR in the blend mask (dB)",
            )
            logger.info("step %d loss %.4f (%d samples, %.0f s)", step, total.item(), len(pool), time.time() - t0)


if __name__ == "__main__":
    main()

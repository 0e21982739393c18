"""Train ARNet (paper section 3.2) on our synthetic shards; resumable from the latest checkpoint.

Loss (paper): L1 + gradient-L1 on the fused result ``classical * (1 - E) + neural * E`` and on the neural
result, plus 0.1 * BCE between the predicted error map E and the analytic target E* (Eq. 5).
Adam; deterministic seeds (the batch order depends only on the seed and the step).

Outputs in ``--run`` (default runs/arnet): ``latest.pt`` (model, optimiser, step), ``log.csv`` (training
losses every --log-every steps, validation PSNR every --val-every steps), ``curves.png``.

Usage:
  nice -n 15 .venv/bin/python training/train_arnet.py --data runs/data/train --width 64 --steps 100000
Stop it any time (kill <pid>); re-running the same command resumes.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import random
import time

import torch
import torch.nn.functional as F

from common import RUNS, ShardPool, append_csv, gradient_l1, network_inputs, pick_device, plot_curves, psnr
from common import resume, save_checkpoint, zero_blur

from bokehme_core.neural.arnet import ARNet

logger = logging.getLogger("train_arnet")


def losses(model: ARNet, batch: dict, bce_weight: float = 0.1) -> tuple:
    image, defocus, gamma_norm = network_inputs(batch)
    neural, error = model(image, defocus, gamma_norm)
    gt, classical = batch["gt"], batch["classical"]
    fused = classical * (1 - error) + neural * error
    l_fused = F.l1_loss(fused, gt) + gradient_l1(fused, gt)
    l_neural = F.l1_loss(neural, gt) + gradient_l1(neural, gt)
    l_error = F.binary_cross_entropy(error.clamp(1e-6, 1 - 1e-6), batch["error_target"])
    total = l_fused + l_neural + bce_weight * l_error
    parts = {"l_fused": l_fused.item(), "l_neural": l_neural.item(), "l_error": l_error.item()}
    return total, parts, fused, neural


@torch.no_grad()
def validate(model: ARNet, pool: ShardPool, indices: list) -> dict:
    device = next(model.parameters()).device
    model.eval()
    out = {"val_psnr_classical": 0.0, "val_psnr_fused": 0.0, "val_psnr_neural": 0.0}
    for start in range(0, len(indices), 8):
        batch = pool.batch(indices[start : start + 8], device=device, augment=False)
        _, _, fused, neural = losses(model, batch)
        n = len(indices[start : start + 8])
        for i in range(n):
            out["val_psnr_classical"] += psnr(batch["classical"][i], batch["gt"][i]) / len(indices)
            out["val_psnr_fused"] += psnr(fused[i], batch["gt"][i]) / len(indices)
            out["val_psnr_neural"] += psnr(neural[i], batch["gt"][i]) / len(indices)
    model.train()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=pathlib.Path, default=RUNS / "data" / "train")
    parser.add_argument("--val-data", type=pathlib.Path, default=RUNS / "data" / "test")
    parser.add_argument("--run", type=pathlib.Path, default=RUNS / "arnet")
    parser.add_argument("--width", type=int, default=64, help="ARNet middle channels (official 128)")
    parser.add_argument("--steps", type=int, default=100000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=80, help="random square crop (px) of the 128 px samples")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bce-weight", type=float, default=0.1, help="weight of BCE(E, E*) (paper: 0.1)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--device", default="auto", help="auto (CUDA GPU if there is one), cpu or cuda[:N]")
    parser.add_argument("--p-zero", type=float, default=0.05,
                        help="probability of turning a sample into a K = 0 (no blur) sample (common.zero_blur)")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--val-every", type=int, default=500)
    parser.add_argument("--ckpt-every", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.run.mkdir(parents=True, exist_ok=True)

    device = pick_device(args.device)
    model = ARNet(middle_channels=args.width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    step = resume(args.run, model, optimizer, args.width, args.lr)

    pool = ShardPool(args.data)
    val_pool = ShardPool(args.val_data) if args.val_data.exists() else None
    while len(pool) < args.batch:
        logger.info("waiting for data in %s", args.data)
        time.sleep(30)
        pool.refresh()
    model.train()
    running: dict = {}
    t0 = time.time()
    while step < args.steps:
        if step % 100 == 0:
            pool.refresh()
        rng = random.Random(args.seed * 1_000_003 + step)
        indices = [rng.randrange(len(pool)) for _ in range(args.batch)]
        batch = zero_blur(pool.batch(indices, device, rng=rng, crop=args.crop), rng, args.p_zero)
        total, parts, _, _ = losses(model, batch, args.bce_weight)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        step += 1
        for k, v in {"loss": total.item(), **parts}.items():
            running[k] = running.get(k, 0.0) + v
        if step % args.log_every == 0:
            row = {"step": step, "time_s": round(time.time() - t0, 1), "samples": len(pool)}
            row.update({k: round(v / args.log_every, 6) for k, v in running.items()})
            row.update({"val_psnr_classical": "", "val_psnr_fused": "", "val_psnr_neural": ""})
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
            plot_curves(args.run / "log.csv", args.run / "curves.png", ["loss", "l_fused", "l_neural"], "ARNet train")
            plot_curves(
                args.run / "log.csv", args.run / "val.png",
                ["val_psnr_classical", "val_psnr_fused", "val_psnr_neural"], "ARNet validation PSNR (dB)",
            )
            logger.info("step %d loss %.4f (%d samples, %.0f s)", step, float(total), len(pool), time.time() - t0)


if __name__ == "__main__":
    main()

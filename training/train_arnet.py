"""Train ARNet (paper section 3.2) on our synthetic shards; resumable from the latest checkpoint.

Loss (paper): L1 + gradient-L1 on the fused result ``classical * (1 - E) + neural * E`` and on the neural
result, plus 0.1 * BCE between the predicted error map E and the analytic target E* (Eq. 5). With ``--gate`` the
fused result uses ``E * gate`` (the pipeline's gate of the layered renderer, ``error_map.error_gate``), as
``render_bokehme`` fuses; the BCE stays on E.
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
import random

import torch
import torch.nn.functional as F

from common import ShardPool, defocus_px, gradient_l1, network_inputs, pick_device, psnr
from common import CLASSICAL_KEYS, RunLog, add_training_args, open_data, resume, select_classical, start_run, zero_blur

from bokehme_core.neural.arnet import ARNet

logger = logging.getLogger("train_arnet")


def fusion_gate(batch: dict, classical: str, gate: bool) -> torch.Tensor | None:
    """What the pipeline multiplies ARNet's error map by before fusing (``bokehme_core.error_map.error_gate``:
    the layered renderer's analytic map for the layered modes, None for exact), when ``gate``; computed on the
    batch's crops (near a crop border it misses the neighbours outside the crop)."""
    if not gate:
        return None
    from bokehme_core.error_map import error_gate

    with torch.no_grad():
        return error_gate(defocus_px(batch), "exact" if classical == "exact" else "layered")


def losses(model: ARNet, batch: dict, bce_weight: float = 0.1, gate: torch.Tensor | None = None) -> tuple:
    image, defocus, gamma_norm = network_inputs(batch)
    neural, error = model(image, defocus, gamma_norm)
    gt, classical = batch["gt"], batch["classical"]
    used = error if gate is None else error * gate  # the map the pipeline fuses with
    fused = classical * (1 - used) + neural * used
    l_fused = F.l1_loss(fused, gt) + gradient_l1(fused, gt)
    l_neural = F.l1_loss(neural, gt) + gradient_l1(neural, gt)
    l_error = F.binary_cross_entropy(error.clamp(1e-6, 1 - 1e-6), batch["error_target"])
    total = l_fused + l_neural + bce_weight * l_error
    parts = {"l_fused": l_fused.item(), "l_neural": l_neural.item(), "l_error": l_error.item()}
    return total, parts, fused, neural


@torch.no_grad()
def validate(model: ARNet, pool: ShardPool, indices: list, classical: str = "exact", gate: bool = False) -> dict:
    device = next(model.parameters()).device
    model.eval()
    out = {"val_psnr_classical": 0.0, "val_psnr_fused": 0.0, "val_psnr_neural": 0.0}
    for start in range(0, len(indices), 8):
        batch = select_classical(pool.batch(indices[start : start + 8], device=device, augment=False), classical)
        _, _, fused, neural = losses(model, batch, gate=fusion_gate(batch, classical, gate))
        n = len(indices[start : start + 8])
        for i in range(n):
            out["val_psnr_classical"] += psnr(batch["classical"][i], batch["gt"][i]) / len(indices)
            out["val_psnr_fused"] += psnr(fused[i], batch["gt"][i]) / len(indices)
            out["val_psnr_neural"] += psnr(neural[i], batch["gt"][i]) / len(indices)
    model.train()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_args(parser, "arnet", 64, "ARNet middle channels (official 128)", seed=0,
                      crop_help="random square crop (px) of the 128 px samples")
    parser.add_argument("--bce-weight", type=float, default=0.1, help="weight of BCE(E, E*) (paper: 0.1)")
    parser.add_argument("--classical", choices=tuple(CLASSICAL_KEYS), default="exact",
                        help="classical render the fusion is trained against (layered_recovered = the default "
                             "pipeline: layered renderer + highlight recovery, which the networks then see too)")
    parser.add_argument("--gate", action="store_true",
                        help="fuse with ARNet's map times the pipeline's gate of the classical renderer "
                             "(error_gate: the layered renderer's analytic map), as render_bokehme does")
    args = parser.parse_args()
    start_run(args)

    device = pick_device(args.device)
    model = ARNet(middle_channels=args.width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    step = resume(args.run, model, optimizer, args.width, args.lr)

    pool, val_pool = open_data(args)
    model.train()
    log = RunLog(args, pool, val_pool, lambda indices: validate(model, val_pool, indices, args.classical, args.gate), ["l_fused", "l_neural"],
                 ["val_psnr_classical", "val_psnr_fused", "val_psnr_neural"], "ARNet")
    while step < args.steps:
        if step % 100 == 0:
            pool.refresh()
        rng = random.Random(args.seed * 1_000_003 + step)
        indices = [rng.randrange(len(pool)) for _ in range(args.batch)]
        batch = select_classical(pool.batch(indices, device, rng=rng, crop=args.crop), args.classical)
        batch = zero_blur(batch, rng, args.p_zero)
        total, parts, _, _ = losses(model, batch, args.bce_weight, fusion_gate(batch, args.classical, args.gate))
        step = log.optimize(step, model, optimizer, total, parts)

if __name__ == "__main__":
    main()

"""Train IUNet (paper section 3.2) on our synthetic shards; resumable from the latest checkpoint.

IUNet refines a coarse bokeh at twice its resolution. Two sources of the coarse input (``--coarse``):

* ``teacher`` (default; the bundled weights): the ground truth at half resolution (area downsampling)
  degraded towards the classical render by a random amount (``coarse = lerp(gt_half, classical_half, u)``,
  u ~ U(0, 0.5), plus noise of std 0.01), which lets IUNet train before any ARNet exists. IUNet learns to
  upsample a nearly right coarse bokeh; with a real ARNet output it then behaves like bilinear upsampling
  (measured on bench_dev: as good at K >= 20; CHANGELOG.md).
* ``arnet`` (the paper's recipe): the output of a frozen ARNet run the way the pipeline runs
  it: on the sample reduced by a random adaptive scale ``s ~ U(s_min, --max-scale)`` (``s_min`` = the
  pipeline's own scale, so that ARNet's defocus input stays in [-1, 1]), with its defocus divided by ``s``.
  This covers every upsampling ratio IUNet sees at inference (``s = 1`` at K ~ 10 up to ~2.5 for the last
  pass at larger K). ``--arnet`` names the frozen weights; with ``--arnet-reload-every N`` they are re-read
  every N steps (so IUNet can follow an ARNet that is still training; the step of the ARNet weights used is
  logged).
  Measured on a 2-core CPU on 2026-11-26 (2,000-4,000 steps from three starts: the teacher-forced weights,
  random, identity-like with a full-scale body): each stayed below bilinear upsampling inside the blend mask
  on the synthetic validation set, and on bench_dev came level with the teacher-forced IUNet
  at K >= 20 but below it at K = 10, while the official IUNet (trained this way for 50 GPU epochs) is well above bilinear
  (CHANGELOG.md has the numbers). It needs a GPU.

Loss: L1 + gradient-L1 against the ground truth, weighted by the pipeline's IUNet blend mask
(``|dilated defocus| < 10 px``, blurred) + 0.05 (IUNet's output is only used where the mask is high).

Usage:
  nice -n 15 .venv/bin/python training/train_iunet.py --width 64 --lr 4e-4                # teacher forcing
  nice -n 15 .venv/bin/python training/train_iunet.py --coarse arnet --init random --run runs/iunet_arnet
Stop any time; re-running resumes from ``--run``/latest.pt.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import random

import torch
import torch.nn.functional as F

from common import RUNS, ShardPool, gradient_l1, network_inputs, pick_device, resume
from common import RunLog, add_training_args, defocus_px, open_data, start_run, zero_blur

from bokehme_core.neural.arnet import ARNet
from bokehme_core.neural.blocks import resize_bilinear
from bokehme_core.neural.iunet import IUNet
from bokehme_core.neural.stages import adaptive_scale, arnet_stage, blend_mask, network_defocus

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
    u = (torch.rand(gt_half.shape[0], 1, 1, 1, generator=generator) * 0.5).to(gt_half.device)
    noise = (torch.randn(gt_half.shape, generator=generator) * 0.01).to(gt_half.device)
    return (gt_half * (1 - u) + classical_half * u + noise).clamp(0, 1)


@torch.no_grad()
def arnet_coarse(arnet: ARNet, batch: dict, scale: float | None) -> torch.Tensor:
    """ARNet's bokeh for a batch at adaptive scale ``scale`` (None = the pipeline's own scale for the batch;
    larger = coarser), from the pipeline's own stage (:func:`bokehme_core.neural.stages.arnet_stage`)."""
    bokeh, _, _ = arnet_stage(arnet, batch["image"], defocus_px(batch), batch["params"][:, 2], scale=scale)
    return bokeh


def losses(
    model: IUNet,
    batch: dict,
    generator: torch.Generator | None = None,
    degrade: bool = True,
    arnet: ARNet | None = None,
    scale: float | None = None,
) -> tuple:
    """Weighted L1 + gradient L1 of IUNet's refinement. The coarse input comes from ``arnet`` at ``scale``
    (None = the pipeline's scale) when given, else from :func:`coarse_input`.

    Returns:
        ``(total loss, {part: float}, refined, loss weight, coarse input)``.
    """
    image, defocus, gamma_norm = network_inputs(batch)
    if arnet is not None:
        coarse = arnet_coarse(arnet, batch, None if scale is None else max(scale, adaptive_scale(defocus_px(batch))))
    else:
        coarse = coarse_input(batch, generator, degrade)
    refined = model(image, defocus.clamp(-1, 1), coarse, gamma_norm)
    weight = blend_mask(network_defocus(batch["dilated_px"])) + 0.05
    gt = batch["gt"]
    l_l1 = ((refined - gt).abs() * weight).mean()
    l_grad = gradient_l1(refined, gt, weight)
    return l_l1 + l_grad, {"l_l1": l_l1.item(), "l_grad": l_grad.item()}, refined, weight, coarse


@torch.no_grad()
def validate(model: IUNet, pool: ShardPool, indices: list, arnet: ARNet | None = None) -> dict:
    """PSNR inside the blend mask (> 0.5) of the refined result and of the coarse input upsampled the way the
    pipeline does outside the mask (bilinear, align_corners=True; logs before 2026-11-26 used align_corners=False for
    the teacher-forced baseline): ARNet's output at the pipeline's scale with ``arnet``, else the
    half-resolution ground truth."""
    device = next(model.parameters()).device
    model.eval()
    out = {"val_psnr_refined": 0.0, "val_psnr_bilinear": 0.0}
    for start in range(0, len(indices), 8):
        batch = pool.batch(indices[start : start + 8], device=device, augment=False)
        # with ARNet, one pipeline scale per sample, as render_bokehme does
        n = batch["image"].shape[0]
        groups = [slice(j, j + 1) for j in range(n)] if arnet is not None else [slice(0, n)]
        results = [losses(model, {k: v[g] for k, v in batch.items()}, degrade=False, arnet=arnet) for g in groups]
        refined = torch.cat([r[2] for r in results])
        weight = torch.cat([r[3] for r in results])
        coarse = torch.cat([resize_bilinear(r[4], refined.shape[-2:]) for r in results])
        mask = (weight > 0.55).float()
        for i in range(refined.shape[0]):
            m = mask[i]
            denom = float(m.sum()) * 3 + 1e-6
            for key, pred in (("val_psnr_refined", refined[i]), ("val_psnr_bilinear", coarse[i])):
                mse = float((((pred.clamp(0, 1) - batch["gt"][i]) ** 2) * m).sum()) / denom
                out[key] += 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item() / len(indices)
    model.train()
    return out


def load_frozen_arnet(path: pathlib.Path, device: torch.device | str = "cpu") -> tuple:
    """(ARNet in eval mode with frozen parameters, its training step or -1) from a training checkpoint
    (``latest.pt`` of train_arnet.py) or from exported weights (``.safetensors`` / ``.pth``)."""
    from bokehme_core.weights import load_arnet

    if path.suffix == ".pt":
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        arnet = ARNet(middle_channels=int(ckpt["width"]))
        arnet.load_state_dict(ckpt["model"], strict=True)
        step = int(ckpt["step"])
    else:
        arnet, step = load_arnet(path), -1
    arnet.to(device).eval()
    for param in arnet.parameters():
        param.requires_grad_(False)
    return arnet, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_args(parser, "iunet", 64, "IUNet middle channels (official 64)", seed=1)
    parser.add_argument("--init", choices=["random", "identity"], default="identity",
                        help="identity: start as nearest upsampling of the coarse input (see identity_init)")
    parser.add_argument("--init-from", type=pathlib.Path, default=None,
                        help="start a new run from these IUNet weights (a train_iunet.py latest.pt or exported "
                        "weights) instead of --init; ignored when the run resumes")
    parser.add_argument("--coarse", choices=["arnet", "teacher"], default="teacher",
                        help="coarse input: degraded half-res ground truth (bundled weights) or a frozen "
                        "ARNet's output (the paper's recipe; needs far more training, see the docstring)")
    parser.add_argument("--arnet", type=pathlib.Path, default=RUNS / "arnet" / "latest.pt",
                        help="frozen ARNet for --coarse arnet: train_arnet.py latest.pt or exported weights")
    parser.add_argument("--arnet-reload-every", type=int, default=0,
                        help="re-read --arnet every N steps (0 = never): follow an ARNet still in training")
    parser.add_argument("--max-scale", type=float, default=2.5,
                        help="largest random adaptive scale for ARNet's input (--coarse arnet)")
    args = parser.parse_args()
    start_run(args)

    model = IUNet(middle_channels=args.width)
    if args.init == "identity":
        identity_init(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    if args.init_from is not None and not (args.run / "latest.pt").exists():
        if args.init_from.suffix == ".pt":
            model.load_state_dict(torch.load(args.init_from, map_location="cpu", weights_only=True)["model"])
        else:
            from bokehme_core.weights import load_iunet

            model.load_state_dict(load_iunet(args.init_from).state_dict())
        logger.info("new run initialised from %s", args.init_from)
    device = pick_device(args.device)
    model.to(device)  # keeps the Parameter objects the optimizer holds
    step = resume(args.run, model, optimizer, args.width, args.lr)
    arnet, arnet_step = (None, "")
    if args.coarse == "arnet":
        arnet, arnet_step = load_frozen_arnet(args.arnet, device)
        logger.info("frozen ARNet from %s (step %s)", args.arnet, arnet_step)

    pool, val_pool = open_data(args)
    model.train()
    log = RunLog(args, pool, val_pool, lambda indices: validate(model, val_pool, indices, arnet), ["l_l1", "l_grad"],
                 ["val_psnr_refined", "val_psnr_bilinear"], "IUNet (in the blend mask)")
    while step < args.steps:
        if step % 100 == 0:
            pool.refresh()
        if arnet is not None and args.arnet_reload_every and step % args.arnet_reload_every == 0:
            arnet, arnet_step = load_frozen_arnet(args.arnet, device)
        rng = random.Random(args.seed * 1_000_003 + step)
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        indices = [rng.randrange(len(pool)) for _ in range(args.batch)]
        batch = zero_blur(pool.batch(indices, device, rng=rng, crop=args.crop), rng, args.p_zero)
        scale = None
        if arnet is not None:
            s_min = adaptive_scale(defocus_px(batch))
            scale = s_min + rng.random() * max(args.max_scale - s_min, 0.0)
        total, parts, *_ = losses(model, batch, generator, arnet=arnet, scale=scale)
        step = log.optimize(step, model, optimizer, total, parts, {"arnet_step": arnet_step} if arnet is not None else None)

if __name__ == "__main__":
    main()

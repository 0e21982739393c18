"""Shared training utilities: shard dataset, losses, checkpoints (resumable), CSV logs and PNG curves.

Not imported by the node pack. Checkpoints are plain dicts of tensors / numbers saved with ``torch.save``
and read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import pathlib
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Where runs live (``/runs/`` is git-ignored at the repository root).
RUNS = ROOT / "runs"

logger = logging.getLogger(__name__)

from bokehme_core.neural.stages import gamma_norm, network_defocus  # noqa: E402


class ShardPool:
    """All samples of the ``shard_*.npz`` files in a folder, re-scanned on demand (the generator may still
    be adding shards). Samples are kept in memory as float16 numpy arrays."""

    def __init__(self, folder: pathlib.Path, exclude_last: int = 0) -> None:
        self.folder = pathlib.Path(folder)
        self.exclude_last = exclude_last
        self.loaded: set = set()
        self.arrays: dict = {}
        self.refresh()

    def refresh(self) -> int:
        shards = sorted(p for p in self.folder.glob("shard_*.npz") if not p.name.endswith(".tmp.npz"))
        if self.exclude_last:
            shards = shards[: -self.exclude_last] if len(shards) > self.exclude_last else []
        for path in shards:
            if path.name in self.loaded:
                continue
            with np.load(path) as z:
                for key in z.files:
                    self.arrays.setdefault(key, []).append(z[key])
            self.loaded.add(path.name)
        return len(self)

    def __len__(self) -> int:
        return sum(a.shape[0] for a in self.arrays.get("params", []))

    def batch(
        self, indices, device="cpu", augment: bool = True, rng: random.Random | None = None, crop: int = 0
    ) -> dict:
        """Tensors (B, C, H, W) float32 for the given global indices; random flips (and one random crop of
        ``crop`` px for the whole batch, if > 0) when ``augment``."""
        cat = {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in self.arrays.items()}
        self.arrays = {k: [v] for k, v in cat.items()}
        out = {k: torch.from_numpy(cat[k][indices].astype(np.float32)).to(device) for k in cat}
        if augment:
            rng = rng or random
            size = out["image"].shape[-1]
            if 0 < crop < size:
                top, left = rng.randrange(size - crop + 1), rng.randrange(size - crop + 1)
                out = {k: (v[..., top : top + crop, left : left + crop] if v.ndim == 4 else v) for k, v in out.items()}
            if rng.random() < 0.5:
                out = {k: (v.flip(-1) if v.ndim == 4 else v) for k, v in out.items()}
            if rng.random() < 0.5:
                out = {k: (v.flip(-2) if v.ndim == 4 else v) for k, v in out.items()}
        return out


#: ``--classical`` choices: the shard key of the classical render, and of the image the networks see with it
CLASSICAL_KEYS = {
    "exact": ("classical", "image"),
    "layered": ("classical_layered", "image"),
    "layered_recovered": ("classical_layered_recovered", "recovered"),
}


def select_classical(batch: dict, mode: str) -> dict:
    """Make ``batch["classical"]`` the classical render the networks are trained against: ``"exact"`` (the
    official kernel, key ``classical``), ``"layered"`` (key ``classical_layered``) or ``"layered_recovered"``
    (the default pipeline: the layered render of the image after the default highlight recovery, key
    ``classical_layered_recovered``; the networks then also see that image, key ``recovered``, as in
    :func:`bokehme_core.render_bokehme`). The unlifted image stays in ``batch["image_plain"]``."""
    classical_key, image_key = CLASSICAL_KEYS[mode]
    for key in (classical_key, image_key):
        if key not in batch:
            raise SystemExit(f"--classical {mode} needs shards with {key!r} (made by the current "
                             "training/make_dataset.py); regenerate the data")
    batch["image_plain"] = batch["image"]
    batch["classical"] = batch[classical_key]
    batch["image"] = batch[image_key]
    return batch


def zero_blur(batch: dict, rng: random.Random, probability: float) -> dict:
    """With ``probability`` per sample, turn it into a K = 0 sample (no blur anywhere): ground truth, classical
    render and network input = the (unlifted) image, dilated defocus 0, target error map 0. The generated data
    have K >= 4, so without this the networks never learn that a sharp input must come back unchanged (the
    weights bundled on 2026-11-25 gave at K = 0 a neural result 19.6 dB from the input). Returns ``batch``
    (modified in place)."""
    plain = batch.get("image_plain", batch["image"])
    for i in range(batch["image"].shape[0]):
        if rng.random() < probability:
            batch["params"][i, 0] = 0.0
            batch["image"][i] = plain[i]
            batch["gt"][i] = plain[i]
            batch["classical"][i] = plain[i]
            batch["dilated_px"][i] = 0.0
            batch["error_target"][i] = 0.0
    return batch


def gradient_l1(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between the horizontal and vertical finite differences of a and b."""
    dxa, dxb = a[..., :, 1:] - a[..., :, :-1], b[..., :, 1:] - b[..., :, :-1]
    dya, dyb = a[..., 1:, :] - a[..., :-1, :], b[..., 1:, :] - b[..., :-1, :]
    if weight is None:
        return (dxa - dxb).abs().mean() + (dya - dyb).abs().mean()
    wx, wy = weight[..., :, 1:], weight[..., 1:, :]
    return ((dxa - dxb).abs() * wx).mean() + ((dya - dyb).abs() * wy).mean()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(F.mse_loss(a.clamp(0, 1), b.clamp(0, 1)))
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def defocus_px(batch: dict) -> torch.Tensor:
    """Signed defocus in px (B, 1, H, W) of a ShardPool batch (one K and focus per sample)."""
    K, focus = batch["params"][:, 0], batch["params"][:, 1]
    return K.view(-1, 1, 1, 1) * (batch["disparity"] - focus.view(-1, 1, 1, 1))


def network_inputs(batch: dict) -> tuple:
    """image, defocus in the networks' units, gamma_norm (B,) from a ShardPool batch, computed by the
    pipeline's own functions (``bokehme_core.neural.stages``)."""
    return batch["image"], network_defocus(defocus_px(batch)), gamma_norm(batch["params"][:, 2])


def pick_device(name: str) -> torch.device:
    """``auto`` = the CUDA GPU when there is one, else the CPU; ``cuda`` without one is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: this torch sees no CUDA GPU (torch.cuda.is_available() is False); "
                         "use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise SystemExit(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


def save_checkpoint(path: pathlib.Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: pathlib.Path) -> dict | None:
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def resume(run: pathlib.Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, width: int, lr: float) -> int:
    """Load ``run/latest.pt`` into ``model`` and ``optimizer`` if it exists (strict), set ``lr``; return the step."""
    step = 0
    ckpt = load_checkpoint(run / "latest.pt")
    if ckpt is not None:
        if int(ckpt["width"]) != width:
            raise SystemExit(f"checkpoint width {int(ckpt['width'])} != --width {width}; use another --run")
        model.load_state_dict(ckpt["model"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["step"])
        logger.info("resumed from step %d", step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return step


def append_csv(path: pathlib.Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def plot_curves(csv_path: pathlib.Path, png_path: pathlib.Path, columns: list, title: str) -> None:
    """Minimal line plot (PIL only; matplotlib is not a dependency) of CSV columns against 'step'."""
    from PIL import Image, ImageDraw

    if not csv_path.exists():
        return
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    rows = [r for r in rows if r.get("step")]
    if len(rows) < 2:
        return
    width, height, margin = 900, 500, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    steps = [float(r["step"]) for r in rows]
    colors = [(200, 30, 30), (30, 120, 200), (30, 160, 60), (160, 60, 160), (200, 140, 0), (0, 0, 0)]
    series = []
    for col in columns:
        pts = [(s, float(r[col])) for s, r in zip(steps, rows) if r.get(col) not in (None, "", "nan")]
        if pts:
            series.append((col, pts))
    if not series:
        return
    ys = [y for _, pts in series for _, y in pts]
    lo, hi = min(ys), max(ys)
    hi = hi if hi > lo else lo + 1
    x0, x1 = min(steps), max(steps)
    x1 = x1 if x1 > x0 else x0 + 1

    def to_px(x, y):
        return (margin + (x - x0) / (x1 - x0) * (width - 2 * margin), height - margin - (y - lo) / (hi - lo) * (height - 2 * margin))

    draw.rectangle([margin, margin, width - margin, height - margin], outline=(0, 0, 0))
    draw.text((margin, 10), title, fill=(0, 0, 0))
    draw.text((margin, height - margin + 10), f"step {x0:.0f} .. {x1:.0f}", fill=(0, 0, 0))
    draw.text((5, margin), f"{hi:.4g}", fill=(0, 0, 0))
    draw.text((5, height - margin - 10), f"{lo:.4g}", fill=(0, 0, 0))
    for i, (col, pts) in enumerate(series):
        color = colors[i % len(colors)]
        draw.line([to_px(x, y) for x, y in pts], fill=color, width=2)
        draw.text((width - margin - 220, margin + 10 + 14 * i), col, fill=color)
    image.save(png_path)


class RunLog:
    """The bookkeeping both trainers share: running loss sums, a CSV row every ``args.log_every`` steps (with
    validation every ``args.val_every``), and ``latest.pt`` + PNG curves every ``args.ckpt_every`` steps.

    Args:
        args: the trainer's arguments (``run``, ``log_every``, ``val_every``, ``ckpt_every``, ``steps``, ``width``).
        pool, val_pool: the training data (for the sample count) and the validation data (or None).
        validate: ``validate(indices) -> {column: value}`` on ``val_pool``.
        train_columns, val_columns: CSV columns plotted in ``curves.png`` and ``val.png``.
        title: network name for the plots.
    """

    def __init__(self, args, pool, val_pool, validate, train_columns: list, val_columns: list, title: str) -> None:
        self.args, self.pool, self.val_pool, self.validate = args, pool, val_pool, validate
        self.train_columns, self.val_columns, self.title = train_columns, val_columns, title
        self.running: dict = {}
        self.t0 = time.time()

    def optimize(self, step: int, model, optimizer, loss: torch.Tensor, parts: dict, extra: dict | None = None) -> int:
        """One optimizer step on ``loss``, then :meth:`end_step`; returns the new step count."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.end_step(step + 1, model, optimizer, loss.item(), parts, extra)
        return step + 1

    def end_step(self, step: int, model, optimizer, loss: float, parts: dict, extra: dict | None = None) -> None:
        """Record ``loss`` and its ``parts`` for ``step`` (just done); log / validate / checkpoint when due."""
        args = self.args
        for k, v in {"loss": loss, **parts}.items():
            self.running[k] = self.running.get(k, 0.0) + v
        if step % args.log_every == 0:
            row = {"step": step, "time_s": round(time.time() - self.t0, 1), "samples": len(self.pool), **(extra or {})}
            row.update({k: round(v / args.log_every, 6) for k, v in self.running.items()})
            row.update({k: "" for k in self.val_columns})
            if self.val_pool is not None and len(self.val_pool) and step % args.val_every == 0:
                val = self.validate(list(range(min(len(self.val_pool), 48))))
                row.update({k: round(v, 3) for k, v in val.items()})
                logger.info("step %d val %s", step, val)
            append_csv(args.run / "log.csv", row)
            self.running = {}
        if step % args.ckpt_every == 0 or step == args.steps:
            save_checkpoint(
                args.run / "latest.pt",
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "width": args.width},
            )
            plot_curves(args.run / "log.csv", args.run / "curves.png", ["loss", *self.train_columns],
                        f"{self.title} train")
            plot_curves(args.run / "log.csv", args.run / "val.png", self.val_columns,
                        f"{self.title} validation PSNR (dB)")
            logger.info("step %d loss %.4f (%d samples, %.0f s)", step, loss, len(self.pool), time.time() - self.t0)


def add_training_args(parser, net: str, width: int, width_help: str, seed: int, crop_help: str = "") -> None:
    """The command-line options both trainers share (data, run folder, size, schedule, device, logging)."""
    parser.add_argument("--data", type=pathlib.Path, default=RUNS / "data" / "train")
    parser.add_argument("--val-data", type=pathlib.Path, default=RUNS / "data" / "test")
    parser.add_argument("--run", type=pathlib.Path, default=RUNS / net)
    parser.add_argument("--width", type=int, default=width, help=width_help)
    parser.add_argument("--steps", type=int, default=100000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=80, help=crop_help or "random square crop (px) of the samples")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--device", default="auto", help="auto (CUDA GPU if there is one), cpu or cuda[:N]")
    parser.add_argument("--p-zero", type=float, default=0.05,
                        help="probability of turning a sample into a K = 0 (no blur) sample (common.zero_blur)")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--val-every", type=int, default=500)
    parser.add_argument("--ckpt-every", type=int, default=200)


def start_run(args) -> None:
    """Logging, threads, seed and the run folder for a parsed trainer command line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.run.mkdir(parents=True, exist_ok=True)


def open_data(args) -> tuple:
    """(training ShardPool, validation ShardPool or None); waits until the generator has written a batch."""
    pool = ShardPool(args.data)
    val_pool = ShardPool(args.val_data) if args.val_data.exists() else None
    while len(pool) < args.batch:
        logger.info("waiting for data in %s", args.data)
        time.sleep(30)
        pool.refresh()
    return pool, val_pool

"""Bokeh quality (PSNR / SSIM per K level) of the classical renderer, the hybrid pipeline and baselines.

Data sets:
  * ``bench``: ``../shared/bench_dev`` (Blender path-traced ground truth, 960x540, gamma 2.2; README there);
  * ``synth``: a small held-out set (3 scenes x K 10, 20, 30) of our procedural scenes (seeds 95,000,000+, never used in training)
    with thin-lens layered ground truth (``bokehme_core.synth``), 384x256, gamma 2.2, circle aperture.

Methods (all with gamma 2.2, the encoding of both data sets):
  * ``classical``: ``render_classical(mode="exact")`` (official kernel);
  * ``hybrid_ours``: full BokehMe pipeline with our ARNet + our IUNet (``--weights``, default ``weights/``);
  * ``hybrid_ours_official_iunet``: our ARNet + the official IUNet (``--official-iunet``);
  * ``hybrid_analytic``: classical + our neural result fused with the analytic error map (no ARNet map);
  * ``slices16``: ``bench_classical.layered_gaussian_baseline``: 16 defocus slices, each blurred with a
    Gaussian (sigma = radius / 2 at the slice centre), composited far to near in linear light (gamma 2.2)
    (what popular ComfyUI depth-of-field nodes do).

PSNR and SSIM (scikit-image, data_range 1, channel_axis) on [0, 1] float images. Prints a markdown table
(mean over the images of each K level) and writes all numbers to ``--json``.

Usage:
  nice -n 10 .venv/bin/python bench/eval_quality.py                       # both data sets
  nice -n 10 .venv/bin/python bench/eval_quality.py --sets bench --weights /tmp/candidate_weights
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import pathlib
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bokehme_core import Aperture, render_classical, signed_defocus  # noqa: E402
from bokehme_core.error_map import analytic_error_map  # noqa: E402
from bokehme_core.fusion import fuse  # noqa: E402
from bokehme_core.models.checkpoints import load_arnet, load_iunet  # noqa: E402
from bokehme_core.pipeline import render_neural  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_classical import layered_gaussian_baseline  # noqa: E402

logger = logging.getLogger("eval_quality")
BENCH_DEV = ROOT.parent / "shared" / "bench_dev"
OFFICIAL_IUNET = ROOT.parent / "shared" / "bokehme_official" / "checkpoints" / "iunet.safetensors"
GAMMA = 2.2
SYNTH_SEED = 95_000_000
SYNTH_SIZE = (256, 384)
SYNTH_K = (10, 20, 30)


def _read_rgb(path: pathlib.Path) -> torch.Tensor:
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()


def metrics(pred: torch.Tensor, gt: torch.Tensor) -> tuple:
    from skimage.metrics import structural_similarity

    a = pred[0].clamp(0, 1).permute(1, 2, 0).double().numpy()
    b = gt[0].clamp(0, 1).permute(1, 2, 0).double().numpy()
    mse = float(((a - b) ** 2).mean())
    psnr = 10 * math.log10(1.0 / max(mse, 1e-12))
    ssim = float(structural_similarity(a, b, data_range=1.0, channel_axis=2))
    return psnr, ssim


METHODS = ("classical", "hybrid_ours", "neural_ours", "hybrid_analytic", "hybrid_ours_official_iunet", "slices16")


class Methods:
    def __init__(self, weights: pathlib.Path, official_iunet: pathlib.Path | None, names=METHODS) -> None:
        self.names = set(names) | {"classical"}
        self.arnet = load_arnet(weights / "arnet.safetensors")
        self.iunet = load_iunet(weights / "iunet.safetensors")
        wanted = "hybrid_ours_official_iunet" in self.names
        self.official_iunet = load_iunet(official_iunet) if wanted and official_iunet and official_iunet.exists() else None

    def run(self, image, disparity, K, focus, aperture) -> dict:
        out = {}
        defocus = signed_defocus(disparity, K, focus)
        t = time.time()
        classical = render_classical(image, defocus, gamma=GAMMA, aperture=aperture, mode="exact")
        out["classical"] = classical.bokeh.clamp(0, 1)
        logger.debug("classical %.1f s", time.time() - t)
        if self.names & {"hybrid_ours", "neural_ours", "hybrid_analytic"}:
            neural = render_neural(
                image, defocus, classical.dilated_defocus, gamma=GAMMA, arnet=self.arnet, iunet=self.iunet
            )
            out["hybrid_ours"] = fuse(classical.bokeh, neural.bokeh, neural.error_map).clamp(0, 1)
            out["neural_ours"] = neural.bokeh.clamp(0, 1)
            if "hybrid_analytic" in self.names:
                analytic = analytic_error_map(disparity, K, focus)
                out["hybrid_analytic"] = fuse(classical.bokeh, neural.bokeh, analytic).clamp(0, 1)
        if self.official_iunet is not None:
            mixed = render_neural(
                image, defocus, classical.dilated_defocus, gamma=GAMMA, arnet=self.arnet, iunet=self.official_iunet
            )
            out["hybrid_ours_official_iunet"] = fuse(classical.bokeh, mixed.bokeh, mixed.error_map).clamp(0, 1)
        if "slices16" in self.names:
            out["slices16"] = layered_gaussian_baseline(image, defocus, gamma=GAMMA).clamp(0, 1)
        return {name: pred for name, pred in out.items() if name in self.names}


def tensor_digest(path: pathlib.Path) -> str:
    """sha256 over the sorted tensor names and their float32 bytes: identifies weights independently of the
    file's metadata order (safetensors does not keep metadata order stable between saves)."""
    import hashlib

    from safetensors.torch import load_file

    state = load_file(str(path))
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def bench_items(limit: int | None, stride: int = 1):
    manifest = json.loads((BENCH_DEV / "manifest.json").read_text())
    for sample in manifest["samples"][::stride][:limit]:
        image = _read_rgb(BENCH_DEV / sample["aif"])
        disparity = torch.from_numpy(np.load(BENCH_DEV / sample["disparity_npy"]).astype(np.float32))[None, None]
        gt = _read_rgb(BENCH_DEV / sample["gt"])
        aperture = Aperture.polygon(6) if sample["aperture"] == "hexagon" else Aperture.circle()
        yield sample["id"], sample["K"], sample["aperture"], image, disparity.clamp(0, 1), gt, float(sample["d_f"]), aperture


def synth_items(limit: int | None, cache: pathlib.Path):
    from bokehme_core.synth.lens import render_layers
    from bokehme_core.synth.scene import make_scene

    cache.mkdir(parents=True, exist_ok=True)
    items = [(i, K) for i in range(3) for K in SYNTH_K][:limit]
    for i, K in items:
        seed = SYNTH_SEED + i
        scene = make_scene(*SYNTH_SIZE, seed, objects=(3, 6), highlights=(15, 40))
        focus = float(np.random.default_rng(seed).uniform(0.1, 0.9))
        path = cache / f"gt_{seed}_K{K}.npy"
        if path.exists():
            gt = torch.from_numpy(np.load(path))
        else:
            gt = render_layers(scene.layers, K, focus, GAMMA, spacing_px=1.0).clamp(0, 1)
            np.save(path, gt.numpy())
        # 8-bit inputs and ground truth, like photos
        image = (scene.image * 255).round() / 255
        gt = (gt * 255).round() / 255
        yield f"synth_{seed}_K{K}", K, "circle", image, scene.disparity, gt, focus, Aperture.circle()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["bench", "synth"], choices=["bench", "synth"])
    parser.add_argument("--weights", type=pathlib.Path, default=ROOT / "weights")
    parser.add_argument("--official-iunet", type=pathlib.Path, default=OFFICIAL_IUNET)
    parser.add_argument("--limit", type=int, default=None, help="first N items of each set (quick checks)")
    parser.add_argument("--stride", type=int, default=1, help="every N-th bench_dev item (quick checks)")
    parser.add_argument("--json", type=pathlib.Path, default=ROOT / "runs" / "eval" / "quality.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="methods to evaluate (classical is always included: the reference row)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    methods = Methods(args.weights, args.official_iunet, args.methods)
    results = {}
    with torch.inference_mode():
        for set_name in args.sets:
            items = bench_items(args.limit, args.stride) if set_name == "bench" else synth_items(args.limit, ROOT / "runs" / "eval" / "synth_gt")
            rows = []
            for item_id, K, aperture_name, image, disparity, gt, focus, aperture in items:
                t = time.time()
                outputs = methods.run(image, disparity, K, focus, aperture)
                row = {"id": item_id, "K": K, "aperture": aperture_name}
                for name, pred in outputs.items():
                    row[name] = metrics(pred, gt)
                rows.append(row)
                logger.info("%s %s (%.0f s)", item_id, {k: round(v[0], 2) for k, v in row.items() if isinstance(v, tuple)}, time.time() - t)
            results[set_name] = rows
    args.json.parent.mkdir(parents=True, exist_ok=True)
    digest = {n: tensor_digest(args.weights / f"{n}.safetensors") for n in ("arnet", "iunet")}
    args.json.write_text(json.dumps({"weights": str(args.weights), "tensor_digest": digest, "results": results}, indent=1))
    print(format_tables(results))


def summarize(rows: list) -> dict:
    """{method: {group: (mean psnr, mean ssim, n)}} with groups 'K=10', 'K=20', ..., 'K>=20'."""
    names = [k for k in rows[0] if isinstance(rows[0][k], (tuple, list))]
    groups: dict = {}
    for row in rows:
        keys = [f"K={row['K']}" + ("" if row["aperture"] == "circle" else f" {row['aperture']}")]
        if row["K"] >= 20:
            keys.append("K>=20 (all)")
        for key in keys:
            groups.setdefault(key, []).append(row)
    out = {}
    for name in names:
        out[name] = {}
        for key, members in groups.items():
            p = float(np.mean([m[name][0] for m in members]))
            s = float(np.mean([m[name][1] for m in members]))
            out[name][key] = (p, s, len(members))
    return out


def format_tables(results: dict) -> str:
    lines = []
    for set_name, rows in results.items():
        if not rows:
            continue
        summary = summarize(rows)
        keys = sorted({k for v in summary.values() for k in v}, key=lambda k: (k.startswith("K>="), k))
        lines.append(f"\n### {set_name}: PSNR dB / SSIM (mean; n per column: "
                     + ", ".join(f"{k}: {summary['classical'][k][2]}" for k in keys) + ")\n")
        lines.append("| method | " + " | ".join(keys) + " |")
        lines.append("|---|" + "---|" * len(keys))
        for name, groups in summary.items():
            cells = [f"{groups[k][0]:.2f} / {groups[k][1]:.4f}" for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

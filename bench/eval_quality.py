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
  * ``classical_boost``: ``classical`` with the official highlight boost (``highlight=True``);
  * ``peer_layered`` / ``peer_layered_boost``: the layered disk-blur compositor of ``../shared/bench_dev/README.md``
    (:func:`layered_peer`: 24 uniform disparity slabs, disk radius ``K * |slab mean - d_f|`` with 4x4
    supersampled pixel coverage, "over" far to near, divided by the accumulated coverage), without / with the
    official highlight boost applied first (values above 1 kept);
  * ``layered`` / ``layered_boost``: ``render_classical(mode="layered")`` without / with ``highlight=True``;
  * ``layered_recover``: ``layered`` after the default highlight recovery (``render_inputs(recover=True)``);
  * ``layered_recover_fixed`` / ``layered_recover_auto``: ``layered`` after ``recover_highlights`` with one fixed
    gain (``RECOVER_GAIN``: the recovery before per-region gains) / with the per-region gain estimated from each
    clipped region's rim (``gain="auto"``), whatever the default is;
  * ``default``: ``render_bokehme`` with every default (layered classical, highlight recovery, ARNet's error map
    restricted to the layered renderer's, sparse IUNet): what users get. With ``--arnet-checkpoint`` its ARNet
    is that training checkpoint (a candidate), the rest unchanged;
  * ``default_bundled``: ``default`` with the bundled networks of ``weights/`` (the reference for a candidate);
  * ``default_refined``: what the photo workflow does: ``refine_disparity(disparity, image)``, then ``default``.

``--cells`` also prints one table per (K, d_f) cell (mean PSNR); ``--groups`` adds the cell table for bench_dev's
scenes 12-13 (other light statistics, its README) and for the six others; ``--tables-from JSON`` prints the tables of
an earlier run's ``--json`` without rendering anything.

PSNR and SSIM (scikit-image, data_range 1, channel_axis) on [0, 1] float images. Prints a markdown table
(mean over the images of each K level) and writes all numbers to ``--json``.

Usage:
  nice -n 10 .venv/bin/python bench/eval_quality.py                       # both data sets
  nice -n 10 .venv/bin/python bench/eval_quality.py --sets bench --weights /tmp/candidate_weights
  # a candidate ARNet training checkpoint in the default pipeline vs layered + recovery, predicted-looking map:
  nice -n 19 .venv/bin/python bench/eval_quality.py --sets bench --aperture circle --imperfect-disparity --cells \
      --arnet-checkpoint runs/arnet19/latest.pt --methods default default_bundled layered_recover --threads 1
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


METHODS = ("classical", "hybrid_ours", "neural_ours", "hybrid_analytic", "hybrid_ours_official_iunet", "slices16",
           "classical_boost", "peer_layered", "peer_layered_boost", "layered", "layered_boost", "hybrid_layered",
           "hybrid_layered_boost", "layered_recover", "default", "default_bundled", "default_refined",
           "layered_recover_fixed", "layered_recover_auto")
NEURAL = {"hybrid_ours", "neural_ours", "hybrid_analytic", "hybrid_ours_official_iunet", "hybrid_layered",
          "hybrid_layered_boost", "default", "default_refined"}


def _disk_kernel(radius: float, supersample: int = 8) -> torch.Tensor:
    """Anti-aliased disk of ``radius`` px (area coverage of every pixel, supersampled), normalised to sum 1."""
    half = int(math.ceil(radius + 0.5))
    offsets = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    fine = (grid.view(-1, 1) + offsets.view(1, -1)).flatten()  # sub-sample centres along one axis
    inside = (fine.view(-1, 1) ** 2 + fine.view(1, -1) ** 2) <= radius**2
    n = grid.numel()
    kernel = inside.view(n, supersample, n, supersample).to(torch.float64).mean(dim=(1, 3))
    if float(kernel.sum()) <= 0:  # smaller than one sub-sample: a point
        kernel[half, half] = 1.0
    return (kernel / kernel.sum()).to(torch.float32)


def layered_peer(image: torch.Tensor, disparity: torch.Tensor, K: float, focus: float, gamma: float = GAMMA,
                 highlight: bool = False, n_slabs: int = 24) -> torch.Tensor:
    """The layered compositor peer of ``../shared/bench_dev/README.md`` (our own code of the method described there).

    ``n_slabs`` uniform disparity slabs over [0, 1]; each slab's mask (pixels whose disparity falls in it) and
    premultiplied linear colour (``image ** gamma``) convolved with a disk of radius
    ``K * |slab mean disparity - d_f|`` (mean over the slab's pixels; the disk's pixel coverage 4x4 supersampled,
    normalised to sum 1; zero padding); composited far to near with "over"; divided by the accumulated
    coverage; ``** (1 / gamma)``. ``highlight``: official boost (docs/official-behaviour.md, section 3) first, values > 1 kept.
    Reproduces the README's reference table within 0.05 dB (bench/README.md). Reading the README's "4x4
    supersampled coverage" as supersampled slab masks instead (bilinear disparity, 16 sub-samples per pixel)
    scores 0.1-0.4 dB lower at d_f = 0.1 and 0.9.
    image (1,3,H,W) sRGB, disparity (1,1,H,W) -> (1,3,H,W), not clamped.
    """
    from bokehme_core import apply_highlight

    if highlight:
        image = apply_highlight(image, signed_defocus(disparity, K, focus), K)
    linear = image.clamp(min=0) ** gamma
    _, _, H, W = image.shape
    index = (disparity * n_slabs).floor().clamp(0, n_slabs - 1)
    acc = torch.zeros(1, 4, H, W)
    for i in range(n_slabs):
        members = index == i
        if not bool(members.any()):
            continue
        coverage = members.to(torch.float32)
        radius = K * abs(float(disparity[members].mean()) - focus)
        layer = torch.cat([linear * coverage, coverage], dim=1)
        if radius > 0:
            layer = _fft_convolve(layer, _disk_kernel(radius, supersample=4))
        alpha = layer[:, 3:4].clamp(0, 1)
        acc = layer + (1 - alpha) * acc
    out = acc[:, :3] / acc[:, 3:].clamp(min=1e-6)
    return out.clamp(min=0) ** (1 / gamma)


def _fft_convolve(layer: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """'same' convolution of (1,C,H,W) with a small odd (k,k) kernel, zero padding, via FFT."""
    _, C, H, W = layer.shape
    k = kernel.shape[-1]
    half = k // 2
    size = (H + k - 1, W + k - 1)
    spec = torch.fft.rfft2(layer, s=size) * torch.fft.rfft2(kernel.flip(0, 1), s=size)
    full = torch.fft.irfft2(spec, s=size)
    return full[..., half:half + H, half:half + W]


class Methods:
    def __init__(self, weights: pathlib.Path, official_iunet: pathlib.Path | None, names=METHODS,
                 arnet_checkpoint: pathlib.Path | None = None) -> None:
        self.names = set(names) | {"classical"}
        if self.names & (NEURAL | {"default_bundled"}):
            from bokehme_core.weights import load_arnet, load_iunet

            self.arnet = load_arnet(weights / "arnet.safetensors")
            self.iunet = load_iunet(weights / "iunet.safetensors")
            self.bundled_arnet = self.arnet
            if arnet_checkpoint is not None:
                self.arnet = load_arnet_checkpoint(arnet_checkpoint)
            wanted = "hybrid_ours_official_iunet" in self.names
            self.official_iunet = (load_iunet(official_iunet)
                                   if wanted and official_iunet and official_iunet.exists() else None)
        else:
            self.official_iunet = None

    def run(self, image, disparity, K, focus, aperture) -> dict:
        out = {}
        defocus = signed_defocus(disparity, K, focus)
        t = time.time()
        classical = render_classical(image, defocus, gamma=GAMMA, aperture=aperture, mode="exact")
        out["classical"] = classical.bokeh.clamp(0, 1)
        logger.debug("classical %.1f s", time.time() - t)
        if self.names & {"hybrid_ours", "neural_ours", "hybrid_analytic"}:
            from bokehme_core.pipeline import render_neural

            neural = render_neural(
                image, defocus, classical.dilated_defocus, gamma=GAMMA, arnet=self.arnet, iunet=self.iunet
            )
            out["hybrid_ours"] = fuse(classical.bokeh, neural.bokeh, neural.error_map).clamp(0, 1)
            out["neural_ours"] = neural.bokeh.clamp(0, 1)
            if "hybrid_analytic" in self.names:
                analytic = analytic_error_map(disparity, K, focus)
                out["hybrid_analytic"] = fuse(classical.bokeh, neural.bokeh, analytic).clamp(0, 1)
        if self.official_iunet is not None:
            from bokehme_core.pipeline import render_neural

            mixed = render_neural(
                image, defocus, classical.dilated_defocus, gamma=GAMMA, arnet=self.arnet, iunet=self.official_iunet
            )
            out["hybrid_ours_official_iunet"] = fuse(classical.bokeh, mixed.bokeh, mixed.error_map).clamp(0, 1)
        if "slices16" in self.names:
            out["slices16"] = layered_gaussian_baseline(image, defocus, gamma=GAMMA).clamp(0, 1)
        if "classical_boost" in self.names:
            out["classical_boost"] = render_classical(image, defocus, gamma=GAMMA, aperture=aperture, mode="exact",
                                                      highlight=True, K=K).bokeh.clamp(0, 1)
        for boost in (False, True):
            suffix = "_boost" if boost else ""
            if "peer_layered" + suffix in self.names:
                out["peer_layered" + suffix] = layered_peer(image, disparity, K, focus, highlight=boost).clamp(0, 1)
            if "layered" + suffix in self.names:
                t = time.time()
                out["layered" + suffix] = render_classical(image, defocus, gamma=GAMMA, aperture=aperture,
                                                           mode="layered", highlight=boost, K=K).bokeh.clamp(0, 1)
                logger.debug("layered %.1f s", time.time() - t)
            if "hybrid_layered" + suffix in self.names:
                # the hybrid with the layered classical renderer: the networks see the same (boosted) image
                from bokehme_core.defocus import render_inputs
                from bokehme_core.neural.stages import render_neural

                boosted, _ = render_inputs(image, disparity, K, focus, highlight=boost)
                layered = render_classical(boosted, defocus, gamma=GAMMA, aperture=aperture, mode="layered")
                neural = render_neural(boosted, defocus, layered.dilated_defocus, gamma=GAMMA, arnet=self.arnet,
                                       iunet=self.iunet)
                out["hybrid_layered" + suffix] = fuse(layered.bokeh, neural.bokeh, neural.error_map).clamp(0, 1)
        if "layered_recover" in self.names:
            from bokehme_core.defocus import render_inputs

            recovered, _ = render_inputs(image, disparity, K, focus, recover=True)
            out["layered_recover"] = render_classical(recovered, defocus, gamma=GAMMA, aperture=aperture,
                                                      mode="layered").bokeh.clamp(0, 1)
        for suffix, gain in (("_fixed", None), ("_auto", "auto")):
            if "layered_recover" + suffix in self.names:
                from bokehme_core.defocus import RECOVER_GAIN, recover_highlights

                recovered = recover_highlights(image, defocus, gain=RECOVER_GAIN if gain is None else gain)
                out["layered_recover" + suffix] = render_classical(recovered, defocus, gamma=GAMMA, aperture=aperture,
                                                                   mode="layered").bokeh.clamp(0, 1)
        if "default" in self.names:
            from bokehme_core import render_bokehme

            out["default"] = render_bokehme(image, disparity, K=K, focus=focus, gamma=GAMMA, arnet=self.arnet,
                                            iunet=self.iunet, aperture=aperture).bokeh
        if "default_refined" in self.names:
            from bokehme_core import refine_disparity, render_bokehme

            out["default_refined"] = render_bokehme(image, refine_disparity(disparity, image), K=K, focus=focus,
                                                    gamma=GAMMA, arnet=self.arnet, iunet=self.iunet,
                                                    aperture=aperture).bokeh
        if "default_bundled" in self.names:
            from bokehme_core import render_bokehme

            out["default_bundled"] = render_bokehme(image, disparity, K=K, focus=focus, gamma=GAMMA,
                                                    arnet=self.bundled_arnet, iunet=self.iunet, aperture=aperture).bokeh
        return {name: pred for name, pred in out.items() if name in self.names}


def load_arnet_checkpoint(path: pathlib.Path):
    """ARNet from a training checkpoint (``training/train_arnet.py``'s ``latest.pt``: model state, width, step),
    loaded strictly, in eval mode."""
    from bokehme_core.neural.arnet import ARNet

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = ARNet(middle_channels=int(ckpt["width"]))
    model.load_state_dict(ckpt["model"], strict=True)
    logger.info("candidate ARNet: %s (step %d, width %d)", path, int(ckpt["step"]), int(ckpt["width"]))
    return model.eval()


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


def imperfect(disparity: torch.Tensor) -> torch.Tensor:
    """What a predicted depth map looks like (``--imperfect-disparity``): near side dilated by 2 px (a 5x5 max filter),
    Gaussian blur sigma 2 px, then 8-bit quantisation."""
    import torch.nn.functional as F

    d = F.max_pool2d(disparity, 5, stride=1, padding=2)
    radius = 6
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(taps**2) / (2 * 2.0**2))
    kernel = kernel / kernel.sum()
    d = F.conv2d(F.pad(d, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    d = F.conv2d(F.pad(d, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return (d.clamp(0, 1) * 255).round() / 255


def shifted(disparity: torch.Tensor) -> torch.Tensor:
    """A misaligned map (``--imperfect-disparity shift``): moved 2 px right and 2 px down (borders repeated),
    then 8-bit."""
    import torch.nn.functional as F

    d = F.pad(disparity, (2, 0, 2, 0), mode="replicate")[..., : disparity.shape[-2], : disparity.shape[-1]]
    return (d * 255).round() / 255


def eroded(disparity: torch.Tensor) -> torch.Tensor:
    """A map whose near side is too small (``--imperfect-disparity erode``): eroded by 2 px (a 5x5 min filter),
    then 8-bit."""
    import torch.nn.functional as F

    d = -F.max_pool2d(-disparity, 5, stride=1, padding=2)
    return (d * 255).round() / 255


#: ``--imperfect-disparity`` recipes: what predicted depth maps get wrong
CORRUPTIONS = {"predicted": imperfect, "shift": shifted, "erode": eroded}


def bench_items(limit: int | None, stride: int = 1, aperture: str = "all"):
    manifest = json.loads((BENCH_DEV / "manifest.json").read_text())
    samples = [s for s in manifest["samples"] if aperture == "all" or s["aperture"] == aperture]
    for sample in samples[::stride][:limit]:
        image = _read_rgb(BENCH_DEV / sample["aif"])
        disparity = torch.from_numpy(np.load(BENCH_DEV / sample["disparity_npy"]).astype(np.float32))[None, None]
        gt = _read_rgb(BENCH_DEV / sample["gt"])
        aperture = Aperture.polygon(6) if sample["aperture"] == "hexagon" else Aperture.circle()
        yield sample["id"], sample["K"], sample["aperture"], image, disparity.clamp(0, 1), gt, float(sample["d_f"]), aperture


def synth_ground_truth(scene, K: float, focus: float, path: pathlib.Path) -> torch.Tensor:
    """Thin-lens layered ground truth of a procedural ``scene`` (gamma 2.2), 8-bit like a photo; rendered once,
    then read from ``path`` (a .npy cache of the unquantised render)."""
    from bokehme_core.synth.lens import render_layers

    if path.exists():
        gt = torch.from_numpy(np.load(path))
    else:
        gt = render_layers(scene.layers, K, focus, GAMMA, spacing_px=1.0).clamp(0, 1)
        np.save(path, gt.numpy())
    return (gt * 255).round() / 255


def synth_items(limit: int | None, cache: pathlib.Path):
    from bokehme_core.synth.scene import make_scene

    cache.mkdir(parents=True, exist_ok=True)
    items = [(i, K) for i in range(3) for K in SYNTH_K][:limit]
    for i, K in items:
        seed = SYNTH_SEED + i
        scene = make_scene(*SYNTH_SIZE, seed, objects=(3, 6), highlights=(15, 40))
        focus = float(np.random.default_rng(seed).uniform(0.1, 0.9))
        gt = synth_ground_truth(scene, K, focus, cache / f"gt_{seed}_K{K}.npy")
        image = (scene.image * 255).round() / 255  # 8-bit inputs, like photos
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
    parser.add_argument("--cells", action="store_true", help="also print mean PSNR per (K, d_f) cell (circle)")
    parser.add_argument("--aperture", choices=["all", "circle", "hexagon"], default="all",
                        help="bench_dev items of this aperture only")
    parser.add_argument("--imperfect-disparity", nargs="?", const="predicted", default=None, choices=list(CORRUPTIONS),
                        help="every method gets a corrupted disparity instead of the true one: predicted (default: "
                             "8-bit, near side dilated 2 px, Gaussian sigma 2 px), shift (misaligned 2 px), erode "
                             "(near side eroded 2 px)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="methods to evaluate (classical is always included: the reference row)")
    parser.add_argument("--arnet-checkpoint", type=pathlib.Path, default=None,
                        help="ARNet training checkpoint (latest.pt) used instead of --weights' ARNet by the neural "
                             "methods (a candidate; default_bundled keeps the bundled one)")
    parser.add_argument("--groups", action="store_true",
                        help="with --cells: also the cell tables of bench_dev scenes 12-13 and of the six others")
    parser.add_argument("--tables-from", type=pathlib.Path, default=None,
                        help="print the tables of an earlier run's --json file and exit (renders nothing)")
    args = parser.parse_args()
    if args.tables_from is not None:
        results = json.loads(args.tables_from.read_text())["results"]
        print(format_tables(results))
        if args.cells:
            print(format_cells(results, args.groups))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    methods = Methods(args.weights, args.official_iunet, args.methods, args.arnet_checkpoint)
    results = {}
    with torch.inference_mode():
        for set_name in args.sets:
            items = bench_items(args.limit, args.stride, args.aperture) if set_name == "bench" else synth_items(args.limit, ROOT / "runs" / "eval" / "synth_gt")
            rows = []
            for item_id, K, aperture_name, image, disparity, gt, focus, aperture in items:
                t = time.time()
                if args.imperfect_disparity:
                    disparity = CORRUPTIONS[args.imperfect_disparity](disparity)
                outputs = methods.run(image, disparity, K, focus, aperture)
                row = {"id": item_id, "K": K, "aperture": aperture_name, "d_f": focus}
                for name, pred in outputs.items():
                    row[name] = metrics(pred, gt)
                rows.append(row)
                logger.info("%s %s (%.0f s)", item_id, {k: round(v[0], 2) for k, v in row.items() if isinstance(v, tuple)}, time.time() - t)
            results[set_name] = rows
    args.json.parent.mkdir(parents=True, exist_ok=True)
    digest = ({n: tensor_digest(args.weights / f"{n}.safetensors") for n in ("arnet", "iunet")}
              if methods.names & NEURAL else None)
    if digest is not None and args.arnet_checkpoint is not None:
        import hashlib

        digest["arnet"] = None  # not the bundled ARNet: the checkpoint file identifies it
        digest["arnet_checkpoint_sha256"] = hashlib.sha256(args.arnet_checkpoint.read_bytes()).hexdigest()
    args.json.write_text(json.dumps({"weights": str(args.weights), "arnet_checkpoint": str(args.arnet_checkpoint),
                                     "tensor_digest": digest, "results": results}, indent=1))
    print(format_tables(results))
    if args.cells:
        print(format_cells(results, args.groups))


#: bench_dev scene groups of ``--groups``: scenes 12-13 have other light statistics (../shared/bench_dev/README.md)
SCENE_GROUPS = {"scenes 12-13": ("scene_12", "scene_13")}


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


def format_cells(results: dict, groups: bool = False) -> str:
    """Markdown table: mean PSNR per (K, d_f) cell (circle aperture), one column per method; with ``groups``,
    bench_dev's :data:`SCENE_GROUPS` and the rest get a table each, too (the last row: mean of the cells)."""
    if groups and "bench" in results:
        expanded = {}
        for set_name, rows in results.items():
            expanded[set_name] = rows
            if set_name != "bench":
                continue
            for label, scenes in SCENE_GROUPS.items():
                inside = [r for r in rows if r["id"].split("/")[0] in scenes]
                outside = [r for r in rows if r["id"].split("/")[0] not in scenes]
                expanded[f"bench, {label}"] = inside
                expanded[f"bench, all but {label}"] = outside
        results = expanded
    lines = []
    for set_name, rows in results.items():
        rows = [r for r in rows if r["aperture"] == "circle" and "d_f" in r]
        if not rows:
            continue
        names = [k for k in rows[0] if isinstance(rows[0][k], (tuple, list))]
        cells: dict = {}
        for row in rows:
            cells.setdefault((row["K"], round(row["d_f"], 3)), []).append(row)
        lines.append(f"\n### {set_name}: mean PSNR dB per (K, d_f) cell, circle (n per cell: "
                     f"{min(len(v) for v in cells.values())})\n")
        lines.append("| (K, d_f) | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for key in sorted(cells):
            members = cells[key]
            values = [float(np.mean([m[name][0] for m in members])) for name in names]
            lines.append(f"| ({key[0]}, {key[1]:g}) | " + " | ".join(f"{v:.2f}" for v in values) + " |")
        if groups:
            means = [float(np.mean([np.mean([m[name][0] for m in cells[key]]) for key in cells])) for name in names]
            lines.append("| mean of the cells | " + " | ".join(f"{v:.2f}" for v in means) + " |")
    return "\n".join(lines)


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

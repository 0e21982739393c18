"""Speed of the full BokehMe pipeline on the CPU, split by stage; peak memory at 4K.

Usage (from the repository root):

    nice -n 10 .venv/bin/python bench/bench_pipeline.py                 # 1920x1080, K = 10, 30, 50
    nice -n 10 .venv/bin/python bench/bench_pipeline.py --repeats 5 --K 30
    nice -n 10 .venv/bin/python bench/bench_pipeline.py --memory-4k     # one 3840x2160 K=100 render, peak RSS

Input: the official demo image ``inputs/3.jpg`` and its 16-bit disparity (../shared/bokehme_official), resized
to the benchmark size; focus 0.5, gamma 4, classical renderer in "fast" mode, official-size networks with
random weights (speed does not depend on the values). Prints markdown tables: median of ``--repeats`` runs
per stage, and the ratio of the full pipeline to the classical renderer alone (the baseline, same process).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bokehme_core import pipeline as P  # noqa: E402
from bokehme_core import render_classical  # noqa: E402
from bokehme_core.defocus import signed_defocus  # noqa: E402
from bokehme_core.disparity import load_disparity, normalize_disparity  # noqa: E402
from bokehme_core.fusion import fuse  # noqa: E402
from bokehme_core.neural.arnet import ARNet  # noqa: E402
from bokehme_core.neural.iunet import IUNet  # noqa: E402

OFFICIAL = ROOT.parent / "shared" / "bokehme_official"


def load_scene(height: int, width: int) -> tuple:
    """Demo image 3 and its disparity resized to (height, width): (1,3,H,W), (1,1,H,W) in [0,1]."""
    from PIL import Image

    rgb = np.asarray(Image.open(OFFICIAL / "inputs" / "3.jpg").convert("RGB"), dtype=np.float32) / 255.0
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    disparity = normalize_disparity(load_disparity(OFFICIAL / "inputs" / "3.png"))
    image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)
    disparity = F.interpolate(disparity, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)
    return image.contiguous(), disparity.contiguous()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_stages(image, disparity, K, arnet, iunet, tile_size=None) -> dict:
    """One render, stage by stage, as render_bokehme does it; returns seconds per stage."""
    times = {}
    with torch.inference_mode():
        defocus = signed_defocus(disparity, K, 0.5)
        classical, times["classical (fast)"] = timed(lambda: render_classical(image, defocus, gamma=4.0, mode="fast"))
        (bokeh_lr, error, scale), times["ARNet"] = timed(lambda: P.arnet_stage(arnet, image, defocus, 4.0, tile_size))
        neural, times["IUNet"] = timed(lambda: P.iunet_stage(
            iunet, image, defocus, classical.dilated_defocus, bokeh_lr, scale, 4.0, tile_size))
        _, times["fusion"] = timed(lambda: fuse(classical.bokeh, neural, error).clamp(0, 1))
    times["neural (ARNet+IUNet+fusion)"] = times["ARNet"] + times["IUNet"] + times["fusion"]
    times["total"] = times["classical (fast)"] + times["neural (ARNet+IUNet+fusion)"]
    times["_scale"] = scale
    return times


def networks(weights: str):
    """Official-size networks with random weights (speed does not depend on the values), or the bundled ones."""
    torch.manual_seed(0)
    if weights == "bundled":
        from bokehme_core.weights import load_bundled_models

        return load_bundled_models("cpu")
    return ARNet().eval(), IUNet().eval()


def bench_1080p(Ks, repeats: int, weights: str = "official-size") -> None:
    arnet, iunet = networks(weights)
    image, disparity = load_scene(1080, 1920)
    run_stages(image[..., :256, :256], disparity[..., :256, :256], 10.0, arnet, iunet)  # warm-up
    rows = []
    for K in Ks:
        runs = [run_stages(image, disparity, K, arnet, iunet) for _ in range(repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append((K, med))
    stages = ["classical (fast)", "ARNet", "IUNet", "fusion", "neural (ARNet+IUNet+fusion)", "total"]
    widths = f"ARNet {arnet.conv0.conv.out_channels} ch, IUNet {iunet.conv0.conv.out_channels} ch"
    print(f"\n1920x1080, CPU, {torch.get_num_threads()} threads, {weights} networks ({widths}), "
          f"median of {repeats} runs (seconds)\n")
    print("| K | adapt scale s | IUNet passes | " + " | ".join(stages) + " | total / classical |")
    print("|---|---|---|" + "---|" * len(stages) + "---|")
    for K, med in rows:
        s = med["_scale"]
        cells = " | ".join(f"{med[k]:.2f}" for k in stages)
        print(f"| {K:g} | {s:.2f} | {P.num_iunet_passes(s)} | {cells} | {med['total'] / med['classical (fast)']:.2f}x |")


def bench_memory_4k(K: float) -> None:
    torch.manual_seed(0)
    arnet, iunet = ARNet().eval(), IUNet().eval()
    image, disparity = load_scene(2160, 3840)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    start = time.perf_counter()
    result = P.render_bokehme(image, disparity, K=K, focus=0.5, arnet=arnet, iunet=iunet, classical_mode="fast")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"\n3840x2160, K={K:g}, classical fast, default tiles ({P.DEFAULT_TILE_SIZE} px), CPU, "
          f"{torch.get_num_threads()} threads\n")
    print("| peak RSS before render (GiB) | peak RSS (GiB) | seconds | output finite |")
    print("|---|---|---|---|")
    print(f"| {before:.2f} | {peak:.2f} | {seconds:.1f} | {bool(torch.isfinite(result.bokeh).all())} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=float, nargs="+", default=[10.0, 30.0, 50.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--memory-4k", action="store_true", help="one 4K render at K=100 and its peak memory")
    parser.add_argument("--weights", choices=("official-size", "bundled"), default="official-size",
                        help="official-size random networks (default) or the bundled (narrower) trained ones")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_4k:
        bench_memory_4k(100.0)
    else:
        bench_1080p(args.K, max(args.repeats, 3), args.weights)


if __name__ == "__main__":
    main()

"""Disparity estimation speed: Depth Anything V2 vits (and MiDaS DPT-Hybrid) on a 1920x1080 image.

Random weights in the official layout (timing does not depend on the values). Prints a markdown table:
median of --runs runs after one warm-up, ratio vs the baseline row (vits, processing resolution 518, full
``estimate()`` pipeline) measured in the same process.

    nice -n 10 .venv/bin/python bench/bench_depth.py [--runs 3] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bokehme_core.depth import build_model  # noqa: E402


def _time(fn, runs: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--skip-hybrid", action="store_true", help="time only Depth Anything V2 vits")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    image = torch.rand(1, 3, 1080, 1920, generator=torch.Generator().manual_seed(0)).to(device)

    torch.manual_seed(0)
    vits = build_model("depth_anything_v2", "vits").eval().to(device)
    rows = []
    x = vits.preprocess(image, 518)
    rows.append(("DA-V2 vits, estimate(), processing_res 518 (baseline)", tuple(x.shape[-2:]), torch.float32,
                 lambda: vits.estimate(image, processing_res=518)))
    rows.append(("DA-V2 vits, network forward only, 518", tuple(x.shape[-2:]), torch.float32, lambda: vits(x)))
    x364 = vits.preprocess(image, 364)
    rows.append(("DA-V2 vits, estimate(), processing_res 364", tuple(x364.shape[-2:]), torch.float32,
                 lambda: vits.estimate(image, processing_res=364)))
    if device.type == "cuda":
        vits16 = build_model("depth_anything_v2", "vits").eval().to(device, torch.float16)
        rows.append(("DA-V2 vits, estimate(), 518, fp16", tuple(x.shape[-2:]), torch.float16,
                     lambda: vits16.estimate(image, processing_res=518)))
    if not args.skip_hybrid:
        hybrid = build_model("midas_dpt", "dpt_hybrid").eval().to(device)
        xh = hybrid.preprocess(image)
        rows.append(("MiDaS DPT-Hybrid, estimate(), processing_res 384", tuple(xh.shape[-2:]), torch.float32,
                     lambda: hybrid.estimate(image)))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"Disparity estimation, 1920x1080 input, {name}, torch {torch.__version__}, median of {args.runs} runs\n")
    print("| configuration | network input (h, w) | time (s) | ratio vs baseline |")
    print("|---|---|---|---|")
    baseline = None
    for label, size, _, fn in rows:
        t = _time(fn, args.runs, device)
        baseline = baseline or t
        print(f"| {label} | {size[0]} x {size[1]} | {t:.3f} | {t / baseline:.2f} |", flush=True)


if __name__ == "__main__":
    main()

"""Speed and memory of the default BokehMe pipeline on this machine, stage by stage, against a depth-sliced blend.

Usage (from the repository root; the baseline needs ``pip install opencv-python-headless``, a bench-only tool):

    nice -n 10 .venv/bin/python bench/bench_pipeline.py                    # 1920x1080, K = 10, 30, 50
    nice -n 10 .venv/bin/python bench/bench_pipeline.py --K 30 --repeats 5
    nice -n 10 .venv/bin/python bench/bench_pipeline.py --video            # 24-frame 1080p focus pull, fps
    nice -n 10 .venv/bin/python bench/bench_pipeline.py --memory-4k        # 3840x2160 K=100, peak RSS (own process)
    nice -n 10 .venv/bin/python bench/bench_pipeline.py --base /tmp/base   # A/B: another checkout's default, same process

Input: the official demo image ``inputs/3.jpg`` and its 16-bit disparity (../shared/bokehme_official), resized to
the benchmark size; focus 0.5, gamma 4, the bundled weights. "hybrid (default)" is exactly what a user gets from
``render_bokehme`` and the all-in-one node with their defaults; the stage rows split the same computation.
The baseline is what popular ComfyUI depth-of-field nodes do: 16 disparity slices, each premultiplied slice
blurred with OpenCV's Gaussian (sigma = its blur radius / 2) and composited far to near, run in the same process.
Every cell is the median of ``--repeats`` runs; ratios are against the baseline's median.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bokehme_core as bm  # noqa: E402
from bokehme_core.defocus import render_inputs  # noqa: E402
from bokehme_core.error_map import error_gate  # noqa: E402
from bokehme_core.neural import stages  # noqa: E402
from bokehme_core.weights import load_bundled_models  # noqa: E402

OFFICIAL = ROOT.parent / "shared" / "bokehme_official"


def load_scene(height: int, width: int) -> tuple:
    """Demo image 3 and its disparity resized to (height, width): (1,3,H,W), (1,1,H,W) in [0,1]."""
    from PIL import Image

    rgb = np.asarray(Image.open(OFFICIAL / "inputs" / "3.jpg").convert("RGB"), dtype=np.float32) / 255.0
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    disparity = bm.normalize_disparity(bm.load_disparity(OFFICIAL / "inputs" / "3.png"))
    image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)
    disparity = F.interpolate(disparity, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)
    return image.contiguous(), disparity.contiguous()


def sliced_gaussian_blend(image: torch.Tensor, disparity: torch.Tensor, K: float, focus: float,
                          gamma: float = 4.0, slices: int = 16) -> np.ndarray:
    """The baseline: 16 equal disparity slices, each premultiplied (linear ** gamma) slice and its alpha
    blurred with cv2.GaussianBlur (sigma = K * |slice centre - focus| / 2), composited far to near."""
    import cv2

    rgb = np.ascontiguousarray(image[0].permute(1, 2, 0).numpy()) ** gamma
    disp = disparity[0, 0].numpy()
    out = np.zeros_like(rgb)
    edges = np.linspace(0.0, 1.0 + 1e-6, slices + 1)
    for i in range(slices):  # far (disparity 0) first
        alpha = ((disp >= edges[i]) & (disp < edges[i + 1])).astype(np.float32)
        if not alpha.any():
            continue
        layer = np.dstack([rgb * alpha[..., None], alpha])
        sigma = K * abs((edges[i] + edges[i + 1]) / 2 - focus) / 2
        if sigma > 0.3:
            layer = cv2.GaussianBlur(layer, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE)
        a = np.clip(layer[..., 3:], 0, 1)
        out = out * (1 - a) + layer[..., :3]
    return np.clip(out, 0, None) ** (1 / gamma)


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def stage_split(image, disparity, K, arnet, iunet, mode: str) -> dict:
    """The default pipeline's stages, timed one by one (same calls as render_bokehme)."""
    times = {}
    with torch.inference_mode():
        start = time.perf_counter()
        img, defocus = render_inputs(image, disparity, K, 0.5, recover=True)
        classical = bm.render_classical(img, defocus, gamma=4.0, mode=mode)
        times["classical"] = time.perf_counter() - start
        start = time.perf_counter()
        gate = error_gate(defocus, mode)
        times["error gate"] = time.perf_counter() - start
        start = time.perf_counter()
        if gate is not None:  # the pipeline's sparse ARNet: only the cells the gated pixels depend on
            scale = stages.adaptive_scale(defocus)
            needed = stages.arnet_needed(gate > 0, scale, iunet.config.num_convs)
            lowres, error, scale = stages.arnet_stage(arnet, img, defocus, 4.0, scale=scale, needed=needed)
        else:
            lowres, error, scale = stages.arnet_stage(arnet, img, defocus, 4.0)
        times["ARNet (sparse)"] = time.perf_counter() - start
        start = time.perf_counter()
        if gate is not None:
            error = error * gate
        needed = error > stages.SPARSE_ERROR_THRESHOLD
        neural = stages.iunet_stage(iunet, img, defocus, classical.dilated_defocus, lowres, scale, 4.0, needed=needed)
        times["IUNet (sparse)"] = time.perf_counter() - start
        start = time.perf_counter()
        bm.fuse(classical.bokeh, neural, error).clamp(0, 1)
        times["fusion"] = time.perf_counter() - start
    times["scale"] = scale
    return times


def default_classical_mode() -> str:
    import inspect

    return inspect.signature(bm.render_bokehme).parameters["classical_mode"].default


def bench_1080p(Ks, repeats: int) -> None:
    arnet, iunet = load_bundled_models("cpu")
    image, disparity = load_scene(1080, 1920)
    mode = default_classical_mode()
    # warm-up: numba compiles (or loads its cache), torch allocates
    bm.render_bokehme(image[..., :256, :256], disparity[..., :256, :256], K=10, focus=0.5, arnet=arnet, iunet=iunet)
    bm.render_classical(image[..., :64, :64], bm.signed_defocus(disparity[..., :64, :64], 5, 0.5), mode="fast")
    print(f"\n1920x1080, CPU, {torch.get_num_threads()} threads, bundled weights (ARNet "
          f"{arnet.config.middle_channels} ch, IUNet {iunet.config.middle_channels} ch), default classical mode "
          f"'{mode}', focus 0.5, gamma 4; median of {repeats} runs, seconds (ratio to the 16-slice blend)\n")
    print("| K | 16-slice blend (OpenCV) | classical fast | hybrid (default) | hybrid, dense networks | "
          "stages of the default: classical / error gate / ARNet (sparse) / IUNet (sparse) / fusion | s |")
    print("|---|---|---|---|---|---|---|")
    for K in Ks:
        defocus = bm.signed_defocus(disparity, K, 0.5)
        runs = {
            "blend": lambda: sliced_gaussian_blend(image, disparity, K, 0.5),
            "fast": lambda: bm.render_classical(image, defocus, gamma=4.0, mode="fast"),
            "hybrid": lambda: bm.render_bokehme(image, disparity, K=K, focus=0.5, arnet=arnet, iunet=iunet),
            "dense": lambda: bm.render_bokehme(image, disparity, K=K, focus=0.5, arnet=arnet, iunet=iunet,
                                               sparse=False),
        }
        times = {name: [] for name in runs}
        splits = []
        for _ in range(repeats):  # interleaved: a change of the machine's load hits every column alike
            for name, fn in runs.items():
                times[name].append(median_seconds(fn, 1))
            splits.append(stage_split(image, disparity, K, arnet, iunet, mode))
        blend, fast, hybrid, dense = (statistics.median(times[name]) for name in runs)
        med = {k: statistics.median(s[k] for s in splits) for k in splits[0]}
        parts = " / ".join(f"{med[k]:.2f}" for k in ("classical", "error gate", "ARNet (sparse)", "IUNet (sparse)",
                                                     "fusion"))
        print(f"| {K:g} | {blend:.2f} | {fast:.2f} ({fast / blend:.2f}x) | **{hybrid:.2f} ({hybrid / blend:.2f}x)** | "
              f"{dense:.2f} ({dense / blend:.2f}x) | {parts} | {med['scale']:.2f} |", flush=True)


def bench_ab(base_root: pathlib.Path, Ks, repeats: int) -> None:
    """The default pipeline of another checkout (``base``) against this one, interleaved in one process with the
    16-slice blend (alternating order), and the largest difference of their fused outputs."""
    from bench_classical import load_checkout

    base = load_checkout("base_core", base_root)
    base_nets = importlib.import_module("base_core.weights").load_bundled_models("cpu")
    arnet, iunet = load_bundled_models("cpu")
    image, disparity = load_scene(1080, 1920)
    for core, nets in ((base, base_nets), (bm, (arnet, iunet))):  # warm-up (numba kernels, allocations)
        core.render_bokehme(image[..., :256, :256], disparity[..., :256, :256], K=10, focus=0.5, arnet=nets[0],
                            iunet=nets[1])
    print(f"\n1920x1080, CPU, {torch.get_num_threads()} threads, defaults, focus 0.5; base = {base_root}; median of "
          f"{repeats} interleaved rounds, seconds (ratio to the 16-slice blend)\n")
    print("| K | 16-slice blend | base default | this default | this / base | max abs diff of the fused outputs |")
    print("|---|---|---|---|---|---|")
    for K in Ks:
        runs = {
            "blend": lambda: sliced_gaussian_blend(image, disparity, K, 0.5),
            "base": lambda: base.render_bokehme(image, disparity, K=K, focus=0.5, arnet=base_nets[0],
                                                iunet=base_nets[1]).bokeh,
            "new": lambda: bm.render_bokehme(image, disparity, K=K, focus=0.5, arnet=arnet, iunet=iunet).bokeh,
        }
        times = {name: [] for name in runs}
        outputs = {}
        for r in range(repeats):
            for name in (list(runs) if r % 2 == 0 else list(reversed(runs))):
                start = time.perf_counter()
                outputs[name] = runs[name]()
                times[name].append(time.perf_counter() - start)
        blend, old, new = (statistics.median(times[name]) for name in runs)
        diff = float((outputs["base"] - outputs["new"]).abs().max())
        print(f"| {K:g} | {blend:.2f} | {old:.2f} ({old / blend:.2f}x) | **{new:.2f} ({new / blend:.2f}x)** | "
              f"{new / old:.2f} | {diff:.1e} |", flush=True)


def bench_video(frames: int) -> None:
    """A focus pull over ``frames`` 1080p frames through one render_bokehme call per frame, models loaded once."""
    arnet, iunet = load_bundled_models("cpu")
    image, disparity = load_scene(1080, 1920)
    bm.render_bokehme(image[..., :256, :256], disparity[..., :256, :256], K=10, focus=0.5, arnet=arnet, iunet=iunet)
    focus = torch.linspace(0.9, 0.1, frames)
    start = time.perf_counter()
    for f in focus:
        bm.render_bokehme(image, disparity, K=30, focus=float(f), arnet=arnet, iunet=iunet)
    seconds = time.perf_counter() - start
    blend_start = time.perf_counter()
    for f in focus[:4]:
        sliced_gaussian_blend(image, disparity, 30, float(f))
    blend_fps = 4 / (time.perf_counter() - blend_start)
    print(f"\n{frames}-frame focus pull 0.9 -> 0.1, 1920x1080, K=30, default settings, models loaded once, "
          f"{torch.get_num_threads()} threads\n")
    print("| frames | seconds | frames per second | 16-slice blend fps (4 frames) |")
    print("|---|---|---|---|")
    print(f"| {frames} | {seconds:.1f} | {frames / seconds:.2f} | {blend_fps:.2f} |")


def bench_memory_4k(K: float) -> None:
    arnet, iunet = load_bundled_models("cpu")
    image, disparity = load_scene(2160, 3840)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    start = time.perf_counter()
    result = bm.render_bokehme(image, disparity, K=K, focus=0.5, arnet=arnet, iunet=iunet)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"\n3840x2160, K={K:g}, default settings, bundled weights, CPU, {torch.get_num_threads()} threads, "
          f"own process\n")
    print("| peak RSS before render (GiB) | peak RSS (GiB) | seconds | output finite |")
    print("|---|---|---|---|")
    print(f"| {before:.2f} | {peak:.2f} | {seconds:.1f} | {bool(torch.isfinite(result.bokeh).all())} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=float, nargs="+", default=[10.0, 30.0, 50.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--video", action="store_true", help="a 24-frame 1080p focus pull, frames per second")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--memory-4k", action="store_true", help="one 3840x2160 K=100 render and its peak memory")
    parser.add_argument("--base", type=pathlib.Path, help="another checkout: its default pipeline against this one")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_4k and not args.in_process:  # a fresh process: its peak RSS is the render's alone
        subprocess.run([sys.executable, __file__, "--memory-4k", "--in-process", "--threads", str(args.threads)],
                       check=True)
    elif args.memory_4k:
        bench_memory_4k(100.0)
    elif args.video:
        bench_video(args.frames)
    elif args.base is not None:
        bench_ab(args.base.resolve(), args.K, max(args.repeats, 3))
    else:
        bench_1080p(args.K, max(args.repeats, 3))


if __name__ == "__main__":
    main()

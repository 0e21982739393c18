"""Benchmark of the classical scatter renderer (bokehme_core.render_classical), CPU.

Parts (run one or both):

* ``speed``: 512x512, 1920x1080, 3840x2160 at K = 10, 30, 50 on a synthetic scene (smooth disparity ramp plus
  structure: discs and bars, focus 0.5, gamma 4), modes exact and fast with the numba backend (every size) and
  the torch backend (``--torch-sizes``), against a baseline in the same process:
  a 16-layer depth-sliced Gaussian blend (what popular ComfyUI depth-of-field nodes do). Median wall time of
  ``--runs`` runs (fewer for the slowest cells: see ``--max-seconds`` and the runs column), and the peak resident memory of
  the process during the call (RSS sampled every 2 ms from /proc/self/statm by a thread; includes the
  interpreter, torch and the inputs). The numba kernels are compiled / loaded from numba's cache by a warm-up
  render on a tiny image before anything is timed (first-call compilation is not in the table).
* ``psnr``: fast vs exact PSNR on the official demo inputs (inputs/{21,13,3}.jpg, 16-bit disparity min-max
  normalised, focus 0.35, gamma 4, K = 30, 45, 60), after ``**(1/gamma)`` and clamping to [0, 1].

* ``lens``: lens character (bokehme_core.aperture.Lens) at ``--lens-size`` (default 1920x1080), K = 30, fast and
  exact modes, numba backend: plain circle vs cat's eye 0.8, ring 0.6, cat's eye 0.8 + ring 0.6 and all shapes
  (+ swirl 0.5); median of ``--runs`` runs, ratio vs the plain run of the same mode in the same process. The lens
  tables (per aperture) and numba kernels are built by a warm-up render first.

* ``layered``: the occlusion-aware mode (target: within 3x ``fast``) at ``--layered-size`` (default 1920x1080),
  K = ``--layered-K`` (default 30), numba backend (``--layered-backend``): fast vs layered, median of ``--runs``
  runs each (at least 3), the ratio taken in the same process, on the official demo image 3 (loaded and resized
  as in ``bench_pipeline.py``, focus 0.5, gamma 4) and on the synthetic scene above (focus 0.5, gamma 4).
  ``--profile`` adds a cProfile of one layered render per scene (top functions by internal time).

Usage: ``nice -n 10 .venv/bin/python bench/bench_classical.py [--part speed|psnr|lens|layered|all] [--threads 2]``.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import pathlib
import platform
import statistics
import sys
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bokehme_core import render_classical, signed_defocus  # noqa: E402

DEMO = ROOT.parent / "shared" / "bokehme_official" / "inputs"
PAGE = os.sysconf("SC_PAGE_SIZE")


# ----------------------------------------------------------------------------------------------- helpers
class PeakRSS:
    """Peak resident set size (bytes) of this process while the ``with`` block runs."""

    def __enter__(self):
        self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def _watch(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE


def load_checkout(name: str, root: pathlib.Path):
    """Import ``root/bokehme_core`` as the package ``name`` (so that two checkouts run in one process)."""
    spec = importlib.util.spec_from_file_location(name, root / "bokehme_core" / "__init__.py",
                                                  submodule_search_locations=[str(root / "bokehme_core")])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def synthetic_scene(height: int, width: int, seed: int = 0):
    """Image (1,3,H,W) in [0,1] with texture and highlights; disparity (1,1,H,W) in [0,1]: ramp + objects."""
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0, 1, height).view(1, 1, height, 1)
    xx = torch.linspace(0, 1, width).view(1, 1, 1, width)
    low = F.interpolate(torch.rand(1, 3, height // 16 + 2, width // 16 + 2, generator=g), size=(height, width),
                        mode="bilinear", align_corners=False)
    image = (0.6 * low + 0.4 * torch.rand(1, 3, height, width, generator=g) ** 3).clamp(0, 1)
    spots = torch.rand(1, 1, height, width, generator=g) > 0.998
    image = torch.where(spots, torch.ones_like(image), image)
    disparity = 0.8 * yy + 0.2 * xx  # ground plane ramp
    for i in range(6):  # discs at several depths
        cx, cy, rad = 0.15 + 0.14 * i, 0.3 + 0.07 * (i % 3), 0.08
        inside = ((xx - cx) * width / height) ** 2 + (yy - cy) ** 2 < rad**2
        disparity = torch.where(inside, torch.full_like(disparity, 0.1 + 0.16 * i), disparity)
    bars = ((xx * 12).floor() % 2 == 0) & (yy < 0.15)
    disparity = torch.where(bars, torch.full_like(disparity, 0.95), disparity).clamp(0, 1)
    return image.contiguous(), disparity.contiguous()


def layered_gaussian_baseline(image, defocus_px, gamma: float = 4.0, layers: int = 16):
    """16-layer depth-sliced Gaussian blend (the popular ComfyUI depth-of-field approach), far to near.

    Disparity slices of equal width; each slice's premultiplied image and alpha are blurred with a separable
    Gaussian of sigma = |defocus at the slice centre| / 2 and composited 'over' from far to near.
    """
    linear = image**gamma
    lo, hi = float(defocus_px.min()), float(defocus_px.max())
    edges = torch.linspace(lo, hi + 1e-6, layers + 1)
    out = torch.zeros_like(image)
    for i in range(layers):  # far (most negative defocus) first
        alpha = ((defocus_px >= edges[i]) & (defocus_px < edges[i + 1])).to(image.dtype)
        if not bool(alpha.any()):
            continue
        sigma = abs(float(edges[i] + edges[i + 1]) / 2) / 2
        layer = torch.cat([linear * alpha, alpha], dim=1)
        if sigma > 0.3:
            radius = max(1, math.ceil(3 * sigma))
            taps = torch.arange(-radius, radius + 1, dtype=image.dtype)
            kernel = torch.exp(-(taps**2) / (2 * sigma**2))
            kernel = (kernel / kernel.sum()).to(image.dtype)
            c = layer.shape[1]
            layer = F.conv2d(F.pad(layer, (radius, radius, 0, 0), mode="replicate"),
                             kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
            layer = F.conv2d(F.pad(layer, (0, 0, radius, radius), mode="replicate"),
                             kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
        color, a = layer[:, :3], layer[:, 3:].clamp(0, 1)
        out = out * (1 - a) + color
    return out.clamp(min=0) ** (1 / gamma)


def timed(fn, runs: int, max_seconds: float):
    times, peak = [], 0
    for i in range(runs):
        with PeakRSS() as rss:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        peak = max(peak, rss.peak)
        if sum(times) > max_seconds and i + 1 < runs:
            break
    return statistics.median(times), len(times), peak


def machine_line(threads: int) -> str:
    load = os.getloadavg()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__}, {threads} torch threads, "
            f"load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (1/5/15 min) at start")


# ------------------------------------------------------------------------------------------------- parts
def part_speed(args):
    sizes = {"512x512": (512, 512), "1920x1080": (1080, 1920), "3840x2160": (2160, 3840)}
    warm_image, warm_disparity = synthetic_scene(16, 16)
    for mode in ("fast", "exact"):  # compile or load the numba kernels before timing
        render_classical(warm_image, signed_defocus(warm_disparity, 10, 0.5), mode=mode, backend="numba")
    print(f"\n### Speed ({machine_line(args.threads)})\n")
    print("| size | K | baseline 16-layer (s) | fast torch (s) | fast numba (s) | fast torch / numba "
          "| exact torch (s) | exact numba (s) | exact torch / numba | numba fast / exact vs baseline "
          "| runs b/ft/fn/et/en | peak RSS numba fast / exact (GB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.sizes:
        h, w = sizes[name]
        image, disparity = synthetic_scene(h, w)
        for K in args.K:
            defocus = signed_defocus(disparity, K, 0.5)

            def render(mode, backend):
                return timed(lambda: render_classical(image, defocus, gamma=4.0, mode=mode, backend=backend),
                             args.runs, args.max_seconds)

            tb, nb, _ = timed(lambda: layered_gaussian_baseline(image, defocus), args.runs, args.max_seconds)
            tfn, nfn, mfn = render("fast", "numba")
            ten, nen, men = render("exact", "numba")
            if name in args.torch_sizes:
                tft, nft, _ = render("fast", "torch")
                tet, net, _ = render("exact", "torch")
                torch_fast = f"{tft:.2f} | {tfn:.3f} | {tft / tfn:.0f}x"
                torch_exact = f"{tet:.2f} | {ten:.3f} | {tet / ten:.0f}x"
            else:
                nft = net = 0
                torch_fast = f"not run | {tfn:.3f} | -"
                torch_exact = f"not run | {ten:.3f} | -"
            print(f"| {name} | {K:g} | {tb:.2f} | {torch_fast} | {torch_exact} | {tfn / tb:.2f}x / {ten / tb:.2f}x "
                  f"| {nb}/{nft}/{nfn}/{net}/{nen} | {mfn / 1e9:.2f} / {men / 1e9:.2f} |", flush=True)
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")


def load_demo(name: str):
    from PIL import Image

    image = np.asarray(Image.open(DEMO / f"{name}.jpg").convert("RGB"), dtype=np.float32) / 255.0
    disparity = np.asarray(Image.open(DEMO / f"{name}.png"), dtype=np.float64)
    if disparity.ndim == 3:
        disparity = disparity[..., 0]
    disparity = (disparity - disparity.min()) / max(disparity.max() - disparity.min(), 1e-12)
    return (torch.from_numpy(image).permute(2, 0, 1)[None].contiguous(),
            torch.from_numpy(disparity.astype(np.float32))[None, None].contiguous())


def part_psnr(args):
    print(f"\n### Fast vs exact on the official demo inputs ({machine_line(args.threads)})\n")
    print(f"backend: {args.backend}\n")
    print("| input | size | K | PSNR fast vs exact (dB) | max abs diff | fast (s) | exact (s) |")
    print("|---|---|---|---|---|---|---|")
    for name in ("21", "13", "3"):
        image, disparity = load_demo(name)
        for K in args.psnr_K:
            defocus = signed_defocus(disparity, K, 0.35)
            t0 = time.perf_counter()
            fast = render_classical(image, defocus, gamma=4.0, mode="fast", backend=args.backend).bokeh.clamp(0, 1)
            t1 = time.perf_counter()
            exact = render_classical(image, defocus, gamma=4.0, mode="exact", backend=args.backend).bokeh.clamp(0, 1)
            t2 = time.perf_counter()
            mse = float(((fast - exact) ** 2).mean())
            psnr = -10 * math.log10(max(mse, 1e-20))
            print(f"| {name}.jpg | {image.shape[3]}x{image.shape[2]} | {K:g} | {psnr:.1f} | "
                  f"{float((fast - exact).abs().max()):.4f} | {t1 - t0:.2f} | {t2 - t1:.2f} |", flush=True)


def part_lens(args):
    from bokehme_core.aperture import LensShape

    h, w = _size(args.lens_size)
    image, disparity = synthetic_scene(h, w)
    defocus = signed_defocus(disparity, 30.0, 0.5)
    lenses = [("plain circle", None), ("cat's eye 0.8", LensShape(cat_eye=0.8)), ("ring 0.6", LensShape(ring=0.6)),
              ("cat's eye 0.8 + ring 0.6", LensShape(cat_eye=0.8, ring=0.6)),
              ("cat's eye 0.8 + swirl 0.5 + ring 0.6", LensShape(cat_eye=0.8, swirl=0.5, ring=0.6))]
    warm_image, warm_disparity = synthetic_scene(16, 16)
    for mode in ("fast", "exact"):
        for _, lens in lenses:
            render_classical(warm_image, signed_defocus(warm_disparity, 10, 0.5), mode=mode, backend="numba", lens=lens)
    print(f"\n### Lens character, {w}x{h}, K = 30, numba ({machine_line(args.threads)})\n")
    print("| lens | fast (s) | fast vs plain | exact (s) | exact vs plain | runs f/e |")
    print("|---|---|---|---|---|---|")
    base = {}
    for name, lens in lenses:
        cells = []
        for mode in ("fast", "exact"):
            t, n, _ = timed(lambda: render_classical(image, defocus, gamma=4.0, mode=mode, backend="numba", lens=lens),
                            args.runs, args.max_seconds)
            base.setdefault(mode, t)
            cells.append((t, n))
        (tf, nf), (te, ne) = cells
        print(f"| {name} | {tf:.3f} | {tf / base['fast']:.2f}x | {te:.3f} | {te / base['exact']:.2f}x | {nf}/{ne} |",
              flush=True)
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")


def part_layered(args):
    from bench_pipeline import load_scene  # bench/ is on sys.path when this file runs as a script

    h, w = _size(args.layered_size)
    backend = args.layered_backend
    runs = max(args.runs, 3)
    warm_image, warm_disparity = synthetic_scene(16, 16)
    for mode in ("fast", "layered"):  # compile or load the numba kernels before timing
        render_classical(warm_image, signed_defocus(warm_disparity, 10, 0.5), mode=mode, backend=backend)
    scenes = [("demo 3.jpg", load_scene(h, w)), ("synthetic", synthetic_scene(h, w))]
    print(f"\n### Layered vs fast, {w}x{h}, {backend} ({machine_line(args.threads)})\n")
    print("| scene | K | fast (s) | layered (s) | layered / fast | runs f/l |")
    print("|---|---|---|---|---|---|")
    for name, (image, disparity) in scenes:
        for K in args.layered_K:
            defocus = signed_defocus(disparity, K, 0.5)
            cells = []
            for mode in ("fast", "layered"):
                t, n, _ = timed(lambda: render_classical(image, defocus, gamma=4.0, mode=mode, backend=backend),
                                runs, args.max_seconds)
                cells.append((t, n))
            (tf, nf), (tl, nl) = cells
            print(f"| {name} | {K:g} | {tf:.3f} | {tl:.3f} | {tl / tf:.2f}x | {nf}/{nl} |", flush=True)
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")
    if args.profile:
        import cProfile
        import io
        import pstats

        for name, (image, disparity) in scenes:
            defocus = signed_defocus(disparity, args.layered_K[0], 0.5)
            profiler = cProfile.Profile()
            profiler.enable()
            render_classical(image, defocus, gamma=4.0, mode="layered", backend=backend)
            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
            print(f"\n#### cProfile, layered, {name}, K = {args.layered_K[0]:g}\n\n```\n{text.getvalue().strip()}\n```")


def _size(text: str) -> tuple[int, int]:
    """'1920x1080' -> (height, width)."""
    width, height = (int(v) for v in text.split("x"))
    return height, width


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["speed", "psnr", "lens", "layered", "all"], default="all")
    parser.add_argument("--lens-size", default="1920x1080", help="image size of the lens part (WxH)")
    parser.add_argument("--layered-size", default="1920x1080", help="image size of the layered part (WxH)")
    parser.add_argument("--layered-K", nargs="+", type=float, default=[30])
    parser.add_argument("--layered-backend", choices=["torch", "numba"], default="numba")
    parser.add_argument("--profile", action="store_true", help="layered part: cProfile one render per scene")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["512x512", "1920x1080", "3840x2160"])
    parser.add_argument("--torch-sizes", nargs="+", default=["512x512", "1920x1080"],
                        help="sizes at which the torch backend is timed too (numba runs at every size)")
    parser.add_argument("--backend", choices=["auto", "torch", "numba"], default="auto",
                        help="backend of the psnr part")
    parser.add_argument("--K", nargs="+", type=float, default=[10, 30, 50])
    parser.add_argument("--psnr-K", nargs="+", type=float, default=[30, 45, 60])
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="stop repeating a cell once its runs took this long (median of fewer runs; see the runs column)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part in ("speed", "all"):
        part_speed(args)
    if args.part in ("psnr", "all"):
        part_psnr(args)
    if args.part in ("lens", "all"):
        part_lens(args)
    if args.part in ("layered", "all"):
        part_layered(args)


if __name__ == "__main__":
    main()

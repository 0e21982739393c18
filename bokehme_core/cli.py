"""Command line: ``python -m bokehme_core render | demo | download-weights | estimate-disparity``.

The CLI is the only part of ``bokehme_core`` that prints (results and a progress bar on stderr); errors are
reported as one clear line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import pathlib
import sys
import time

__all__ = ["main"]

from .image_io import read_image, write_image

logger = logging.getLogger(__name__)

#: Modules that add subcommands: each has ``register(subparsers)``.
_EXTRA_COMMANDS = ("cli_weights", "cli_depth")


class TextProgress:
    """``progress(done, total)`` callback drawing a one-line bar on stderr (only when it is a terminal, or
    at the end)."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self._last = -1

    def __call__(self, done: int, total: int) -> None:
        total = max(int(total), 1)
        pct = int(100 * done / total)
        if pct == self._last:
            return
        self._last = pct
        if self.stream.isatty() or done >= total:
            bar = "#" * (pct // 4)
            elapsed = time.perf_counter() - self.start
            end = "\n" if done >= total else ""
            self.stream.write(f"\r{self.label} [{bar:<25}] {pct:3d}% {elapsed:5.1f}s{end}")
            self.stream.flush()


def parse_aperture(spec: str, anamorphic: float = 1.0):
    """``circle`` | ``polygon:BLADES[:ROTATION_DEG]`` | path to a grayscale shape image -> Aperture."""
    from . import Aperture

    if spec == "circle":
        return Aperture.circle(anamorphic=anamorphic)
    if spec.startswith("polygon"):
        parts = spec.split(":")
        try:
            blades = int(parts[1]) if len(parts) > 1 else 6
            rotation = math.radians(float(parts[2])) if len(parts) > 2 else math.pi / 2
        except ValueError:
            raise ValueError(f"--aperture {spec!r}: expected polygon:BLADES[:ROTATION_DEG], e.g. polygon:6:90") from None
        if len(parts) > 3:
            raise ValueError(f"--aperture {spec!r}: expected polygon:BLADES[:ROTATION_DEG]")
        return Aperture.polygon(blades, rotation, anamorphic=anamorphic)
    path = pathlib.Path(spec)
    if not path.is_file():
        raise ValueError(f"--aperture {spec!r}: expected circle, polygon:BLADES[:ROTATION_DEG] or an existing image file")
    from .disparity import load_disparity

    shape = load_disparity(path)[0, 0]
    if shape.max() > 1.0 or shape.min() < 0.0:
        raise ValueError(f"aperture image {path.name} must hold values in [0, 1]")
    return Aperture.from_mask(shape, anamorphic=anamorphic)


def prepare_disparity(path, image_size, *, depth_mode: str = "disparity", resize: bool = False,
                      normalize: bool = True, invert: bool = False):
    """Load a disparity (or depth) file and bring it to the library convention (1,1,H,W) in [0,1], 1 = near."""
    import torch.nn.functional as F

    from .disparity import depth_to_disparity, load_disparity, normalize_disparity, repair_nonfinite

    disparity = load_disparity(path)
    if disparity.shape[-2:] != tuple(image_size):
        if not resize:
            raise ValueError(
                f"disparity {pathlib.Path(path).name} is {disparity.shape[-1]}x{disparity.shape[-2]} but the image is "
                f"{image_size[1]}x{image_size[0]} (WxH); pass --resize-disparity to resize it (bilinear)"
            )
        disparity = F.interpolate(disparity, size=tuple(image_size), mode="bilinear", align_corners=False)
    disparity, _ = repair_nonfinite(depth_to_disparity(repair_nonfinite(disparity)[0], depth_mode))
    if normalize:
        return normalize_disparity(disparity, invert=invert)
    if invert:
        disparity = 1.0 - disparity
    lo, hi = float(disparity.min()), float(disparity.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"disparity values span [{lo:g}, {hi:g}]; without normalisation they must lie in [0, 1]")
    return disparity


def _resolve_focus(args, disparity):
    from .focus import focus_from_point

    if args.focus_point is not None:
        x, y = args.focus_point
        return float(focus_from_point(disparity, x, y, normalized=False)[0])
    return args.focus


# --- commands -------------------------------------------------------------------------------------------

def _load_networks(args):
    """(arnet, iunet) for the hybrid renderer, or None when the classical renderer is asked for / implied."""
    from . import paths

    if args.renderer == "classical":
        return None
    if args.arnet or args.iunet:
        if not (args.arnet and args.iunet):
            raise ValueError("pass both --arnet and --iunet (or neither, to use the bundled weights)")
        from .models.checkpoints import load_arnet, load_iunet

        return load_arnet(args.arnet), load_iunet(args.iunet)
    bundled = paths.bundled_weights_dir()
    if (bundled / "arnet.safetensors").is_file() and (bundled / "iunet.safetensors").is_file():
        return None, None  # render_bokehme loads the bundled weights itself
    if args.renderer == "hybrid":
        raise ValueError(
            f"--renderer hybrid needs weights: none bundled in {bundled}; pass --arnet/--iunet or run "
            f"'python -m bokehme_core download-weights'"
        )
    return None


def render_file(args) -> pathlib.Path:
    import torch

    from . import Aperture, render_classical, signed_defocus

    torch.set_grad_enabled(False)
    image = read_image(args.image)
    if args.disparity is None:
        from .cli_depth import estimate_disparity_for_cli

        print("no --disparity given: estimating it with a depth model", file=sys.stderr)
        disparity = estimate_disparity_for_cli(image, model=args.depth_model)
    else:
        disparity = prepare_disparity(args.disparity, image.shape[-2:], depth_mode=args.depth_mode,
                                      resize=args.resize_disparity, invert=args.invert_disparity)
    device = torch.device(args.device)
    image, disparity = image.to(device), disparity.to(device)
    focus = _resolve_focus(args, disparity)
    aperture = parse_aperture(args.aperture, args.anamorphic) if args.aperture else Aperture.circle(anamorphic=args.anamorphic)
    networks = _load_networks(args)
    start = time.perf_counter()
    if networks is None:
        used = "classical"
        defocus = signed_defocus(disparity, args.K, focus)
        result = render_classical(image, defocus, gamma=args.gamma, aperture=aperture, mode=args.mode,
                                  highlight=args.highlight, K=args.K, progress=TextProgress("classical"))
        bokeh = result.bokeh.clamp(0, 1)
    else:
        from . import render_bokehme

        used = "hybrid (classical + ARNet/IUNet)"
        arnet, iunet = networks
        result = render_bokehme(image, disparity, K=args.K, focus=focus, gamma=args.gamma, arnet=arnet, iunet=iunet,
                                highlight=args.highlight, aperture=aperture, classical_mode=args.mode,
                                error_map=args.error_map, progress=TextProgress("bokehme"))
        bokeh = result.bokeh
    out = write_image(bokeh, args.output)
    print(f"{used} render, K={args.K:g}, focus={focus:.4f}, gamma={args.gamma:g}, {args.mode} mode: "
          f"{time.perf_counter() - start:.2f}s -> {out}")
    return out


def demo(args) -> pathlib.Path:
    """Render the bundled example and write a before/after picture."""
    import torch

    from . import paths

    demo_dir = paths.package_root() / "assets" / "demo"
    image_path, disparity_path = demo_dir / "image.png", demo_dir / "disparity.png"
    if not image_path.is_file() or not disparity_path.is_file():
        raise FileNotFoundError(f"the bundled example is missing from {demo_dir}; is the pack checkout complete?")
    ns = argparse.Namespace(
        image=image_path, disparity=disparity_path, K=args.K, focus=args.focus, focus_point=None, gamma=4.0,
        aperture=args.aperture, anamorphic=1.0, mode=args.mode, highlight=False, renderer=args.renderer,
        arnet=None, iunet=None, error_map="predicted", depth_mode="disparity", resize_disparity=False,
        invert_disparity=False, device=args.device, depth_model=None,
        output=pathlib.Path(args.output).with_name(pathlib.Path(args.output).stem + "_bokeh.png"),
    )
    bokeh_path = render_file(ns)
    before, after = read_image(image_path), read_image(bokeh_path)
    gap = torch.ones(1, 3, before.shape[2], 8)
    out = write_image(torch.cat([before, gap, after], dim=3), args.output)
    print(f"before/after -> {out}")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bokehme_core",
        description="BokehMe lens blur: render photo-realistic depth of field from an image and a disparity map.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("render", help="render bokeh for an image and its disparity map")
    r.add_argument("image", type=pathlib.Path, help="all-in-focus image (PNG/JPEG/...)")
    r.add_argument("--disparity", "-d", type=pathlib.Path,
                   help="disparity map, larger = nearer (8/16-bit PNG, float TIFF, EXR, NPY); min-max normalised. "
                        "Omit it to estimate one with a depth model")
    r.add_argument("--depth-mode", choices=("disparity", "metric", "inverted"), default="disparity",
                   help="what the map holds: disparity (default), metric depth (converted as 1/depth) or a "
                        "depth map where larger = farther (inverted linearly)")
    r.add_argument("--invert-disparity", action="store_true", help="flip near and far after normalisation")
    r.add_argument("--resize-disparity", action="store_true", help="resize a disparity map of another size to the image")
    r.add_argument("--K", type=float, default=30.0, help="blur radius in px per unit disparity (default 30)")
    focus = r.add_mutually_exclusive_group()
    focus.add_argument("--focus", type=float, default=0.5, help="in-focus disparity in [0,1] (default 0.5)")
    focus.add_argument("--focus-point", type=float, nargs=2, metavar=("X", "Y"),
                       help="focus on the pixel (X, Y) (median disparity of a 5x5 window)")
    r.add_argument("--gamma", type=float, default=4.0, help="highlight exponent in [1,5] (default 4; 2.2 ~ linear light)")
    r.add_argument("--aperture", default="circle",
                   help="circle | polygon:BLADES[:ROTATION_DEG] (90 = a vertex up) | path to a grayscale shape image")
    r.add_argument("--anamorphic", type=float, default=1.0, help="bokeh width/height ratio (0.5 = tall ovals)")
    r.add_argument("--mode", choices=("exact", "fast"), default="exact",
                   help="classical renderer: exact (official kernel) or fast (cost linear in the blur radius)")
    r.add_argument("--highlight", action="store_true", help="official highlight boost for bright bokeh balls")
    r.add_argument("--renderer", choices=("auto", "classical", "hybrid"), default="auto",
                   help="hybrid = classical + neural (ARNet/IUNet) fusion; auto = hybrid when weights are available "
                        "(bundled or --arnet/--iunet), else classical; the output line says which ran")
    r.add_argument("--arnet", type=pathlib.Path, help="ARNet weights (.safetensors or .pth)")
    r.add_argument("--iunet", type=pathlib.Path, help="IUNet weights (.safetensors or .pth)")
    r.add_argument("--error-map", choices=("predicted", "analytic"), default="predicted",
                   help="fusion weights: ARNet's predicted error map or the analytic one (paper Eq. 5)")
    r.add_argument("--depth-model", help="depth model file or name, used when --disparity is omitted")
    r.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    r.add_argument("-o", "--output", type=pathlib.Path, required=True, help="output image")
    r.set_defaults(func=render_file)

    d = sub.add_parser("demo", help="render the bundled example and write a before/after picture")
    d.add_argument("-o", "--output", type=pathlib.Path, default=pathlib.Path("bokehme_demo.png"))
    d.add_argument("--K", type=float, default=30.0, help="blur strength (default 30)")
    d.add_argument("--focus", type=float, default=0.8, help="in-focus disparity (default 0.8: the near subject)")
    d.add_argument("--aperture", default="circle", help="as for render")
    d.add_argument("--mode", choices=("exact", "fast"), default="exact")
    d.add_argument("--renderer", choices=("auto", "classical", "hybrid"), default="auto")
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=demo)

    for name in _EXTRA_COMMANDS:
        importlib.import_module(f".{name}", __package__).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, RuntimeError, OSError) as e:
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0

"""``python -m bokehme_core render``: render bokeh for an image and its disparity map (or an estimated one)."""

from __future__ import annotations

import argparse
import logging
import math
import pathlib
import sys
import time

from ..image_io import read_image, write_image
from .progress import TextProgress

__all__ = ["register", "render_file", "parse_aperture", "lens_from_args", "LENS_FLAGS"]

logger = logging.getLogger(__name__)


def parse_aperture(spec: str, anamorphic: float = 1.0):
    """``circle`` | ``polygon:BLADES[:ROTATION_DEG]`` | path to a grayscale shape image -> Aperture."""
    from .. import Aperture

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
    from ..disparity import load_disparity

    shape = load_disparity(path)[0, 0]
    if shape.max() > 1.0 or shape.min() < 0.0:
        raise ValueError(f"aperture image {path.name} must hold values in [0, 1]")
    return Aperture.from_mask(shape, anamorphic=anamorphic)


#: lens-character flag -> (Lens option, help); ranges from bokehme_core.lens.LENS_RANGES
LENS_FLAGS = {
    "--cat-eye": ("cat_eye", "cat's-eye bokeh toward the frame's edges (optical vignetting)"),
    "--swirl": ("swirl", "swirly (Petzval) bokeh: the cat's-eye lemons lean and stretch around the centre"),
    "--ring": ("ring", "soap-bubble bokeh: bright rim, centre dimmed to 1 - RING"),
    "--fringe": ("fringe", "colour fringing: red / blue blur radii differ from green by this fraction"),
    "--highlight-gain": ("highlight_gain", "lift lights above --highlight-threshold this many times in linear light "
                         "before blurring (1 = off; 3 with threshold 0.98 matched path-traced lights best)"),
    "--highlight-threshold": ("highlight_threshold", "sRGB level above which --highlight-gain applies"),
    "--focus-range": ("focus_range", "depth band around the focus that stays fully sharp, in disparity units"),
    "--near-scale": ("near_scale", "blur growth in front of the focus, relative to K"),
    "--far-scale": ("far_scale", "blur growth behind the focus, relative to K"),
}


def lens_from_args(args):
    """The lens-character flags -> :class:`bokehme_core.Lens`, or None when every flag is at its default."""
    from ..lens import Lens

    neutral = Lens()  # callers without the flags (the demo command) get the plain aperture
    options = {option: getattr(args, option, getattr(neutral, option)) for option, _ in LENS_FLAGS.values()}
    try:
        lens = Lens(**options)
    except ValueError as exc:  # name the flag, the core names the option and its range
        flag = next((f for f, (option, _) in LENS_FLAGS.items() if str(exc).startswith(option + " ")), None)
        raise ValueError(f"{flag}: {exc}" if flag else str(exc)) from None
    return None if lens.is_neutral else lens


def _resolve_focus(args, disparity):
    from ..focus import focus_from_point

    if args.focus_point is not None:
        x, y = args.focus_point
        return float(focus_from_point(disparity, x, y, normalized=False)[0])
    return args.focus


# --- commands -------------------------------------------------------------------------------------------

def _load_networks(args):
    """(arnet, iunet) for the hybrid renderer, or None when the classical renderer is asked for / implied."""
    from .. import paths

    if args.renderer == "classical":
        return None
    if args.arnet or args.iunet:
        if not (args.arnet and args.iunet):
            raise ValueError("pass both --arnet and --iunet (or neither, to use the bundled weights)")
        from ..weights import load_arnet, load_iunet

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

    from .. import Aperture, render_classical
    from ..defocus import render_inputs
    from ..disparity import load_disparity, prepare_disparity

    torch.set_grad_enabled(False)
    image = read_image(args.image)
    if args.disparity is None:
        from .estimate_disparity import estimate_disparity_for_cli

        print("no --disparity given: estimating it with a depth model", file=sys.stderr)
        disparity = estimate_disparity_for_cli(image, model=args.depth_model)
    else:
        disparity = prepare_disparity(
            load_disparity(args.disparity), mode=args.depth_mode, invert=args.invert_disparity,
            size=tuple(image.shape[-2:]), resize=args.resize_disparity, what=f"disparity {args.disparity.name}",
            option_names={"resize": "pass --resize-disparity to resize it (bilinear)"},
        )
    if args.refine_disparity == "on" or (args.refine_disparity == "auto" and args.disparity is None):
        from ..disparity import refine_disparity

        disparity = refine_disparity(disparity, image)  # predicted depth edges snapped onto the photo's
    device = torch.device(args.device)
    image, disparity = image.to(device), disparity.to(device)
    focus = _resolve_focus(args, disparity)
    aperture = parse_aperture(args.aperture, args.anamorphic) if args.aperture else Aperture.circle(anamorphic=args.anamorphic)
    lens = lens_from_args(args)
    networks = _load_networks(args)
    start = time.perf_counter()
    if networks is None:
        used = "classical"
        recover = not getattr(args, "no_recover_highlights", False)
        boosted, defocus = render_inputs(image, disparity, args.K, focus, highlight=args.highlight, recover=recover,
                                         **({} if lens is None else lens.pre_render))
        result = render_classical(boosted, defocus, gamma=args.gamma, aperture=aperture, mode=args.mode,
                                  progress=TextProgress("classical"), lens=None if lens is None else lens.shape)
        bokeh = result.bokeh.clamp(0, 1)
    else:
        from .. import render_bokehme

        used = "hybrid (classical + ARNet/IUNet)"
        arnet, iunet = networks
        result = render_bokehme(image, disparity, K=args.K, focus=focus, gamma=args.gamma, arnet=arnet, iunet=iunet,
                                highlight=args.highlight, aperture=aperture, classical_mode=args.mode,
                                error_map=args.error_map, progress=TextProgress("bokehme"), lens=lens,
                                recover_highlights=not getattr(args, "no_recover_highlights", False))
        bokeh = result.bokeh
    out = write_image(bokeh, args.output)
    print(f"{used} render, K={args.K:g}, focus={focus:.4f}, gamma={args.gamma:g}, {args.mode} mode: "
          f"{time.perf_counter() - start:.2f}s -> {out}")
    return out


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``render`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    sub = subparsers
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
    r.add_argument("--refine-disparity", choices=("auto", "on", "off"), default="auto",
                   help="snap the map's depth edges onto the image's edges (bokehme_core.refine_disparity): auto "
                        "(default) = only for a map estimated here, on = also for a given map (a predicted one)")
    r.add_argument("--K", type=float, default=30.0, help="blur radius in px per unit disparity (default 30)")
    focus = r.add_mutually_exclusive_group()
    focus.add_argument("--focus", type=float, default=0.5, help="in-focus disparity in [0,1] (default 0.5)")
    focus.add_argument("--focus-point", type=float, nargs=2, metavar=("X", "Y"),
                       help="focus on the pixel (X, Y) (median disparity of a 5x5 window)")
    r.add_argument("--gamma", type=float, default=4.0, help="highlight exponent in [1,5] (default 4; 2.2 ~ linear light)")
    r.add_argument("--aperture", default="circle",
                   help="circle | polygon:BLADES[:ROTATION_DEG] (90 = a vertex up) | path to a grayscale shape image")
    r.add_argument("--anamorphic", type=float, default=1.0, help="bokeh width/height ratio (0.5 = tall ovals)")
    r.add_argument("--mode", choices=("exact", "fast", "layered"), default="layered",
                   help="classical renderer: exact (official kernel), fast (cost linear in the blur radius) or "
                        "layered (occlusion-aware: no halo over sharp subjects; slower)")
    r.add_argument("--highlight", action="store_true", help="official highlight boost for bright bokeh balls")
    r.add_argument("--no-recover-highlights", action="store_true",
                   help="keep clipped lights as they are (default: clipped out-of-focus lights are lifted 2.5x in "
                        "linear light, so they render as bright bokeh balls; --highlight-gain replaces it)")
    from ..lens import LENS_RANGES, Lens

    neutral = Lens()
    lens_group = r.add_argument_group("lens character", "every effect at its default = the plain aperture")
    for flag, (option, text) in LENS_FLAGS.items():
        lo, hi = LENS_RANGES[option]
        default = getattr(neutral, option)
        lens_group.add_argument(flag, dest=option, type=float, default=default, metavar="X",
                                help=f"{text}; {lo:g}..{hi:g} (default {default:g})")
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

    return r

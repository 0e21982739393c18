"""``python -m bokehme_core demo``: render the bundled example and write a before/after picture."""

from __future__ import annotations

import argparse
import pathlib

from ..image_io import read_image, write_image
from .render import render_file

__all__ = ["register", "demo"]


def demo(args) -> pathlib.Path:
    """Render the bundled example and write a before/after picture."""
    import torch

    from .. import paths

    demo_dir = paths.package_root() / "assets" / "demo"
    image_path, disparity_path = demo_dir / "image.png", demo_dir / "disparity.png"
    if not image_path.is_file() or not disparity_path.is_file():
        raise FileNotFoundError(f"the bundled example is missing from {demo_dir}; is the pack checkout complete?")
    ns = argparse.Namespace(
        image=image_path, disparity=disparity_path, K=args.K, focus=args.focus, focus_point=None, gamma=4.0,
        aperture=args.aperture, anamorphic=1.0, mode=args.mode, highlight=False, renderer=args.renderer,
        arnet=None, iunet=None, error_map="predicted", depth_mode="disparity", resize_disparity=False,
        invert_disparity=False, refine_disparity="off", device=args.device, depth_model=None,
        output=pathlib.Path(args.output).with_name(pathlib.Path(args.output).stem + "_bokeh.png"),
    )
    bokeh_path = render_file(ns)
    before, after = read_image(image_path), read_image(bokeh_path)
    gap = torch.ones(1, 3, before.shape[2], 8)
    out = write_image(torch.cat([before, gap, after], dim=3), args.output)
    print(f"before/after -> {out}")
    return out


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to ``subparsers``."""
    sub = subparsers
    d = sub.add_parser("demo", help="render the bundled example and write a before/after picture")
    d.add_argument("-o", "--output", type=pathlib.Path, default=pathlib.Path("bokehme_demo.png"))
    d.add_argument("--K", type=float, default=30.0, help="blur strength (default 30)")
    d.add_argument("--focus", type=float, default=0.8, help="in-focus disparity (default 0.8: the near subject)")
    d.add_argument("--aperture", default="circle", help="as for render")
    d.add_argument("--mode", choices=("exact", "fast", "layered"), default="layered")
    d.add_argument("--renderer", choices=("auto", "classical", "hybrid"), default="auto")
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=demo)

    return d

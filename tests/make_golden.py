"""Golden outputs of the public API and of the main nodes on tiny seeded inputs.

``tests/test_golden.py`` recomputes every case and compares it with ``tests/data/golden.npz`` (max abs
difference <= 1e-6): refactors and new features whose controls are at their neutral values must not change
what users get. Regenerate the file only on purpose, with this script, and say why in the commit:

    .venv/bin/python tests/make_golden.py                       # from this checkout
    .venv/bin/python tests/make_golden.py --root /tmp/base      # from another checkout (e.g. a git worktree)

The cases use only names that are public since 0.1.0 (``bokehme_core.*`` and the node classes), so the same
script runs against older checkouts. Bundled weights are the pack's own ``weights/``.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
GOLDEN = HERE / "data" / "golden.npz"


def _scene(height: int = 40, width: int = 56, seed: int = 0) -> tuple:
    """(image (1,3,H,W) in [0,1] with a few bright spots, disparity (1,1,H,W) in [0,1]: a near square over a
    slanted background)."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, height, width, generator=gen) * 0.8
    image[..., 5:8, 9:12] = 1.0  # highlights
    image[..., 30:32, 40:42] = 0.97
    y = torch.linspace(0, 1, height).view(1, 1, -1, 1)
    disparity = (0.2 + 0.3 * y).expand(1, 1, height, width).clone()
    disparity[..., 12:28, 18:36] = 0.9
    return image, disparity


def _parameters(function) -> set:
    import inspect

    return set(inspect.signature(function).parameters)


def seeded_networks(core) -> tuple:
    """Small seeded random ARNet / IUNet: the goldens test the code, not the bundled weights (which change
    when they are retrained)."""
    torch.manual_seed(0)
    return core.ARNet(16, 2).eval(), core.IUNet(16, 2).eval()


def core_cases(core, **hybrid_options) -> dict:
    """name -> array for the library API (``core`` is the imported ``bokehme_core``; ``hybrid_options`` go to
    every render_bokehme call, e.g. ``sparse=False`` for the official dense computation)."""
    arnet, iunet = seeded_networks(core)
    torch.manual_seed(0)
    out = {}
    image, disparity = _scene()
    defocus = core.signed_defocus(disparity, 12.0, 0.45)
    for name, kwargs in {
        "exact_circle_g4": dict(gamma=4.0, mode="exact"),
        "fast_circle_g4": dict(gamma=4.0, mode="fast"),
        "exact_hex_g22": dict(gamma=2.2, mode="exact", aperture=core.Aperture.polygon(6)),
        "fast_anamorphic_g1": dict(gamma=1.0, mode="fast", aperture=core.Aperture.circle(anamorphic=0.6)),
        "exact_highlight_g4": dict(gamma=4.0, mode="exact", highlight=True, K=12.0),
    }.items():
        result = core.render_classical(image, defocus, **kwargs)
        out[f"classical/{name}/bokeh"] = result.bokeh
        out[f"classical/{name}/dilated"] = result.dilated_defocus
    # controls added after 0.1.0 are passed at their neutral value where the checkout has them
    neutral = {"recover_highlights": False} if "recover_highlights" in _parameters(core.render_bokehme) else {}
    for name, kwargs in {
        "exact_g4": dict(gamma=4.0, classical_mode="exact"),
        "fast_g22_highlight": dict(gamma=2.2, classical_mode="fast", highlight=True),
    }.items():
        result = core.render_bokehme(image, disparity, K=24.0, focus=0.45, arnet=arnet, iunet=iunet, **kwargs,
                                     **neutral, **hybrid_options)
        out[f"hybrid/{name}/bokeh"] = result.bokeh
        out[f"hybrid/{name}/neural"] = result.neural
        out[f"hybrid/{name}/error_map"] = result.error_map
    raw = torch.rand(2, 1, 20, 24, generator=torch.Generator().manual_seed(3)) * 5 + 0.5
    out["disparity/metric_normalized"] = core.normalize_disparity(core.depth_to_disparity(raw, "metric"))
    out["disparity/percentile_batch_stable"] = core.normalize_disparity(raw, low_pct=2, high_pct=98, batch_stable=True)
    return {k: v.detach().to(torch.float32).numpy() for k, v in out.items()}


def node_cases(pack) -> dict:
    """name -> array for the main nodes of the pack (``pack`` is the imported node pack)."""
    from_image = lambda t: t.permute(0, 2, 3, 1).contiguous()  # noqa: E731  (B,C,H,W) -> IMAGE (B,H,W,C)
    image, disparity = _scene(seed=1)
    image_in, disparity_in = from_image(image), from_image(disparity.expand(-1, 3, -1, -1))
    out = {}
    classical_node = pack.nodes.render.BokehMeClassicalRender()
    neutral = {"recover_highlights": False} if "recover_highlights" in _parameters(classical_node.render) else {}
    classical = classical_node.render(
        image_in, disparity_in, 14.0, 0.5, -1.0, 4.0, "polygon", 7, 10.0, 1.0, "fast", False, False, **neutral
    )
    out["node/classical/bokeh"] = classical[0]
    out["node/classical/in_focus"] = classical[3]
    import importlib

    arnet, iunet = seeded_networks(importlib.import_module(pack.__name__ + ".bokehme_core"))  # the pack's own core
    models = pack.nodes.neural.BokehMeModels(arnet, iunet, "seeded", "seeded")
    bokehme = pack.nodes.neural.BokehMe().render(
        models, image_in, disparity_in, 20.0, 0.3, -1.0, 4.0, "circle", 6, 0.0, 1.0, "exact", False, "predicted",
        False, **neutral,
    )
    out["node/bokehme/bokeh"] = bokehme[0]
    out["node/bokehme/error_map"] = bokehme[1]
    converted = pack.nodes.disparity.BokehMeDepthToDisparity()
    fn = getattr(converted, converted.FUNCTION)
    depth = torch.rand(1, 16, 20, generator=torch.Generator().manual_seed(5)) * 3 + 1
    result = fn("metric depth (1/d)", True, 1.0, 99.0, False, False, True, False, depth_mask=depth)
    out["node/depth_to_disparity/mask"] = result[1]
    return {k: v.detach().to(torch.float32).numpy() for k, v in out.items()}


def import_checkout(root: pathlib.Path) -> tuple:
    """(bokehme_core, node pack) imported from the checkout at ``root``."""
    sys.path.insert(0, str(root))
    import bokehme_core

    spec = importlib.util.spec_from_file_location("golden_pack", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["golden_pack"] = pack
    spec.loader.exec_module(pack)
    return bokehme_core, pack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=pathlib.Path, default=HERE.parent, help="checkout to compute the goldens with")
    parser.add_argument("--out", type=pathlib.Path, default=GOLDEN)
    args = parser.parse_args()
    torch.set_num_threads(1)
    core, pack = import_checkout(args.root.resolve())
    arrays = {**core_cases(core), **node_cases(pack)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {len(arrays)} arrays to {args.out} (from {args.root})")


if __name__ == "__main__":
    main()

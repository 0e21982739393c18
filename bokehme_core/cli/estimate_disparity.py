"""``python -m bokehme_core estimate-disparity``: disparity from one image with a depth model, as a 16-bit PNG.

Registered by :func:`bokehme_core.cli.build_parser`; the ``render`` command calls
:func:`estimate_disparity_for_cli` when ``--disparity`` is omitted.

Depth models are looked up in ``bokehme_core.paths.user_cache_dir() / "depth"`` (or given as a path).
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys

__all__ = ["register", "run", "estimate_disparity_for_cli", "find_depth_model", "depth_model_dir", "write_png16"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "depth_anything_v2_vits"
_EXTS = (".pth", ".pt", ".safetensors")


def depth_model_dir() -> pathlib.Path:
    """Where the CLI looks for (and downloads) depth models: ``user_cache_dir() / "depth"``."""
    from ..paths import user_cache_dir

    return user_cache_dir() / "depth"


def _how_to_get_one(folder: pathlib.Path) -> str:
    from ..weights import official_url

    return (
        f"download Depth Anything V2 Small (Apache-2.0, ~99 MB) with "
        f"`python -m bokehme_core estimate-disparity IMAGE -o disp.png --download`, or save "
        f"{official_url(DEFAULT_MODEL)} into {folder} by hand (MiDaS dpt_hybrid_384.pt / dpt_large_384.pt "
        f"work too), or pass a model file (estimate-disparity --model PATH, render --depth-model PATH), or give "
        f"render a disparity map with --disparity"
    )


def find_depth_model(model: str | os.PathLike | None = None, folder: pathlib.Path | None = None) -> pathlib.Path:
    """Resolve ``model`` to a checkpoint file.

    ``model``: None (the first supported file in ``folder``, preferring Depth Anything V2 Small), a path, or a
    file name / official short name (e.g. "depth_anything_v2_vits") inside ``folder``
    (default :func:`depth_model_dir`). Raises FileNotFoundError saying where to put a model or how to download it.
    """
    from ..weights import PROVENANCE

    folder = depth_model_dir() if folder is None else pathlib.Path(folder)
    if model is not None:
        path = pathlib.Path(os.fspath(model)).expanduser()
        if path.is_file():
            return path
        names = [str(model)]
        if str(model) in PROVENANCE and PROVENANCE[str(model)].network == "depth":
            names.insert(0, PROVENANCE[str(model)].filename)
        names += [str(model) + ext for ext in _EXTS]
        for name in names:
            if (folder / name).is_file():
                return folder / name
        raise FileNotFoundError(
            f"depth model {model!r} not found (as a path or in {folder}); {_how_to_get_one(folder)}"
        )
    found = sorted(p for p in folder.glob("*") if p.is_file() and p.suffix.lower() in _EXTS) if folder.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no depth model found in {folder}; {_how_to_get_one(folder)}")
    preferred = [p for p in found if p.name.startswith(DEFAULT_MODEL)]
    return (preferred or found)[0]


def estimate_disparity_for_cli(
    image_tensor,
    model: str | os.PathLike | None = None,
    *,
    processing_res: int | None = None,
    device: str = "cpu",
    progress=None,
):
    """Disparity for one image with a depth model found by :func:`find_depth_model`.

    Args:
        image_tensor: (1,3,H,W) sRGB in [0,1].
        model: None, a path, or a file / official name in :func:`depth_model_dir`.
        processing_res: the network's working resolution (None: the model's official default).
    Returns:
        (1,1,H,W) float32 disparity in [0,1], 1 = near, on the CPU.
    Raises:
        FileNotFoundError (no model; the message lists where to put one and how to download it),
        DepthCheckpointError (a ValueError) for an unusable file.
    """
    from .._checks import check_image
    from ..depth import load_depth_model

    check_image(image_tensor, "image_tensor")
    if image_tensor.shape[0] != 1:
        raise ValueError(f"image_tensor must be one image (1,3,H,W), got batch {image_tensor.shape[0]}")
    path = find_depth_model(model)
    logger.info("estimating disparity with %s", path)
    depth_model = load_depth_model(path, device=device)
    return depth_model.estimate(image_tensor.to(device), processing_res=processing_res, progress=progress).cpu()


def write_png16(disparity, path) -> pathlib.Path:
    """Write (1,1,H,W) or (H,W) values in [0,1] as a 16-bit grayscale PNG (0..65535, rounded)."""
    import numpy as np
    from PIL import Image

    array = disparity.detach().reshape(disparity.shape[-2:]).clamp(0, 1).cpu().numpy()
    path = pathlib.Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"output must be a .png file (16-bit), got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(array * 65535.0).astype(np.uint16)).save(path)
    return path


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``estimate-disparity`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    parser = subparsers.add_parser(
        "estimate-disparity",
        help="estimate a disparity map (16-bit PNG, 1 = near) with Depth Anything V2 or MiDaS DPT",
        description=(
            "Estimate disparity (relative inverse depth, normalised to [0,1], white = near) for IMAGE and write "
            f"it as a 16-bit PNG. Models are looked up in {depth_model_dir()} unless --model is a path. "
            "Supported: Depth Anything V2 vits/vitb/vitl (.pth or .safetensors; Small weights Apache-2.0, "
            "Base/Large CC-BY-NC-4.0: non-commercial) and MiDaS v3 dpt_hybrid_384.pt / dpt_large_384.pt."
        ),
    )
    parser.add_argument("image", type=pathlib.Path, help="input image (any format Pillow reads)")
    parser.add_argument("-o", "--output", type=pathlib.Path, required=True, help="output 16-bit PNG")
    parser.add_argument(
        "--model",
        default=None,
        help="depth model: a path, or a file/official name in the model folder (e.g. depth_anything_v2_vits); "
        "default: the first model found there",
    )
    parser.add_argument("--processing-res", type=int, default=None,
                        help="network working resolution (default: 518 for Depth Anything V2, 384 for DPT)")
    parser.add_argument("--download", action="store_true",
                        help="download the official model first if it is not in the model folder (default: "
                             "Depth Anything V2 Small; --model depth_anything_v2_vitb / _vitl for Base / Large, "
                             "CC-BY-NC-4.0)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.set_defaults(func=run)
    return parser


def _download_if_asked(args) -> None:
    from ..depth import download_depth_model
    from ..weights import PROVENANCE
    from .progress import ByteProgress

    name = args.model or DEFAULT_MODEL
    choices = [k for k, v in PROVENANCE.items() if v.network == "depth"]
    if name not in choices:
        raise ValueError(f"--download needs --model to be one of {', '.join(choices)}, got {name!r}")
    folder = depth_model_dir()
    source = PROVENANCE[name]
    if (folder / source.filename).is_file():
        return
    print(f"downloading {source.display} (weights licence: {source.licence}) into {folder}", file=sys.stderr)
    download_depth_model(name, folder, progress=ByteProgress(source.display))
    print("", file=sys.stderr)
    args.model = name


def run(args: argparse.Namespace) -> int:
    """Estimate disparity for ``args.image`` and write ``args.output`` (16-bit PNG); returns 0."""
    import torch

    from ..image_io import read_image

    if args.download:
        _download_if_asked(args)
    torch.set_grad_enabled(False)
    image = read_image(args.image)
    disparity = estimate_disparity_for_cli(image, args.model, processing_res=args.processing_res, device=args.device)
    path = write_png16(disparity, args.output)
    print(f"wrote {path} ({disparity.shape[-1]} x {disparity.shape[-2]}, 16-bit, white = near)", file=sys.stderr)
    return 0

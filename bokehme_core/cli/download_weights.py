"""``python -m bokehme_core download-weights``: fetch the official ARNet / IUNet checkpoints.

Registered by :func:`bokehme_core.cli.build_parser`.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "run"]


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``download-weights`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    from ..paths import user_cache_dir

    parser = subparsers.add_parser(
        "download-weights",
        help="download the official BokehMe ARNet/IUNet checkpoints",
        description=(
            "Download the official BokehMe checkpoints (github.com/JuewenPeng/BokehMe, checkpoints/) and verify "
            "them (sha256 where known, strict load). The ComfyUI nodes find them in models/bokehme/; the "
            f"default destination here is the user cache folder ({user_cache_dir()})."
        ),
    )
    parser.add_argument("--dest", default=None, help="destination folder (default: the user cache folder)")
    parser.add_argument(
        "--which", nargs="+", choices=("arnet", "iunet"), default=["arnet", "iunet"], help="which networks"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Download each network in ``args.which`` into ``args.dest`` (one progress line per file on stderr).

    Returns 0 when every file was saved; raises :class:`~bokehme_core.weights.WeightsDownloadError`
    (a RuntimeError) listing the failures otherwise, each saying where to put the file by hand.
    """
    from ..weights import WeightsDownloadError, download_weights
    from .progress import ByteProgress
    from ..paths import user_cache_dir

    dest = args.dest or user_cache_dir()
    failures = []
    for name in args.which:
        try:
            path = download_weights(name, dest, progress=ByteProgress(name), networks=("arnet", "iunet"))
        except WeightsDownloadError as exc:
            failures.append(f"{name}: {exc}")
            continue
        print(f"\n{name}: saved {path}", file=sys.stderr)
    if failures:
        raise WeightsDownloadError("\n".join(failures))
    return 0

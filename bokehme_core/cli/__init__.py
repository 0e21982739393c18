"""Command line: ``python -m bokehme_core render | demo | download-weights | estimate-disparity``.

One module per sub-command (:mod:`.render`, :mod:`.demo`, :mod:`.download_weights`,
:mod:`.estimate_disparity`), each with ``register(subparsers)``; this module builds the parser and reports
errors. The CLI is the only part of ``bokehme_core`` that prints (results and progress on stderr); errors are
reported as one clear line and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .progress import ByteProgress, TextProgress

__all__ = ["main", "build_parser", "TextProgress", "ByteProgress"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    from . import demo, download_weights, estimate_disparity, render

    parser = argparse.ArgumentParser(
        prog="python -m bokehme_core",
        description="BokehMe lens blur: render photo-realistic depth of field from an image and a disparity map.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (render, demo, download_weights, estimate_disparity):
        command.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, RuntimeError, OSError) as e:
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0

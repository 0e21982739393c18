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
import time

__all__ = ["main", "build_parser", "TextProgress", "ByteProgress"]

logger = logging.getLogger(__name__)


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


class ByteProgress:
    """``progress(bytes_done, bytes_total)`` callback for downloads: ``label: 12.3 / 99.0 MB`` on stderr,
    redrawn every tenth of the file."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self._last = -1

    def __call__(self, done: int, total: int) -> None:
        if total and done * 10 // total != self._last:
            self._last = done * 10 // total
            self.stream.write(f"\r{self.label}: {done / 1e6:.1f} / {total / 1e6:.1f} MB")
            self.stream.flush()


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

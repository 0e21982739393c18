"""Progress lines of the command line (stderr): :class:`TextProgress` for renders, :class:`ByteProgress` for
downloads. Shared by the sub-command modules (re-exported by :mod:`bokehme_core.cli`)."""

from __future__ import annotations

import sys
import time

__all__ = ["TextProgress", "ByteProgress"]


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

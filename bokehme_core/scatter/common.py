"""Pieces shared by every backend of the classical renderer: progress within a frame.

:class:`Progress` is the ``progress(done, total)`` bookkeeping of one scatter kernel: :meth:`Progress.step` after
each step (a kernel row, a slab, a band of target rows), and :meth:`Progress.work` inside a step, which calls the
callback again with the current ``(done, total)`` (a heartbeat) once :data:`HEARTBEAT_PAIRS` units of work have
accumulated. So a callback that raises (to cancel a render) is seen after a bounded amount of work whatever the
frame size and blur radius; the exception propagates unchanged. Reporting never changes what is computed.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["Progress", "HEARTBEAT_PAIRS"]

#: units of work (source x kernel-row pairs, or source x window-cell pairs) between two heartbeats
HEARTBEAT_PAIRS = 1 << 20


class Progress:
    """``progress(done, total)`` over ``total`` steps, with heartbeats inside a step (see the module docstring).

    ``progress`` may be None (every method is then a no-op)."""

    __slots__ = ("callback", "total", "done", "every", "_pending")

    def __init__(self, progress: Callable[[int, int], None] | None, total: int, every: int | None = None):
        self.callback = progress
        self.total = int(total)
        self.done = 0
        self.every = int(HEARTBEAT_PAIRS if every is None else every)
        self._pending = 0

    def step(self, done: int | None = None) -> None:
        """A step finished (``done``: the new count, default one more)."""
        self.done = self.done + 1 if done is None else int(done)
        self._pending = 0
        if self.callback is not None:
            self.callback(self.done, self.total)

    def heartbeat(self, *_ignored) -> None:
        """Call the callback with the current ``(done, total)`` now (usable as a nested kernel's callback)."""
        if self.callback is not None:
            self.callback(self.done, self.total)

    def work(self, amount: int) -> None:
        """``amount`` units of work done inside the current step: a heartbeat once enough have accumulated."""
        if self.callback is None:
            return
        self._pending += int(amount)
        if self._pending >= self.every:
            self._pending = 0
            self.callback(self.done, self.total)

"""Progress of long operations, as a small protocol with a null implementation.

Producers (the engine, restores, verify) call ``progress.update(done, total, phase)`` as often as
they like; the *reporter* decides how often that reaches a user (``Throttled`` wraps any reporter
and lets through at most one update per interval, plus the last one).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Progress", "NullProgress", "Throttled", "NULL_PROGRESS", "PROGRESS_INTERVAL"]

#: How often the engine reports at most (backup, restore, verify): its reporters may write to a database.
PROGRESS_INTERVAL = 0.1


class Progress(Protocol):
    def update(self, done: int, total: int | None = None, phase: str | None = None) -> None: ...


class NullProgress:
    def update(self, done: int, total: int | None = None, phase: str | None = None) -> None:
        return None


NULL_PROGRESS = NullProgress()


class Throttled:
    """Passes an update through at most every ``interval`` seconds, and always a phase change or 100%."""

    def __init__(self, inner: Progress, interval: float = 0.5, clock=time.monotonic):
        self._inner, self._interval, self._clock = inner, interval, clock
        self._last = float("-inf")
        self._phase: str | None = None
        self._lock = threading.Lock()

    def update(self, done: int, total: int | None = None, phase: str | None = None) -> None:
        now = self._clock()
        with self._lock:
            finished = total is not None and done >= total
            if not finished and phase == self._phase and now - self._last < self._interval:
                return
            self._last, self._phase = now, phase
        self._inner.update(done, total, phase)

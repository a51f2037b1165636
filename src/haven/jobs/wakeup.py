"""Wakes this process's idle job workers when the queue may hold a job for them: a job was enqueued, or a
job ended (its host's or vault's slot is free again). It is a hint only: workers still poll the database,
which is the truth and the only way to see jobs that other processes enqueue."""

from __future__ import annotations

import threading

from sqlalchemy import event

__all__ = ["Wakeup"]


class Wakeup:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        """Read before looking at the queue; ``wait`` with it then misses nothing that came after."""
        with self._cond:
            return self._generation

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def after_commit(self, session) -> None:
        """``notify`` once ``session`` commits (a job is visible to a claim only then); never on rollback."""
        event.listen(session, "after_commit", lambda _s: self.notify(), once=True)

    def wait(self, seen: int, timeout: float) -> bool:
        """Until a ``notify`` after ``seen`` was read, or ``timeout`` seconds; True if notified."""
        with self._cond:
            return self._cond.wait_for(lambda: self._generation != seen, timeout)

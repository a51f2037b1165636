"""Bounded retry with exponential backoff and jitter around any backend."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from .backend import Backend, WrappingBackend

__all__ = ["RetryingBackend"]

T = TypeVar("T")


class RetryingBackend(WrappingBackend):
    """Retries calls that fail with a non-permanent error, at most ``attempts`` times in all.

    Delay before retry *n* is ``min(max_delay, base_delay * 2**n)`` scaled by a random factor in
    [0.5, 1]. Permanent errors (``inner.is_permanent``) and the last transient error propagate.
    Listings are retried as a whole (a listing is never resumed half-way).
    """

    def __init__(self, inner: Backend, attempts: int = 5, base_delay: float = 0.2, max_delay: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep):
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        super().__init__(inner)
        self.attempts, self.base_delay, self.max_delay, self._sleep = attempts, base_delay, max_delay, sleep
        self.retries = 0  # how many retries happened (for tests and job logs)

    def _call(self, fn: Callable[[], T]) -> T:
        for attempt in range(self.attempts):
            try:
                return fn()
            except Exception as exc:
                if self.inner.is_permanent(exc) or attempt == self.attempts - 1:
                    raise
                self.retries += 1
                delay = min(self.max_delay, self.base_delay * (2**attempt))
                self._sleep(delay * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

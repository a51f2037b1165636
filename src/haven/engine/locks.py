"""Vault locks: backups take shared locks, garbage collection an exclusive one.

A lock is a small plaintext JSON object ``locks/<uuid>`` with its kind, holder and expiry time.
Each side writes its own lock *then* lists the others, so of a backup and a GC that start at the
same time at least one sees the other and steps back. A lock whose ``expires`` has passed was
left by a crashed process and is ignored. Holders refresh their lock while they run.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from haven.clock import Clock

from .backend import Backend
from .errors import RepositoryLocked, StorageObjectNotFound
from .format import LOCKS

__all__ = ["Lock", "LockInfo", "DEFAULT_LOCK_TTL"]

DEFAULT_LOCK_TTL = timedelta(minutes=30)


@dataclass(frozen=True)
class LockInfo:
    name: str
    kind: str
    holder: str
    expires: datetime


class Lock:
    """A held lock of ``kind`` ("backup" or "gc"); ``conflicts`` names the kinds it excludes."""

    def __init__(self, backend: Backend, clock: Clock, kind: str, ttl: timedelta = DEFAULT_LOCK_TTL):
        self._backend, self._clock, self.kind, self.ttl = backend, clock, kind, ttl
        self.name = f"{LOCKS}{uuid.uuid4().hex}"
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self._refreshed = clock.now()

    def _write(self) -> None:
        now = self._clock.now()
        doc = {"kind": self.kind, "holder": self.holder, "time": now.isoformat(), "expires": (now + self.ttl).isoformat()}
        self._backend.store(self.name, json.dumps(doc).encode())
        self._refreshed = now

    def acquire(self, conflicts: tuple[str, ...]) -> "Lock":
        """Write the lock, then fail with ``RepositoryLocked`` (removing it) if a live conflicting lock exists."""
        self._write()
        try:
            for other in live_locks(self._backend, self._clock):
                if other.name != self.name and (other.kind in conflicts or other.kind == "unknown"):
                    raise RepositoryLocked(what=f"a {other.kind} ({other.holder})", lock=other.name, expires=other.expires.isoformat())
        except BaseException:
            self.release()
            raise
        return self

    def refresh_if_due(self) -> None:
        if self._clock.now() - self._refreshed > self.ttl / 3:
            self._write()

    def release(self) -> None:
        try:
            self._backend.delete(self.name)
        except Exception:  # an expired lock is harmless; never mask the real outcome
            pass


def live_locks(backend: Backend, clock: Clock) -> list[LockInfo]:
    """Every unexpired lock. A listing or read failure propagates (callers must then stop)."""
    now = clock.now()
    out = []
    for obj in backend.list(LOCKS):
        try:
            doc = json.loads(backend.load(obj.name))
            info = LockInfo(obj.name, doc["kind"], doc.get("holder", "?"), datetime.fromisoformat(doc["expires"]))
        except StorageObjectNotFound:
            continue  # released meanwhile
        except (ValueError, KeyError, TypeError):
            # unreadable lock: treat as live for a full TTL from now, to be safe
            info = LockInfo(obj.name, "unknown", "?", now + DEFAULT_LOCK_TTL)
        if info.expires > now:
            out.append(info)
    return out

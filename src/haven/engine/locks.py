"""Vault locks: backups write under shared locks; garbage collection never excludes them.

A lock is a small plaintext JSON object ``locks/<uuid>``: its kind, holder, ``started`` (when its
holder began), ``expires`` and a ``phase``. A lock whose ``expires`` has passed was left by a
crashed process and is ignored. Holders refresh their lock while they run.

- A ``backup`` lock (protocol 2) is shared: any number of backups run together and next to a GC.
  Its phase is ``write`` while chunks are uploaded and ``commit`` from the moment the backup
  confirms its chunks until its manifest is written. A backup that failed may leave its lock in
  phase ``released`` with the ids of the chunks it stored (``orphans``), for GC to reclaim at once.
- A ``gc`` lock excludes only other GCs (write it, then list: of two GCs starting together at
  least one sees the other and steps back). Its phase is ``mark`` while it reads, ``sweep`` while
  it may delete.
- ``commit`` and ``sweep`` exclude each other, each side writing its phase *then* listing the
  other's: a committing backup waits for a sweep to pause (``wait_while_sweeping``), a GC that sees
  a committing backup leaves ``sweep`` and tries again. See ``gc.py`` for why this is enough.

A lock without ``phase`` was written by an older Haven (exclusive GC, backups that do not announce
their commit); GC sweeps nothing next to such a backup lock, and a backup treats such a GC lock as
sweeping. An unreadable lock, or one of a kind this Haven does not know, counts as a writer (GC
sweeps nothing while it lives); only a ``gc`` lock (which remote agents may not write) makes a
backup wait.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from haven.clock import Clock

from .backend import Backend
from .errors import RepositoryLocked, StorageObjectNotFound
from .format import LOCKS

__all__ = ["Lock", "LockInfo", "DEFAULT_LOCK_TTL", "COMMIT_WAIT", "live_locks"]

DEFAULT_LOCK_TTL = timedelta(minutes=30)
#: How long a committing backup waits for a sweeping GC before giving up (a crashed GC's lock
#: expires within one TTL; a running GC pauses its sweep within a batch).
COMMIT_WAIT = DEFAULT_LOCK_TTL + timedelta(minutes=1)
#: Lock documents name at most this many orphan chunks (a bigger failed backup is reclaimed by the time rule).
MAX_ORPHANS = 20_000
PROTOCOL = 2


@dataclass(frozen=True)
class LockInfo:
    name: str
    kind: str  # "backup", "gc" or "unknown" (unreadable)
    holder: str
    expires: datetime
    started: datetime | None = None
    phase: str | None = None  # None: a lock of an older Haven
    orphans: frozenset[bytes] = field(default_factory=frozenset)

    @property
    def writer(self) -> bool:
        """A backup that may still commit a manifest (or an unreadable lock, counted as one)."""
        return self.kind == "unknown" or (self.kind == "backup" and self.phase != "released")

    @property
    def sweeping(self) -> bool:
        """A GC that may be deleting chunks now (a GC of an older Haven: always)."""
        return self.kind == "gc" and self.phase != "mark"


class Lock:
    """A held lock of ``kind`` ("backup" or "gc")."""

    def __init__(self, backend: Backend, clock: Clock, kind: str, ttl: timedelta = DEFAULT_LOCK_TTL):
        self._backend, self._clock, self.kind, self.ttl = backend, clock, kind, ttl
        self.name = f"{LOCKS}{uuid.uuid4().hex}"
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.started = clock.now()
        self.phase = "write" if kind == "backup" else "mark"
        self._refreshed = self.started
        self._io = threading.Lock()

    def _write(self, extra: dict | None = None) -> None:
        now = self._clock.now()
        doc = {"kind": self.kind, "holder": self.holder, "time": now.isoformat(), "started": self.started.isoformat(),
               "expires": (now + self.ttl).isoformat(), "phase": self.phase, "protocol": PROTOCOL, **(extra or {})}
        with self._io:
            self._backend.store(self.name, json.dumps(doc).encode())
            self._refreshed = now

    def acquire(self, conflicts: tuple[str, ...] = ()) -> "Lock":
        """Write the lock; with ``conflicts``, then fail with ``RepositoryLocked`` (removing it) if a
        live lock of a conflicting kind (or an unreadable one) exists."""
        self._write()
        if not conflicts:
            return self
        try:
            for other in live_locks(self._backend, self._clock):
                if other.name != self.name and (other.kind in conflicts or other.kind == "unknown"):
                    raise RepositoryLocked(what=f"a {other.kind} ({other.holder})", lock=other.name, expires=other.expires.isoformat())
        except BaseException:
            self.release()
            raise
        return self

    def set_phase(self, phase: str) -> None:
        """Announce a new phase (a durable write: whoever lists the locks afterwards sees it)."""
        self.phase = phase
        self._write()

    def refresh_if_due(self) -> None:
        if self._clock.now() - self._refreshed > self.ttl / 3:
            self._write()

    def others(self) -> list[LockInfo]:
        return [x for x in live_locks(self._backend, self._clock) if x.name != self.name]

    def wait_while_sweeping(self, timeout: timedelta = COMMIT_WAIT, sleep=time.sleep) -> None:
        """Block (polling with backoff) until no GC is sweeping; ``RepositoryLocked`` after ``timeout``."""
        deadline = time.monotonic() + timeout.total_seconds()
        delay = 0.02
        while True:
            sweeping = [x for x in self.others() if x.sweeping]
            if not sweeping:
                return
            if time.monotonic() > deadline:
                x = sweeping[0]
                raise RepositoryLocked(what=f"a {x.kind} ({x.holder})", lock=x.name, expires=x.expires.isoformat())
            self.refresh_if_due()
            sleep(delay)
            delay = min(2.0, delay * 2)

    def abandon(self, orphans: set[bytes]) -> None:
        """A failed backup: leave the ids of the chunks it stored for GC, then stop counting as a writer.
        Falls back to removing the lock (the chunks then wait for the time rule)."""
        if not orphans or len(orphans) > MAX_ORPHANS:
            self.release()
            return
        self.phase = "released"
        try:
            self._write({"orphans": sorted(c.hex() for c in orphans)})
        except Exception:  # e.g. a full disk: never mask the backup's own error
            self.release()

    def release(self) -> None:
        try:
            self._backend.delete(self.name)
        except Exception:  # an expired lock is harmless; never mask the real outcome
            pass


def _parse(name: str, doc: dict) -> LockInfo:
    started = doc.get("started")
    orphans = frozenset(bytes.fromhex(h) for h in doc.get("orphans", ()) if isinstance(h, str) and len(h) == 64)
    return LockInfo(name, str(doc["kind"]), str(doc.get("holder", "?")), datetime.fromisoformat(doc["expires"]),
                    datetime.fromisoformat(started) if started else None, doc.get("phase"), orphans)


def live_locks(backend: Backend, clock: Clock) -> list[LockInfo]:
    """Every unexpired lock. A listing or read failure propagates (callers must then stop)."""
    now = clock.now()
    out = []
    for obj in backend.list(LOCKS):
        try:
            info = _parse(obj.name, json.loads(backend.load(obj.name)))
        except StorageObjectNotFound:
            continue  # released meanwhile
        except (ValueError, KeyError, TypeError, AttributeError):
            # unreadable lock: treat as live for a full TTL from now, to be safe
            info = LockInfo(obj.name, "unknown", "?", now + DEFAULT_LOCK_TTL)
        if info.kind not in ("backup", "gc"):
            info = LockInfo(obj.name, "unknown", info.holder, info.expires)
        if info.expires > now:
            out.append(info)
    return out

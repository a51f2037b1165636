"""What a storage capability lets its holder do in one vault: the data plane's rules, in one place.

The server's storage endpoint serves a vault to a host agent only through a ``GrantedBackend``:
the vault's backend wrapped with the ``StorageGrant`` the agent's capability carries. A grant

- ``probe``: may only ask whether ``config`` exists (the agent's connectivity probe);
- ``read`` (a restore job): may read and list inside its vault, nothing else;
- ``backup`` (a backup job): may read and list, and *create* what a backup writes: chunks (storing
  a chunk that is already there answers success and keeps the stored one), the job's own recovery
  point manifest (only while it is absent; sending the very same bytes again is a no-op, so an HTTP
  retry is safe), and its own locks — of kind "backup", expiring at most ``LOCK_MAX_AHEAD``
  from now, stamped with the job id; only a lock stamped with this job may be rewritten (refreshed)
  or deleted.

Nothing else: no overwrite or delete of stored data, ``config``, ``meta/``, ``gc/``,
``quarantine/``, no ``prepare``. Stored data is deleted only by the server's own retention and GC.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from haven.clock import Clock
from haven.errors import Forbidden, UserError

from .backend import Backend, ObjectInfo, WrappingBackend, check_name, check_prefix
from .errors import StorageObjectNotFound
from .format import CONFIG, LOCKS, chunk_id_from_name, point_name

__all__ = ["GrantMode", "StorageGrant", "GrantedBackend", "CapabilityDenied", "LockDocumentRefused", "LOCK_MAX_AHEAD"]

#: the furthest in the future a lock written through a capability may expire
LOCK_MAX_AHEAD = timedelta(hours=2)
#: a failed backup's released lock names the chunks it stored (up to 20,000 ids: ~1.3 MB) so GC can free them at once
_LOCK_MAX_BYTES = 2 << 20
_OBJECT_MAX_BYTES = 256 << 20
#: the one lock kind a backup writes; the engine reads any other kind but "gc" as "unknown", which holds
#: garbage collection off (``engine.locks``), and "gc" excludes GC itself: neither comes through a capability
_AGENT_LOCK_KIND = "backup"


class GrantMode(str, Enum):
    PROBE = "probe"
    READ = "read"
    BACKUP = "backup"


@dataclass(frozen=True)
class StorageGrant:
    """One vault, one mode; for a job: its id and (backup) the item and point it writes."""

    vault_id: str
    mode: GrantMode
    job_id: str | None = None
    item_id: str | None = None
    point_id: str | None = None

    def describe(self) -> str:
        return f"{self.mode.value} of vault {self.vault_id}" + (f" for job {self.job_id}" if self.job_id else "")


class CapabilityDenied(Forbidden):
    code = "UserErrorStorageCapabilityDenied"
    message = "The storage capability ({grant}) may not {action} {name!r}: {reason}."
    recommendation = ("Nothing was changed. A host agent may only read its job's vault and create new chunks, its job's "
                      "own recovery point and its own locks; stored data is deleted only by the server's retention and GC.")


class LockDocumentRefused(UserError):
    code = "UserErrorStorageLockRefused"
    message = "The lock {name!r} was not written: {reason}."
    recommendation = (f"A host agent's lock is a JSON object of kind {_AGENT_LOCK_KIND!r} "
                      f"with an 'expires' time with its zone, at most {int(LOCK_MAX_AHEAD.total_seconds() // 60)} minutes ahead.")


class GrantedBackend(WrappingBackend):
    """``inner`` (one vault's backend) as far as ``grant`` allows; every refusal is typed."""

    def __init__(self, inner: Backend, grant: StorageGrant, clock: Clock):
        super().__init__(inner)
        self.grant, self.clock = grant, clock

    def _deny(self, action: str, name: str, reason: str) -> CapabilityDenied:
        return CapabilityDenied(grant=self.grant.describe(), action=action, name=name, reason=reason)

    # ---- reads ----
    def _readable(self, action: str, name: str) -> str:
        check_name(name)
        if self.grant.mode == GrantMode.PROBE:
            raise self._deny(action, name, "a probe may only ask whether 'config' exists")
        return name

    def load(self, name: str) -> bytes:
        return self.inner.load(self._readable("read", name))

    def exists(self, name: str) -> bool:
        if self.grant.mode == GrantMode.PROBE and check_name(name) == CONFIG:
            return self.inner.exists(name)
        return self.inner.exists(self._readable("read", name))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        if self.grant.mode == GrantMode.PROBE:
            raise self._deny("list", prefix, "a probe may only ask whether 'config' exists")
        return self.inner.list(prefix)

    # ---- writes ----
    def prepare(self) -> None:
        raise self._deny("prepare", "", "vaults are created by the server")

    def store_limit(self, name: str) -> int:
        """The most bytes a write of ``name`` may carry; ``CapabilityDenied`` if it may not be written at all
        (the endpoint asks before it reads a request's body)."""
        return _LOCK_MAX_BYTES if self._write_kind(name) == "lock" else _OBJECT_MAX_BYTES

    def _write_kind(self, name: str) -> str:
        check_name(name)
        if self.grant.mode != GrantMode.BACKUP:
            raise self._deny("write", name, f"a {self.grant.mode.value} capability writes nothing")
        if chunk_id_from_name(name) is not None:
            return "chunk"
        if self.grant.item_id and self.grant.point_id and name == point_name(self.grant.item_id, self.grant.point_id):
            return "point"
        if _lock_name(name):
            return "lock"
        raise self._deny("write", name, "a backup creates only chunks, its own recovery point and its own locks")

    def store(self, name: str, data: bytes) -> None:
        kind = self._write_kind(name)
        if kind == "chunk":
            if not self.inner.exists(name):  # content-addressed: a chunk already stored stays as it is
                self.inner.store(name, data)
        elif kind == "point":
            self._store_point(name, data)
        else:
            self.inner.store(name, self._stamped_lock(name, data))

    def delete(self, name: str) -> None:
        check_name(name)
        if self.grant.mode != GrantMode.BACKUP or not _lock_name(name):
            raise self._deny("delete", name, "stored data is deleted only by the server's retention and GC")
        if self._lock_owner(name) is not None:
            self.inner.delete(name)

    def _store_point(self, name: str, data: bytes) -> None:
        try:
            stored = self.inner.load(name)
        except StorageObjectNotFound:
            self.inner.store(name, data)
            return
        if stored != data:  # the same bytes again (a retried request) change nothing
            raise self._deny("overwrite", name, "the recovery point is already stored")

    def _lock_owner(self, name: str) -> str | None:
        """The job stamped in the stored lock ``name`` (None if there is none); another job's lock: refused."""
        try:
            doc = json.loads(self.inner.load(name))
        except StorageObjectNotFound:
            return None
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or doc.get("job") != self.grant.job_id:
            raise self._deny("change", name, "the lock was not written by this job")
        return self.grant.job_id

    def _stamped_lock(self, name: str, data: bytes) -> bytes:
        def refuse(reason: str) -> LockDocumentRefused:
            return LockDocumentRefused(name=name, reason=reason)

        if len(data) > _LOCK_MAX_BYTES:
            raise refuse(f"a lock document is at most {_LOCK_MAX_BYTES} bytes")
        try:
            doc = json.loads(data)
        except ValueError:
            raise refuse("it is not JSON") from None
        if not isinstance(doc, dict):
            raise refuse("it is not a JSON object")
        kind = doc.get("kind")
        if not isinstance(kind, str) or not kind:
            raise refuse("its 'kind' is missing")
        if kind != _AGENT_LOCK_KIND or doc.get("exclusive"):
            raise self._deny("write", name, f"a {kind[:32]!r}{' exclusive' if doc.get('exclusive') else ''} lock is not a backup's")
        try:
            expires = datetime.fromisoformat(str(doc.get("expires")))
        except ValueError:
            raise refuse("its 'expires' is not an ISO 8601 time") from None
        if expires.tzinfo is None:
            raise refuse("its 'expires' has no time zone")
        if expires > self.clock.now() + LOCK_MAX_AHEAD:
            raise self._deny("write", name, f"a lock may expire at most {LOCK_MAX_AHEAD} ahead, not at {expires.isoformat()}")
        self._lock_owner(name)  # a refresh rewrites only this job's own lock
        return json.dumps({**doc, "job": self.grant.job_id}).encode()


def _lock_name(name: str) -> bool:
    return name.startswith(LOCKS) and name.count("/") == 1

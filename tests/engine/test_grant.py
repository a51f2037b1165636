"""GrantedBackend: what each kind of storage capability may do in its vault, checked directly."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from haven.clock import FakeClock
from haven.engine import LocalBackend
from haven.engine.errors import InvalidObjectName
from haven.engine.grant import CapabilityDenied, GrantedBackend, GrantMode, LockDocumentRefused, StorageGrant

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
CHUNK = "chunks/ab/" + "ab" * 32


@pytest.fixture
def vault(tmp_path):
    b = LocalBackend(tmp_path / "v")
    b.prepare()
    for name, data in (("config", b"cfg"), ("meta/vault", b"m"), (CHUNK, b"sealed"), ("points/vm1/old", b"p"), ("gc/pending", b"g")):
        b.store(name, data)
    return b


def granted(vault, mode, job="job-1"):
    return GrantedBackend(vault, StorageGrant("v1", mode, job, "vm1", "p2"), FakeClock(NOW))


def lock(kind="backup", ahead=timedelta(minutes=30), **extra):
    return json.dumps({"kind": kind, "holder": "h", "expires": (NOW + ahead).isoformat(), **extra}).encode()


def test_a_probe_may_only_ask_whether_config_exists(vault):
    g = granted(vault, GrantMode.PROBE)
    assert g.exists("config")
    for call in (lambda: g.load("config"), lambda: g.exists(CHUNK), lambda: list(g.list("")), lambda: g.store(CHUNK, b"x"),
                 lambda: g.delete("config"), g.prepare):
        with pytest.raises(CapabilityDenied):
            call()


def test_a_restore_job_reads_and_writes_nothing(vault):
    g = granted(vault, GrantMode.READ)
    assert g.load("config") == b"cfg" and {o.name for o in g.list("points/")} == {"points/vm1/old"}
    for name in (CHUNK, "chunks/cd/" + "cd" * 32, "points/vm1/p2", "locks/l1", "config"):
        with pytest.raises(CapabilityDenied):
            g.store(name, lock())
        with pytest.raises(CapabilityDenied):
            g.delete(name)
    assert vault.load(CHUNK) == b"sealed"


def test_a_backup_job_creates_only_and_never_overwrites_or_deletes(vault):
    g = granted(vault, GrantMode.BACKUP)
    g.store(CHUNK, b"garbage")  # an existing chunk: success, and the stored one stays
    assert vault.load(CHUNK) == b"sealed"
    g.store("chunks/cd/" + "cd" * 32, b"new")
    assert vault.load("chunks/cd/" + "cd" * 32) == b"new"
    g.store("points/vm1/p2", b"manifest")
    g.store("points/vm1/p2", b"manifest")  # a retried request: the same bytes, no change
    with pytest.raises(CapabilityDenied):
        g.store("points/vm1/p2", b"other manifest")
    for name in ("config", "meta/vault", "gc/pending", "quarantine/x", "points/vm1/old", "points/vm2/p2", "points/vm1/p3",
                 "chunks/ab/not-a-chunk"):
        with pytest.raises(CapabilityDenied):
            g.store(name, b"x")
        with pytest.raises(CapabilityDenied):
            g.delete(name)
    with pytest.raises(CapabilityDenied):
        g.prepare()
    with pytest.raises(InvalidObjectName):
        g.store("../config", b"x")
    assert vault.load("config") == b"cfg" and vault.load("points/vm1/old") == b"p" and vault.load("points/vm1/p2") == b"manifest"


def test_a_backup_job_writes_only_its_own_bounded_shared_locks(vault):
    g = granted(vault, GrantMode.BACKUP)
    g.store("locks/l1", lock(extra_field="kept"))
    stored = json.loads(vault.load("locks/l1"))
    assert stored["job"] == "job-1" and stored["extra_field"] == "kept" and stored["kind"] == "backup"
    g.store("locks/l1", lock(ahead=timedelta(minutes=40)))  # its own refresh
    # "restore" is not a kind the engine knows: it would read as "unknown" and hold every GC off
    for doc in (lock("gc"), lock(exclusive=True), lock("unknown"), lock("restore"), lock(ahead=timedelta(days=365 * 70)),
                lock(ahead=timedelta(hours=2, minutes=1))):
        with pytest.raises(CapabilityDenied):
            g.store("locks/l2", doc)
    for doc in (b"not json", b"[]", json.dumps({"kind": "backup", "expires": "2026-11-02T09:10:00"}).encode(),
                json.dumps({"expires": NOW.isoformat()}).encode(), json.dumps({"kind": "backup"}).encode()):
        with pytest.raises(LockDocumentRefused):
            g.store("locks/l2", doc)
    assert not vault.exists("locks/l2")
    # another job's lock (or the server's GC lock) can be neither refreshed nor removed
    other = granted(vault, GrantMode.BACKUP, job="job-2")
    with pytest.raises(CapabilityDenied):
        other.store("locks/l1", lock())
    with pytest.raises(CapabilityDenied):
        other.delete("locks/l1")
    vault.store("locks/server-gc", json.dumps({"kind": "gc", "expires": (NOW + timedelta(minutes=5)).isoformat()}).encode())
    with pytest.raises(CapabilityDenied):
        g.delete("locks/server-gc")
    g.delete("locks/l1")
    assert not vault.exists("locks/l1") and vault.exists("locks/server-gc")
    g.delete("locks/l1")  # already gone: not an error

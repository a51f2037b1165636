"""GRS vaults: copy what a backup stored to the paired region's storage.

The secondary copy of a vault lives at ``{paired region's storage_url}/{vault_id}`` and is the same
self-describing vault format (same data key, same ids): a restore can open it directly when the
primary region is gone. After each backup only objects the secondary does not hold yet are copied,
chunks first, the vault's description and ``config`` next, recovery-point manifests last, so that a
point appears in the secondary region only once every chunk it references is there. Every copy is
read back and compared (BLAKE3) before the next step.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import blake3

from haven.errors import Transient

__all__ = ["Replication", "ReplicationSummary", "ReplicationVerifyFailed"]

log = logging.getLogger(__name__)

#: Objects that belong to one copy only: locks, GC bookkeeping, quarantined chunks.
_LOCAL_ONLY = ("locks/", "gc/", "quarantine/")
_WORKERS = 8


class ReplicationVerifyFailed(Transient):
    code = "StorageErrorReplicationVerifyFailed"
    message = "The copy of {name} in the secondary region {region!r} does not match the primary copy."
    recommendation = "Replication runs again after the next backup; if this repeats, check the secondary region's storage."


@dataclass
class ReplicationSummary:
    vault_id: str
    secondary_url: str
    copied: int = 0
    copied_bytes: int = 0
    skipped: int = 0
    verified: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class Replication:
    def __init__(self, core):
        self.core = core
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def after_backup(self, vault_id: str, item_id: str, point_id: str) -> ReplicationSummary | None:
        """Called after a backup of a vault was recorded; GRS vaults replicate here."""
        from haven.db.models import Vault

        with self.core.db.session() as s:
            vault = s.get(Vault, vault_id)
            if vault is None or vault.redundancy != "GRS":
                return None
            s.expunge(vault)
        return self.sync(vault)

    def secondary_url(self, vault) -> str | None:
        return self.core.restore.secondary_url(vault)

    def sync(self, vault) -> ReplicationSummary | None:
        """Copy every object of the vault that the secondary region lacks; returns what was done."""
        url = self.secondary_url(vault)
        if url is None:
            return None
        with self._guard:
            lock = self._locks.setdefault(vault.id, threading.Lock())
        with lock:
            src = self.core.storage.backend(vault.storage_url)
            dst = self.core.storage.backend(url)
            dst.prepare()
            summary = ReplicationSummary(vault.id, url)
            have = {o.name: o.size for o in dst.list("")}
            wanted = {o.name: o.size for o in src.list("") if not o.name.startswith(_LOCAL_ONLY) and ".tmp-" not in o.name}
            region = self.core.settings.region(vault.region)
            region_name = region.paired_region if region else "?"

            def missing(name: str) -> bool:
                return have.get(name) != wanted[name]

            chunks = sorted(n for n in wanted if n.startswith("chunks/") and missing(n))
            meta = sorted(n for n in wanted if n.startswith("meta/") or n == "config")
            points = sorted(n for n in wanted if n.startswith("points/") and missing(n))
            others = sorted(n for n in wanted if not n.startswith(("chunks/", "meta/", "points/")) and n != "config" and missing(n))
            summary.skipped = len(wanted) - len(chunks) - len(points) - len(others) - len(meta)

            def copy(name: str) -> None:
                data = src.load(name)
                if name in have:  # config and the description may change (key rotation); compare content
                    try:
                        if dst.load(name) == data:
                            summary.skipped += 1
                            return
                    except Exception:  # noqa: BLE001 - copy it again
                        pass
                dst.store(name, data)
                back = dst.load(name)
                if blake3.blake3(back).digest() != blake3.blake3(data).digest():
                    raise ReplicationVerifyFailed(name=name, region=region_name)
                summary.copied += 1
                summary.copied_bytes += len(data)
                summary.verified += 1

            with ThreadPoolExecutor(_WORKERS, thread_name_prefix="haven-grs") as pool:
                for batch in (chunks + others, [n for n in meta if n != "config"], [n for n in meta if n == "config"], points):
                    list(pool.map(copy, batch))
            log.info("replicated vault %s to %s: %s", vault.id, url, summary)
            return summary

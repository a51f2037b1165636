"""Runs each policy's schedule inside ``haven serve``.

Every tick, for each protected item: the schedule's slots since the item's last slot are computed in
the policy's time zone. Only the newest due slot is enqueued — after downtime, at most one missed
slot per item is made up — and the item's ``last_slot`` moves to it with a conditional UPDATE in the
same transaction as the job, so a slot never runs twice, even with several servers on one database.
Skipped slots raise a "missed backup window" alert. The tick also applies retention to the items with
something due (``services/retention_due.py``), purges
soft-deleted data whose time is up, and raises alerts for items without a recent good backup. At most
once an hour it also deletes job and alert history older than ``job_history_days`` / ``alert_history_days``
(``jobs/history.py``).

Garbage collection is not part of every tick: a vault is collected when its own schedule says so
(``gc_interval_hours`` after its last run, or ``gc_delay_minutes`` after deletions or a failed
backup asked for it). GC runs next to backups (``engine/gc.py``), so it never makes one fail, and in
``haven serve`` on a thread of its own, so a long GC never delays enqueuing a due backup.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from haven.db.models import Policy, ProtectedItem, Vault
from haven.domain.enums import ProtectionState
from haven.domain.schedule import Schedule
from haven.errors import HavenError
from haven.jobs.history import prune_history

__all__ = ["Scheduler", "PRUNE_INTERVAL"]

#: history is pruned at most this often
PRUNE_INTERVAL = timedelta(hours=1)

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, core, interval: float = 30.0):
        self.core, self.interval = core, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gc_thread: threading.Thread | None = None
        self._gc_backoff: dict[str, tuple[datetime, float]] = {}  # vault -> (next try, last wait in s)
        self._pruned_at: datetime | None = None

    def start(self) -> None:
        """The schedule's thread, and GC's own: a GC that takes minutes never holds up a due backup."""
        self._thread = threading.Thread(target=self._loop, args=(self.housekeeping, "scheduler tick"), daemon=True,
                                        name="scheduler")
        self._gc_thread = threading.Thread(target=self._loop, args=(self._collect_garbage, "garbage collection"), daemon=True,
                                           name="scheduler-gc")
        self._thread.start()
        self._gc_thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in (self._thread, self._gc_thread):
            if thread:
                thread.join(10)

    def _loop(self, work, what: str) -> None:
        while not self._stop.wait(self.interval):
            try:
                work()
            except Exception:
                log.exception("%s failed", what)

    def tick(self) -> dict:
        """Everything once, GC included (``haven serve`` runs GC on its own thread instead)."""
        done = self.housekeeping()
        done["collected"] = self._collect_garbage()
        return done

    def housekeeping(self) -> dict:
        """A tick without GC: due backups, retention of the items with something due, purges, alerts, history."""
        enqueued = self.enqueue_due_backups()
        expired: list[str] = []
        for item_id in self.core.lifecycle.items_due_for_retention():
            expired += self.core.lifecycle.apply_retention(item_id)
        purged = self.core.lifecycle.purge_expired_soft_deletes()
        overdue = self.core.alerts.check_overdue_items()
        pruned = self.prune_history()
        return {"enqueued": enqueued, "expired": expired, "purged": purged, "overdue": overdue, "pruned": pruned}

    def prune_history(self) -> dict[str, int] | None:
        """Old job and alert history, at most once per ``PRUNE_INTERVAL``; None when not due yet."""
        now = self.core.clock.now()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_INTERVAL:
            return None
        self._pruned_at = now
        done = prune_history(self.core, now)
        if done.jobs or done.alerts:
            log.info("pruned history: %d job(s), %d alert(s)", done.jobs, done.alerts)
        return {"jobs": done.jobs, "alerts": done.alerts}

    def gc_due_vaults(self) -> list[str]:
        """Vaults whose GC is due: never run, the interval passed, or requested and the delay passed."""
        settings, now = self.core.settings, self.core.clock.now()
        last = now - timedelta(hours=settings.gc_interval_hours)
        asked = now - timedelta(minutes=settings.gc_delay_minutes)
        with self.core.db.session() as s:
            return list(s.scalars(select(Vault.id).where(or_(
                Vault.gc_last_at.is_(None), Vault.gc_last_at <= last, Vault.gc_requested_at <= asked))))

    def _collect_garbage(self) -> dict[str, int]:
        """GC the vaults whose GC is due. One that fails (another GC runs, storage trouble) stays due
        and is tried again after a backoff (one tick, doubling up to ``gc_delay_minutes``)."""
        deleted: dict[str, int] = {}
        now = self.core.clock.now()
        for vault_id in self.gc_due_vaults():
            retry_at, wait = self._gc_backoff.get(vault_id, (now, 0.0))
            if now < retry_at:
                continue
            try:
                deleted[vault_id] = self.core.lifecycle.collect_garbage(vault_id).chunks_deleted
                self._gc_backoff.pop(vault_id, None)
            except HavenError as e:
                wait = min(max(self.interval, 2 * wait), 60 * self.core.settings.gc_delay_minutes)
                self._gc_backoff[vault_id] = (now + timedelta(seconds=wait), wait)
                log.info("GC of vault %s did not run (next try in %.0f s): %s", vault_id, wait, e)
        return deleted

    # ---- schedules ----
    def enqueue_due_backups(self) -> list[str]:
        now = self.core.clock.now()
        enqueued: list[str] = []
        with self.core.db.session() as s:
            rows = s.execute(
                select(ProtectedItem.id, Policy.schedule, ProtectedItem.last_slot, ProtectedItem.created_at)
                .join(Policy, ProtectedItem.policy_id == Policy.id)
                .where(ProtectedItem.state == ProtectionState.PROTECTED.value)
            ).all()
        for item_id, schedule, last_slot, created_at in rows:
            slots = list(Schedule.from_dict(schedule).slots_between(last_slot or created_at, now))
            if not slots:
                continue
            job_id = self._enqueue_slot(item_id, last_slot, slots[-1], missed=slots[:-1])
            if job_id:
                enqueued.append(job_id)
        return enqueued

    def _enqueue_slot(self, item_id: str, last_slot: datetime | None, slot: datetime, missed: list[datetime]) -> str | None:
        with self.core.db.session() as s:
            claim = update(ProtectedItem).where(ProtectedItem.id == item_id)
            claim = claim.where(ProtectedItem.last_slot == last_slot) if last_slot else claim.where(ProtectedItem.last_slot.is_(None))
            if s.execute(claim.values(last_slot=slot)).rowcount != 1:
                return None  # another scheduler took this slot
            item = s.get(ProtectedItem, item_id)
            vault = s.get(Vault, item.vault_id)
            try:
                job = self.core.protection.enqueue_scheduled_backup(s, vault, item, slot)
            except HavenError as e:  # e.g. the previous backup still runs: this slot is missed
                self.core.alerts.raise_alert(s, vault, "BackupWindowMissed", "Warning",
                                             f"The scheduled backup of {item.vm.name} at {slot.isoformat()} did not start: {e.text}",
                                             f"missed:{item_id}:{slot.isoformat()}", item_id=item.id)
                return None
        if missed:
            with self.core.db.session() as s:
                item = s.get(ProtectedItem, item_id)
                vault = s.get(Vault, item.vault_id)
                self.core.alerts.raise_alert(
                    s, vault, "BackupWindowMissed", "Warning",
                    f"{len(missed)} scheduled backup(s) of {item.vm.name} were missed while the server was down "
                    f"(first {missed[0].isoformat()}); the latest slot {slot.isoformat()} runs now.",
                    f"missed:{item_id}:{missed[0].isoformat()}", item_id=item.id)
        return job["id"]

"""``GET /metrics`` for Prometheus: time since the last good backup per item, job counts and durations,
bytes stored per vault. Values are read from the metadata store at scrape time (a custom collector),
so every server process reports the same numbers. Needs a token with a role on every subscription."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from haven.api.deps import caller, core
from haven.db.models import Job, ProtectedItem, RecoveryPoint, Vault, VirtualMachine
from haven.domain.enums import ProtectionState, Role

__all__ = ["router", "HavenCollector"]

router = APIRouter(include_in_schema=False)


class HavenCollector:
    def __init__(self, app_core):
        self.core = app_core

    def collect(self):
        now = self.core.clock.now()
        since = GaugeMetricFamily("haven_seconds_since_last_good_backup", "Seconds since the item's last successful backup",
                                  labels=["vault", "vm"])
        jobs = CounterMetricFamily("haven_jobs", "Jobs by type and status", labels=["type", "status"])
        durations = CounterMetricFamily("haven_job_duration_seconds", "Total run time of finished jobs by type", labels=["type"])
        stored = GaugeMetricFamily("haven_vault_stored_bytes", "Bytes stored by the vault's recovery points", labels=["vault"])
        with self.core.db.session() as s:
            rows = s.execute(select(Vault.name, VirtualMachine.name, ProtectedItem.last_success_time, ProtectedItem.created_at)
                             .join(Vault, ProtectedItem.vault_id == Vault.id).join(VirtualMachine, ProtectedItem.vm_id == VirtualMachine.id)
                             .where(ProtectedItem.state == ProtectionState.PROTECTED.value))
            for vault, vm, last, created in rows:
                since.add_metric([vault, vm], (now - (last or created)).total_seconds())
            for jtype, status, count in s.execute(select(Job.type, Job.status, func.count()).group_by(Job.type, Job.status)):
                jobs.add_metric([jtype, status], count)
            totals: dict[str, float] = {}
            for jtype, started, ended in s.execute(select(Job.type, Job.started_at, Job.ended_at).where(Job.ended_at.is_not(None), Job.started_at.is_not(None))):
                totals[jtype] = totals.get(jtype, 0.0) + (ended - started).total_seconds()
            for jtype, total in totals.items():
                durations.add_metric([jtype], total)
            for vault, total in s.execute(select(Vault.name, func.coalesce(func.sum(RecoveryPoint.stored_bytes), 0))
                                          .join(RecoveryPoint, RecoveryPoint.vault_id == Vault.id, isouter=True).group_by(Vault.name)):
                stored.add_metric([vault], float(total))
        yield from (since, jobs, durations, stored)


@router.get("/metrics")
def metrics(app=Depends(core), who=Depends(caller)) -> Response:
    who.require_global(Role.READER)
    registry = CollectorRegistry()
    registry.register(HavenCollector(app))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
